"""The Results page (AppTest): a real tiny grid's table and curves equal the library's, opening a row's
runs as A / B (and landing on Embeddings), missing and stale records noted, records whose run
directories are gone, and bad grid files / results folders as one error."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.experiments import epoch_band, open_results
from stdcl.experiment.grid import load_grid
from stdcl.experiment.records import read_records
from stdcl.experiment.runner import RunOptions, run_grid
from stdcl.experiment.table import build_table, to_rows
from tests.support.app import arr, chart, open_app, point_env, rerun

TINY = ['"data.source={num_samples: 120}"', "data.window=16", "train.batch_size=8", "data.num_workers=0",
        "stdcl.loss.num_pos=2", "stdcl.loss.num_neg=8", "stdcl.head.dim=32", "train.log_every=4",
        "train.epochs=2", "train.tensorboard=false"]
OTHER, RECORDS_ONLY = "another grid file…", "a results folder only"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 2 x 2 grid (baseline / STD-CL x seeds 1, 2) run to the end; records in RESULTS."""
    d = tmp_path_factory.mktemp("results-grid")
    p = d / "tiny.yaml"
    p.write_text(f"name: tiny\nbase:\n  config: synthetic\n  encoder: hcn\n  overrides: [{', '.join(TINY)}]\n"
                 "axes:\n  stdcl: [off, on]\n  seed: [1, 2]\n")
    g = load_grid(p)
    outcomes = run_grid(g, d / "runs", d / "results", RunOptions(workers=2), report=lambda s: None,
                        show_progress=False)
    assert all(o.ok for o in outcomes)
    return g, d


@pytest.fixture
def env(tmp_path, monkeypatch):
    return point_env(monkeypatch, {"runs": tmp_path / "runs", "cache": tmp_path / "cache"}, umap_warm_up=False)


def open_grid(grid_file: Path | None, results: Path | None):
    """The Results page on ``grid_file`` (None: a results folder only) and ``results`` (None: the default)."""
    at = open_app("results")
    at.selectbox(key="results_grid").set_value(OTHER if grid_file is not None else RECORDS_ONLY).run()
    if grid_file is not None:
        at.text_input(key="results_grid_path").input(str(grid_file)).run()
    if results is not None:
        at.text_input(key="results_folder").input(str(results)).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def shown(flat: dict) -> dict:
    """A ``to_rows`` row as the page shows it: fractions in % rounded to 2 places, counts as they are."""
    return {k: (round(100 * v, 2) if isinstance(v, float) else v) for k, v in flat.items()}


def assert_table_equal(df, expected: list[dict], keys: list[str]) -> None:
    assert len(df) == len(expected)
    for i, want in enumerate(shown(r) for r in expected):
        for k, v in want.items():
            if k in keys:
                continue
            got = df[k].iloc[i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                assert got is None or (isinstance(got, float) and math.isnan(got)), (k, got)
            else:
                assert got == pytest.approx(v, abs=1e-9), (k, got, v)


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_table_and_curves_equal_the_library_table(grid, env):
    g, d = grid
    at = open_grid(g.path, d / "results")
    table = build_table(g, read_records(d / "results"))
    expected = to_rows(table)
    (frame,) = at.dataframe
    df = frame.value
    assert list(df["row"]) == ["all"]
    assert_table_equal(df, expected, [])
    assert df["gain_final_n"].iloc[0] == 2 and df["stdcl_final_n"].iloc[0] == 2
    assert not any(c.startswith("Not finished yet") or c.startswith("Left out") for c in captions(at))
    assert [b.proto.label for b in at.get("download_button")] == ["Download table.md", "Download table.csv"]

    fig, _ = chart(at, "results_curves")
    lines = {t["name"]: t for t in fig["data"] if t.get("name")}
    assert set(lines) == {"baseline", "STD-CL"} and len(fig["data"]) == 4  # a mean line and a band per arm
    for arm, name in (("off", "baseline"), ("on", "STD-CL")):
        ep, mean, _, n = epoch_band(table.rows[0].curves[arm])
        assert list(arr(lines[name]["x"])) == list(ep) == [1, 2] and list(n) == [2, 2]
        assert np.allclose(arr(lines[name]["y"]), 100 * mean)


def test_row_and_seed_open_the_std_cl_run_as_a_and_its_baseline_as_b(grid, env):
    g, d = grid
    at = open_grid(g.path, d / "results")
    assert at.selectbox(key="results_row").options == ["all"]
    assert at.selectbox(key="results_seed").options == ["1", "2"]
    at.selectbox(key="results_row").set_value("all")
    at.selectbox(key="results_seed").set_value("2").run()
    assert not at.info  # both run directories exist: no notice
    assert not at.button(key="results_open").disabled
    at.button(key="results_open").click().run()
    assert not at.exception, at.exception
    a, b = at.session_state["model_a"], at.session_state["model_b"]
    extra = at.session_state["extra_models"]
    assert Path(extra[a]) == d / "runs" / "stdcl-on_seed-2" and Path(extra[b]) == d / "runs" / "stdcl-off_seed-2"
    assert a == "results (tiny): stdcl-on_seed-2" and b == "results (tiny): stdcl-off_seed-2"
    assert [t.value for t in at.title] == ["Embeddings: spatial and temporal spaces, linked"]  # switched page
    assert not at.error, [e.value for e in at.error]


def test_missing_and_stale_records_are_noted(grid, env, tmp_path):
    g, d = grid
    kept = tmp_path / "results"
    shutil.copytree(d / "results", kept)
    (kept / "records" / "stdcl-on_seed-2.json").unlink()  # not run yet
    stale = kept / "records" / "stdcl-off_seed-1.json"  # recorded with another config
    stale.write_text(json.dumps(json.loads(stale.read_text()) | {"config_digest": "0123456789abcdef"}))
    at = open_grid(g.path, kept)
    table = build_table(g, read_records(kept))
    assert table.missing == ["stdcl-off_seed-1", "stdcl-on_seed-2"] and len(table.skipped) == 1
    assert_table_equal(at.dataframe[0].value, to_rows(table), [])
    df = at.dataframe[0].value
    assert (df["baseline_final_n"].iloc[0], df["stdcl_final_n"].iloc[0], df["gain_final_n"].iloc[0]) == (1, 1, 0)
    caps = captions(at)
    assert any(c.startswith("Not finished yet: 2 run(s): stdcl-off_seed-1, stdcl-on_seed-2") for c in caps), caps
    assert any(c.startswith("Left out: stdcl-off_seed-1: recorded with another config") for c in caps), caps


@pytest.mark.parametrize("with_grid", [True, False], ids=["grid-file", "records-only"])
def test_deleted_run_directories_disable_opening_with_a_notice(grid, env, tmp_path, with_grid):
    g, d = grid
    kept = tmp_path / "kept"
    shutil.copytree(d / "results", kept)
    for rec in kept.glob("records/*.json"):  # the records point at run directories that no longer exist
        rec.write_text(rec.read_text().replace(str(d / "runs"), str(tmp_path / "deleted")))
    at = open_grid(g.path if with_grid else None, kept)
    assert_table_equal(at.dataframe[0].value, to_rows(build_table(g, read_records(kept))), [])
    assert at.button(key="results_open").disabled
    grid_arg = str(g.path.resolve()) if with_grid else "GRID"
    (notice,) = at.info
    assert "deleted; only the record is kept" in notice.value
    assert f"`stdcl experiment run {grid_arg} --only stdcl-on_seed-1 stdcl-off_seed-1`" in notice.value
    at.selectbox(key="results_seed").set_value("2").run()
    assert "--only stdcl-on_seed-2 stdcl-off_seed-2" in at.info[0].value and at.button(key="results_open").disabled
    assert "model_a" not in at.session_state
    assert open_results(None, kept).table.rows[0].gain_final.n == 2  # the table survives without its runs


@pytest.mark.parametrize("case", ["bad-yaml", "no-such-grid", "no-such-results-folder", "file-as-folder",
                                  "folder-as-grid"])
def test_bad_grid_file_or_folder_is_one_error_naming_it(env, tmp_path, case):
    at = open_app("results")
    if case in ("no-such-results-folder", "file-as-folder"):
        named, words = tmp_path / "nowhere", "no such results folder"
        if case == "file-as-folder":
            named.write_text("x")
            words = "is a file; give a results folder"
        at.selectbox(key="results_grid").set_value(RECORDS_ONLY).run()
        at.text_input(key="results_folder").input(str(named)).run()
    else:
        named = tmp_path / {"bad-yaml": "broken.yaml", "no-such-grid": "missing.yaml", "folder-as-grid": "d"}[case]
        words = {"bad-yaml": "axes must be a mapping", "no-such-grid": "no such grid file",
                 "folder-as-grid": "is a folder; give a grid file"}[case]
        if case == "folder-as-grid":
            named.mkdir()
        if case == "bad-yaml":
            named.write_text("name: x\naxes: [1, 2]\n")
        at.selectbox(key="results_grid").set_value(OTHER).run()
        at.text_input(key="results_grid_path").input(str(named)).run()
    assert not at.exception
    (err,) = at.error
    assert str(named) in err.value and words in err.value and "\n" not in err.value.strip()
    assert not at.dataframe and not at.get("plotly_chart")
    rerun(at)
