"""Results records: the small JSON a finished run leaves, worth committing.

A record holds only metrics and settings (never data): the cell, the resolved config's digest,
the per-epoch validation/test metrics, the final-epoch and best-on-validation test top-1, the
training time, device and package version. Tables are built from records alone, so they survive
deleting the run directories.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from stdcl.errors import DataError
from stdcl.io import read_json, write_json_atomic

FORMAT = "stdcl-experiment-record"
VERSION = 1
#: Epoch-record keys copied into a results record.
EPOCH_KEYS = ("epoch", "global_step", "lr", "train_loss", "train_acc", "val_top1", "val_top5", "test_top1",
              "test_top5", "train_time_s")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return None
    return float(v)


def _stdcl_enabled(run_dir: Path) -> bool | None:
    from stdcl.train.config import get_dotted, read_yaml
    from stdcl.errors import StdclError

    try:
        return bool(get_dotted(read_yaml(run_dir / "config.yaml"), "stdcl.enabled"))
    except StdclError:
        return None


def build_record(run_dir: str | os.PathLike, grid: str, cell: str, values: dict[str, Any], digest: str,
                 train_args: list[str]) -> dict[str, Any]:
    """The results record of a finished run directory (``summary.json`` present)."""
    from stdcl import __version__
    from stdcl.train.run_dir import SUMMARY, read_metrics

    d = Path(run_dir)
    try:
        summary = json.loads((d / SUMMARY).read_text())
        info = json.loads((d / "run.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(d, f"not a finished run ({e})") from None
    if not isinstance(summary, dict) or not isinstance(info, dict):
        raise DataError(d / SUMMARY, "summary.json / run.json must be JSON objects")
    epochs: dict[int, dict[str, Any]] = {}
    for rec in read_metrics(d):
        if rec.get("kind") != "epoch" or not isinstance(rec.get("epoch"), int):
            continue
        epochs[rec["epoch"]] = {k: (rec["epoch"] if k == "epoch" else _num(rec.get(k))) for k in EPOCH_KEYS}
    series = [epochs[k] for k in sorted(epochs)]
    final = summary.get("final") or {}
    best = summary.get("best") or {}
    has_val = any(e.get("val_top1") is not None for e in series)
    started = info.get("started")
    elapsed = None
    if isinstance(started, str):
        try:
            elapsed = (d / SUMMARY).stat().st_mtime - time.mktime(time.strptime(started, "%Y-%m-%dT%H:%M:%S"))
        except (ValueError, OSError):
            elapsed = None
    return {
        "format": FORMAT, "version": VERSION, "grid": grid, "cell": cell,
        "values": {k: v for k, v in values.items()}, "config_digest": digest, "train_args": list(train_args),
        "run_dir": str(d.resolve()), "stdcl_enabled": _stdcl_enabled(d),
        "encoder": info.get("encoder"), "dataset": info.get("dataset"), "protocol": info.get("protocol"),
        "train_items": info.get("train_items"), "val_samples": info.get("val_samples"),
        "test_samples": info.get("test_samples"), "steps": summary.get("global_step"),
        "epochs": series,
        "final_test_top1": _num(final.get("test_top1")), "final_test_top5": _num(final.get("test_top5")),
        "final_val_top1": _num(final.get("val_top1")),
        "best_val": ({"epoch": best.get("epoch"), "val_top1": _num(best.get("val_top1")),
                      "test_top1": _num(best.get("test_top1"))} if has_val and best.get("epoch") else None),
        "train_s": sum(e["train_time_s"] or 0.0 for e in series) or None,
        "elapsed_s": elapsed, "device": info.get("device"), "world_size": info.get("world_size"),
        "torch": info.get("torch"), "stdcl_version": __version__, "run_version": info.get("version"),
        "host": info.get("host"),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


RECORDS = "records"


def record_path(results: str | os.PathLike, cell: str) -> Path:
    """Where a cell's record lives in a grid's results folder: ``RESULTS/records/<cell>.json``."""
    return Path(results) / RECORDS / f"{cell}.json"


def write_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    write_json_atomic(path, record)


def _check(path: Path, rec: Any) -> dict[str, Any]:
    def bad(msg: str) -> DataError:
        return DataError(path, msg)

    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise bad(f"not a results record (format must be {FORMAT!r})")
    if rec.get("version") != VERSION:
        raise bad(f"record version {rec.get('version')!r} is not {VERSION}")
    for key in ("grid", "cell", "config_digest"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            raise bad(f"field {key!r} must be a non-empty string")
    if rec.get("stdcl_enabled") is not None and not isinstance(rec["stdcl_enabled"], bool):
        raise bad("field 'stdcl_enabled' must be true, false or null")
    if not isinstance(rec.get("values"), dict):
        raise bad("field 'values' must be a mapping of axis -> value")
    if not isinstance(rec.get("epochs"), list):
        raise bad("field 'epochs' must be a list")
    for i, e in enumerate(rec["epochs"]):
        if not isinstance(e, dict) or not isinstance(e.get("epoch"), int) or isinstance(e.get("epoch"), bool):
            raise bad(f"epochs[{i}] must be a mapping with an integer 'epoch'")
        for k in EPOCH_KEYS[1:]:
            v = e.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise bad(f"epochs[{i}].{k} must be a number or null")
    for key in ("final_test_top1", "final_test_top5", "final_val_top1", "train_s", "elapsed_s"):
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise bad(f"field {key!r} must be a number or null")
    for key in ("final_test_top1", "final_test_top5", "final_val_top1"):
        v = rec.get(key)
        if v is not None and not 0.0 <= v <= 1.0:
            raise bad(f"field {key!r} = {v} is not an accuracy in [0, 1]")
    bv = rec.get("best_val")
    if bv is not None:
        if not isinstance(bv, dict) or any(
                bv.get(k) is not None and (isinstance(bv[k], bool) or not isinstance(bv[k], (int, float)))
                for k in ("epoch", "val_top1", "test_top1")):
            raise bad("field 'best_val' must be null or {epoch, val_top1, test_top1} numbers")
    return rec


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A results record, every field checked (one-line :class:`DataError` naming the file)."""
    p = Path(path)
    rec = read_json(p, "results record")
    return _check(p, rec)


def read_records(results: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a grid's results folder (``RESULTS/records/*.json``, sorted by name)."""
    d = Path(results) / RECORDS
    if not d.is_dir():
        return []
    return [read_record(p) for p in sorted(d.glob("*.json"))]
