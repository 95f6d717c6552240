"""README's result tables are what ``stdcl experiment table`` makes of the committed records: every
``<!-- table: NAME -->`` block equals the Markdown table of ``experiments/NAME.yaml`` over
``results/NAME/records`` (a new record without the README regenerated, or a hand edit, fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stdcl.experiment.grid import load_grid
from stdcl.experiment.records import read_records
from stdcl.experiment.table import build_table, to_markdown

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- table: ([\w.-]+) -->\n(.*?)<!-- end table -->", re.S)
BLOCKS = dict(BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")))


def test_the_readme_has_a_table_for_every_grid_with_records() -> None:
    with_records = {p.parent.name for p in (ROOT / "results").glob("*/records") if any(p.glob("*.json"))}
    assert with_records and with_records == set(BLOCKS)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_readme_table_equals_the_table_of_the_committed_records(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STDCL_DATA", str(tmp_path))  # grids name their data through it; a table reads no data
    grid = load_grid(ROOT / "experiments" / f"{name}.yaml")
    table = build_table(grid, read_records(ROOT / "results" / name))
    assert BLOCKS[name] == to_markdown(table), (
        f"README's {name} table is stale: `stdcl experiment table experiments/{name}.yaml --results results/{name}`")
