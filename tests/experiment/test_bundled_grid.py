"""experiments/bundled-demo.yaml reproduces the recipe of every bundled demo checkpoint: each cell's resolved
config equals the config the checkpoint recorded, apart from where and how it ran (paths, progress, probes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stdcl.experiment.grid import load_grid
from stdcl.weights import BUNDLED_DIR

GRID = Path(__file__).resolve().parents[2] / "experiments" / "bundled-demo.yaml"
#: How or where a run executed, not what it computed (the probes only watch training).
IGNORED = ("data.path", "out", "device", "config_file", "train.progress", "train.tensorboard",
           "train.checkpoint_every_steps", "probe")


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("source", "transform", "test_transform", "options"):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _kept(cfg: dict) -> dict:
    return {k: v for k, v in _leaves(cfg).items() if not any(k == i or k.startswith(i + ".") for i in IGNORED)}


@pytest.mark.parametrize("cell", [c.name for c in load_grid(GRID).cells])
def test_each_cell_is_the_recipe_of_its_bundled_checkpoint(cell):
    c = load_grid(GRID).cell(cell)
    cfg = c.resolved_config()
    kind = "stdcl" if cfg["stdcl"]["enabled"] else "baseline"
    meta = json.loads((BUNDLED_DIR / f"synthetic_{c.encoder}_{kind}.json").read_text())
    assert c.name.endswith("stdcl-on" if kind == "stdcl" else "stdcl-off")
    want, got = _kept(meta["config"]), _kept(cfg)
    assert {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v} == {}
    assert set(want) <= set(got)  # keys added since the checkpoint was trained take their defaults
