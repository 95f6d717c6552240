"""4-stream fusion per seed: the joint, bone, joint-motion and bone-motion runs of a cell fused with
the existing ensemble code (weights tuned on the validation split), cached beside the records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdcl.errors import StdclError
from stdcl.experiment.grid import Grid, format_value
from stdcl.experiment.status import read_json
from stdcl.experiment.table import PAIR_AXIS, SEED_AXIS, Paired, Summary, paired_difference
from stdcl.io import write_json_atomic

STREAMS = ("joint", "bone", "joint_motion", "bone_motion")


@dataclass
class FusionRow:
    key: dict[str, str]
    baseline: Summary
    stdcl: Summary
    gain: Paired
    notes: list[str]


def fusion_table(grid: Grid, records: list[dict[str, Any]], cache: Path) -> list[FusionRow]:
    """Fused test top-1 per (cell without modality / seed / stdcl), arm and seed; needs the run directories
    (scores are computed once and cached in ``cache``, so the table survives deleting them later)."""
    from stdcl.train.ensemble import ensemble

    if "modality" not in grid.axes:
        return []
    cells = {c.name: c for c in grid.cells}
    groups: dict[tuple, dict[str, dict[str, dict[str, str]]]] = {}
    for rec in records:
        cell = cells.get(rec["cell"])
        if cell is None:
            continue
        key = cell.group(drop=(SEED_AXIS, PAIR_AXIS, "modality"))
        arm = format_value(cell.values.get(PAIR_AXIS, cell.stdcl or "on"))
        seed = format_value(cell.values.get(SEED_AXIS, "-"))
        groups.setdefault(key, {}).setdefault(arm, {}).setdefault(seed, {})[str(cell.values["modality"])] = \
            rec.get("run_dir") or ""
    out = []
    for key, arms in groups.items():
        fused: dict[str, dict[str, float]] = {"on": {}, "off": {}}
        notes = []
        for arm, seeds in arms.items():
            for seed, streams in seeds.items():
                if set(streams) != set(STREAMS):
                    notes.append(f"{arm} seed {seed}: streams {sorted(streams)} (all four needed)")
                    continue
                tag = "_".join([f"{k}-{v}" for k, v in key] + [f"stdcl-{arm}", f"seed-{seed}"]) or "all"
                path = cache / f"{tag}.json"
                res = read_json(path)
                if not isinstance(res, dict) or not isinstance(res.get("fused_test_top1"), float):
                    try:
                        res = ensemble([streams[s] for s in STREAMS], which="best")
                    except StdclError as e:
                        notes.append(f"{arm} seed {seed}: {e}")
                        continue
                    write_json_atomic(path, res)
                fused.setdefault(arm, {})[seed] = float(res["fused_test_top1"])
        out.append(FusionRow(dict(key), Summary.of(list(fused["off"].values())),
                             Summary.of(list(fused["on"].values())), paired_difference(fused["on"], fused["off"]),
                             notes))
    return out
