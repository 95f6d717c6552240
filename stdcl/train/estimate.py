"""How long a training run will take, and what it will do, before it starts.

The Fine-tune page and ``stdcl experiment plan`` show an expected time. It starts from a cost
table measured once (each encoder's registered ``cpu_cost``, :class:`stdcl.encoders.registry.EncoderSpec`) and is then calibrated on the machine
at hand: every finished job appends ``(encoder, device, table estimate, measured seconds)`` to
``estimates.jsonl`` in the job folder, and the next estimate is the table's times the median
measured / estimated ratio of the latest such jobs (same encoder and device when there are
any, else any encoder on that device). The ratio absorbs what the table cannot know: this
machine's speed and load, its thread count, data loading and evaluation.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdcl.encoders.registry import spec as encoder_spec
from stdcl.errors import ConfigError

#: Speed-up of a CUDA GPU over that one-thread CPU figure, measured: a CTR-GCN Fine-tune job through the
#: job manager on an NVIDIA H200 (``stdcl bench gpu``, results/gpu/2026-12-04-h200-full.json) ran its
#: training and evaluation 26x faster than the table's one-core figure (start-up apart). The encoders'
#: bare train steps alone run 20x (HCN) to 120x (ProtoGCN) faster at batch 16; a job also loads data,
#: evaluates, snapshots probes and saves, which a GPU speeds up less. Each finished job calibrates the next.
GPU_SPEEDUP = 26.0
#: Rough cost of evaluating one sample relative to training on it (forward only, larger batches).
EVAL_COST = 0.3
#: Rough fixed start-up (imports, data set, model build, first save), seconds.
STARTUP_S = {"cpu": 10.0, "cuda": 20.0}
#: The calibration file in a job folder, and how many of its latest matching lines count.
HISTORY = "estimates.jsonl"
HISTORY_USED = 10
#: A calibration ratio outside this range is clipped (a job suspended for hours says nothing).
FACTOR_RANGE = (0.2, 20.0)


def expected_seconds(encoder: str, num_train_samples: int, epochs: float, device: str = "cpu",
                     window: int = 32, num_eval_samples: int = 0, joints_persons: int = 50) -> float:
    """The cost table's wall-clock estimate of a training run (uncalibrated).

    ``start-up + epochs x (train samples + EVAL_COST x eval samples) x seconds per sample``,
    the per-sample cost scaled linearly with ``window`` and with joints x persons (the table's
    input is NTU's 25 x 2 = 50) and divided by :data:`GPU_SPEEDUP` on ``cuda``.
    ``num_eval_samples``: validation + test samples evaluated each epoch.
    """
    encoder_spec(encoder)  # a one-line error for an unknown encoder
    if device not in STARTUP_S:
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if num_train_samples < 0 or num_eval_samples < 0 or epochs < 0 or window <= 0 or joints_persons <= 0:
        raise ConfigError("expected_seconds needs non-negative sample counts and epochs, a positive window and "
                          "a positive joints x persons")
    return STARTUP_S[device] + epochs * (num_train_samples + EVAL_COST * num_eval_samples) * \
        _per_sample(encoder, device, window, joints_persons)


def _per_sample(encoder: str, device: str, window: int, joints_persons: int) -> float:
    s = encoder_spec(encoder).cpu_cost * window / 32 * joints_persons / 50
    return s / GPU_SPEEDUP if device == "cuda" else s


# -- calibration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """An expected run time and, in one sentence, how it was derived."""

    encoder: str
    device: str
    seconds: float
    table_seconds: float  # the cost table's figure before calibration
    factor: float  # calibration ratio applied (1.0 when none)
    calibrated_by: int  # finished jobs the ratio comes from (0: none)
    basis: str


def _history_lines(folder: Path) -> list[dict[str, Any]]:
    """The valid lines of a calibration file (ill-formed lines are skipped: it is a cache)."""
    try:
        text = (folder / HISTORY).read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("encoder"), str) or \
                rec.get("device") not in STARTUP_S:
            continue
        t, m = rec.get("table_s"), rec.get("measured_s")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e9 for v in (t, m)):
            out.append(rec)
    return out


def record_outcome(folder: str | os.PathLike, encoder: str, device: str, table_s: float, measured_s: float) -> None:
    """Append one finished job's table estimate and measured wall time to ``folder/estimates.jsonl``."""
    if not (table_s > 0 and measured_s > 0):
        return
    line = json.dumps({"encoder": encoder, "device": device, "table_s": round(float(table_s), 3),
                       "measured_s": round(float(measured_s), 3), "when": round(time.time())})
    with open(Path(folder) / HISTORY, "a") as f:  # one short write: lines never interleave
        f.write(line + "\n")


def calibration(folder: str | os.PathLike | None, encoder: str, device: str) -> tuple[float, int, str]:
    """``(factor, jobs, scope)``: the median measured / table ratio of the latest finished jobs of
    ``encoder`` on ``device`` (scope = the encoder), else of any encoder on it ("any encoder"),
    else ``(1.0, 0, "")``."""
    lines = _history_lines(Path(folder)) if folder is not None else []
    on_device = [r for r in lines if r["device"] == device]
    same = [r for r in on_device if r["encoder"] == encoder]
    use, scope = (same, encoder) if same else (on_device, "any encoder")
    use = use[-HISTORY_USED:]
    if not use:
        return 1.0, 0, ""
    ratio = statistics.median(r["measured_s"] / r["table_s"] for r in use)
    return min(max(ratio, FACTOR_RANGE[0]), FACTOR_RANGE[1]), len(use), scope


def estimate(encoder: str, num_train_samples: int, epochs: float, device: str = "cpu", window: int = 32,
             num_eval_samples: int = 0, joints_persons: int = 50,
             history: str | os.PathLike | None = None) -> Estimate:
    """:func:`expected_seconds`, calibrated by the finished jobs recorded in ``history`` (a job folder)."""
    table = expected_seconds(encoder, num_train_samples, epochs, device, window, num_eval_samples, joints_persons)
    per = _per_sample(encoder, device, window, joints_persons)
    basis = (f"cost table: {encoder} {1000 * per:.1f} ms per training sample at window {window} and "
             f"{joints_persons} joints x persons (one core of the development machine"
             + (f", / {GPU_SPEEDUP:g} measured GPU speed-up" if device == "cuda" else "")
             + f"), evaluation at {EVAL_COST:g}x, {STARTUP_S[device]:g} s start-up")
    factor, n, scope = calibration(history, encoder, device)
    if n:
        basis += (f"; x {factor:.2f}, the median measured / estimated time of the last {n} finished "
                  f"{scope} job{'s' if n > 1 else ''} on this machine's {device}")
    else:
        basis += "; not yet calibrated on this machine (each finished job corrects the next estimates)"
    return Estimate(encoder, device, table * factor, table, factor, n, basis)


# -- planning a run (what the Fine-tune page shows before Start) ----------------------------------
def data_sizes(data: dict[str, Any]) -> dict[str, Any]:
    """Training items, validation and test samples, classes and layout of a config's ``data`` section,
    counted as the training engine counts them."""
    from stdcl.train.data import open_split, validation_samples
    from stdcl.train.splits import training_items

    cfg = {"data": data}
    base = open_split(cfg, data["train_split"], True)
    val = validation_samples(cfg, base)
    test = open_split(cfg, data["test_split"], False, repeat=1)
    joints, persons = base.source.joints_persons()  # the synthetic set is sized without being rendered
    return {"train_items": len(training_items(base, val)), "val": len(val), "test": len(test),
            "classes": int(base.num_classes), "layout": base.layout.name, "joints": joints, "persons": persons}


def planned_steps(cfg: dict[str, Any], train_items: int) -> tuple[int, float]:
    """(optimiser steps, epochs they span) of a config, as the engine's sampler batches ``train_items``."""
    from stdcl.train.splits import EpochSampler

    batch = int(cfg["train"]["batch_size"])
    per_epoch = EpochSampler(train_items, batch, drop_last=True).batches_per_epoch()
    if per_epoch < 1:
        raise ConfigError(f"the training split has {train_items} items, fewer than one batch of {batch}")
    steps = int(cfg["train"]["epochs"]) * per_epoch
    if cfg["train"].get("max_steps"):
        steps = min(steps, int(cfg["train"]["max_steps"]))
    return steps, steps / per_epoch


__all__ = ["EVAL_COST", "Estimate", "GPU_SPEEDUP", "HISTORY", "STARTUP_S",
           "calibration", "data_sizes", "estimate", "expected_seconds", "planned_steps", "record_outcome"]
