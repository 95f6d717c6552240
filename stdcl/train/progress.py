"""A run's progress as its files tell it (``metrics.jsonl``, ``run.json``), for any process
watching it: steps, epochs, latest losses and accuracies, throughput and time left."""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stdcl.train.run_dir import read_metrics

#: Keys of a metrics record that are not loss terms.
_NOT_LOSS = {"kind", "epoch", "global_step", "lr", "acc", "samples_per_s", "time_s", "contrastive_factor"}


@dataclass
class Progress:
    """What a run's ``metrics.jsonl`` and ``run.json`` say so far (``None``: not known yet)."""

    step: int | None = None  # latest global step logged
    epoch: int | None = None  # 1-based epoch of the latest record
    total_steps: int | None = None  # planned optimiser steps (epochs x steps per epoch, or max_steps)
    steps_per_epoch: int | None = None
    total_epochs: int | None = None  # epochs the planned steps span
    fraction: float | None = None  # step / total_steps, in [0, 1]
    losses: dict[str, float] = field(default_factory=dict)  # latest loss parts: loss, ce, spatial, temporal
    train_acc: float | None = None  # training accuracy of the latest logging window
    lr: float | None = None
    val_top1: float | None = None  # latest evaluated
    test_top1: float | None = None
    samples_per_s: float | None = None  # training throughput of the latest record
    remaining_s: float | None = None  # rough: remaining steps x the mean logged seconds per step
    train_items: int | None = None
    contrastive: bool = False  # the run logs contrastive terms (STD-CL on)
    contrastive_start_step: int | None = None  # first logged step whose contrastive term counted
    records: list[dict[str, Any]] = field(default_factory=list)  # every metrics record, for plotting


def read_progress(run_dir: str | os.PathLike) -> Progress:
    """Summarise a (running or ended) run directory's metrics log and ``run.json``."""
    records = read_metrics(run_dir)  # skips a line being written
    p = Progress(records=records)
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((Path(run_dir) / "run.json").read_text())
        p.total_steps, p.steps_per_epoch = info.get("total_steps"), info.get("steps_per_epoch")
        p.train_items = info.get("train_items")
    if p.total_steps and p.steps_per_epoch:
        p.total_epochs = math.ceil(p.total_steps / p.steps_per_epoch)
    for rec in records:  # later records overwrite earlier ones
        if rec.get("global_step") is not None:
            p.step = int(rec["global_step"])
        if rec.get("epoch") is not None:
            p.epoch = int(rec["epoch"])
        if rec.get("lr") is not None:
            p.lr = float(rec["lr"])
        for split in ("val", "test"):
            if rec.get(f"{split}_top1") is not None:
                setattr(p, f"{split}_top1", float(rec[f"{split}_top1"]))
        kind = rec.get("kind")
        if kind in ("step", "epoch"):
            prefix = "" if kind == "step" else "train_"
            vals = {k[len(prefix):]: v for k, v in rec.items() if k.startswith(prefix)}
            p.losses = {k: float(v) for k, v in vals.items() if k not in _NOT_LOSS and not k.startswith("valid_frac_")
                        and isinstance(v, (int, float)) and not isinstance(v, bool)}
            p.train_acc = vals.get("acc", p.train_acc)
            p.samples_per_s = vals.get("samples_per_s", p.samples_per_s)
        if kind == "step" and any(k.startswith("valid_frac_") for k in rec):
            p.contrastive = True
            if p.contrastive_start_step is None and _term_counts(rec):
                p.contrastive_start_step = p.step
    if p.total_steps and p.step is not None:
        p.fraction = min(p.step / p.total_steps, 1.0)
        steps = [r for r in records if r.get("kind") == "step"]
        if steps and p.step < p.total_steps:
            per_step = sum(float(r.get("time_s", 0.0)) for r in steps) / max(int(steps[-1]["global_step"]), 1)
            p.remaining_s = per_step * (p.total_steps - p.step)
        elif p.step >= p.total_steps:
            p.remaining_s = 0.0
    return p


def _term_counts(rec: dict[str, Any]) -> bool:
    """Whether a step record's contrastive term added to the loss: some anchor had its P positives and
    K negatives in the banks (``valid_frac_*`` > 0) and the schedule's factor was above 0."""
    fracs = [v for k, v in rec.items() if k.startswith("valid_frac_") and isinstance(v, (int, float))]
    factor = rec.get("contrastive_factor", 1.0)
    return any(f > 0 for f in fracs) and isinstance(factor, (int, float)) and factor > 0
