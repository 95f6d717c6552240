"""Saving and restoring a run: ``best`` / ``last`` encoder checkpoints and the resume state.

``state.json`` + ``state-<step>.safetensors`` (:mod:`stdcl.train.state`) hold the whole model
(encoder, head, banks, loss RNG), the optimiser and GradScaler states, the schedule position,
every RNG (torch CPU/CUDA, numpy legacy, python ``random``, the training dataset's numpy
Generator, per rank), the sampler position (epoch and batch within it; the permutation is a
function of seed + epoch), the running log averages and the best validation score. On CPU
with ``num_workers=0`` a resumed run ends with weights identical to an uninterrupted one,
wherever the previous session was killed. (With workers, each resumed epoch re-derives the
workers' seeds, so augmentations after a mid-epoch resume differ.)

A save writes ``best`` (when it improved), then ``last``, then the state, which commits them.
On resume the state is loaded into the model, optimiser, scaler and RNGs, and ``last`` and
``best`` are checked against it: a ``last`` from a cut-short save is written again from the
state, and a ``best`` that is not the one the state records (cut short, damaged) is dropped
with its record, so the next evaluation writes a new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stdcl.checkpoint import meta_path, read_meta, read_tensors, save_encoder
from stdcl.errors import ConfigError, DataError
from stdcl.head.checkpoint import head_path, save_head
from stdcl.head.model import STDCLModel
from stdcl.train import distributed as D
from stdcl.train.data import TrainData
from stdcl.train.faults import fault_point
from stdcl.train.metering import Window
from stdcl.train.optim import Schedule
from stdcl.train.run_dir import BEST, LAST, STATE_JSON
from stdcl.train.splits import EpochSampler
from stdcl.train.state import load_state, rng_state, save_state, set_rng_state

log = logging.getLogger("stdcl.train")


def no_best() -> dict[str, Any]:
    """The record of a run without a best checkpoint yet."""
    return {"val_top1": None, "epoch": None, "global_step": None}


@dataclass
class Position:
    """Where a run stands: the counters, the best validation record and the latest evaluation."""

    global_step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    batch_in_epoch: int = 0  # batches of `epoch` already done
    best: dict[str, Any] = field(default_factory=no_best)
    last_eval: dict[str, Any] = field(default_factory=dict)

    def note_evaluation(self, evals: dict[str, Any]) -> bool:
        """Keep ``evals`` (if any) as the latest evaluation of the epoch in progress; True, with ``best``
        updated, when its validation top-1 beats the best so far."""
        self.last_eval = evals or self.last_eval
        improved = evals.get("val_top1") is not None and (self.best["val_top1"] is None
                                                            or evals["val_top1"] > self.best["val_top1"])
        if improved:
            self.best = {"val_top1": evals["val_top1"], "test_top1": evals.get("test_top1"),
                         "epoch": self.epoch + 1, "global_step": self.global_step}
        return improved


class Checkpointer:
    """Writes and reads back everything a run needs to continue (rank 0 writes; every rank restores)."""

    def __init__(self, run_dir: Path, cfg: dict[str, Any], data: TrainData, model: STDCLModel,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, schedule: Schedule,
                 sampler: EpochSampler, dist: D.DistInfo, epochs: int, steps_per_epoch: int):
        self.run_dir, self.cfg, self.data, self.model = run_dir, cfg, data, model
        self.optimizer, self.scaler, self.schedule, self.sampler, self.dist = optimizer, scaler, schedule, sampler, dist
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch

    # -- saving ---------------------------------------------------------------------------------
    def save(self, pos: Position, meters: dict[str, Any], best: dict[str, Any] | None = None) -> bool:
        """Write ``best`` (when given: its metrics), ``last`` and the resume state, which commits them;
        every rank takes part, rank 0 writes (returns whether this process wrote)."""
        rngs = D.all_gather_object(self._rank_rng(), self.dist)
        D.broadcast_buffers(self.model.encoder, self.dist)
        if not self.dist.is_main:
            return False
        state = {
            "global_step": pos.global_step, "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch,
            "best": pos.best, "last_eval": pos.last_eval, "world_size": self.dist.world_size,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "schedule": {"base_lr": self.schedule.base_lr, "epochs": self.epochs,
                         "steps_per_epoch": self.steps_per_epoch, "lr": self.optimizer.param_groups[0]["lr"]},
            "sampler": {"seed": self.sampler.seed, "epoch": pos.epoch, "start_batch": pos.batch_in_epoch},
            "rng": rngs,
            "meters": meters,
        }
        if best is not None:
            self.save_encoder(BEST, pos, metrics=best)
            fault_point("best")
        self.save_encoder(LAST, pos, metrics=pos.last_eval)
        fault_point("last")
        save_state(self.run_dir, state)
        return True

    def save_encoder(self, name: str, pos: Position, metrics: dict[str, Any] | None = None) -> None:
        """The encoder checkpoint ``name`` (``best`` / ``last``) of the run directory, with the head beside it."""
        path = self.run_dir / name
        cfg, st, enc = self.cfg, self.cfg["stdcl"], self.model.encoder
        save_encoder(path, enc, kind=Path(name).stem, class_names=self.data.class_names,
                     dataset=cfg["data"]["dataset"], protocol=cfg.get("protocol"), modality=cfg["data"]["modality"],
                     layout=enc.layout.name, num_classes=self.data.num_classes, stdcl=bool(st["enabled"]),
                     head=({"head": st["head"], "loss": st["loss"]} if st["enabled"] else None),
                     epoch=pos.epoch + (1 if pos.batch_in_epoch >= self.steps_per_epoch else 0),
                     global_step=pos.global_step, metrics=metrics or {}, best=pos.best,
                     run=str(self.run_dir), config=cfg)
        if self.model.head is not None:
            save_head(path, self.model.head)

    def _rank_rng(self) -> dict[str, Any]:
        st = rng_state(self.data.base.rng)
        loss = getattr(self.model, "loss", None)
        if loss is not None:
            st["loss"] = loss.get_rng_state()
        return st

    # -- restoring ------------------------------------------------------------------------------
    def restore(self) -> tuple[Position, dict[str, Any]]:
        """Load the saved state into the model, optimiser, scaler and RNGs; returns the position and the
        saved running meters. A state that does not fit this run is a one-line :class:`DataError`."""
        st = load_state(self.run_dir)
        try:
            pos, meters = self._apply(st)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            what = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise DataError(self.run_dir / STATE_JSON, f"the saved state does not fit this run ({type(e).__name__}"
                                                       f"{': ' + what if what else ''})") from e
        spe = self.steps_per_epoch
        if pos.global_step != pos.epoch * spe + pos.batch_in_epoch or pos.batch_in_epoch > spe:
            raise DataError(self.run_dir / STATE_JSON, f"inconsistent position: global step {pos.global_step} is "
                                                       f"not epoch {pos.epoch} x {spe} steps + batch "
                                                       f"{pos.batch_in_epoch}")
        return pos, meters

    def _apply(self, st: dict[str, Any]) -> tuple[Position, dict[str, Any]]:
        """Load a saved state (its errors: a state that does not fit)."""
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        if st.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(st["scaler"])
        pos = Position(int(st["global_step"]), int(st["epoch"]), int(st["batch_in_epoch"]))
        best = st.get("best") or pos.best
        if not all(best.get(k) is None or isinstance(best[k], (int, float)) for k in ("val_top1", "global_step")):
            raise TypeError(f"best must hold numbers, got {best!r}")
        pos.best = best
        meters = st.get("meters") or {}
        for k in ("window", "epoch"):
            Window.from_state(meters.get(k))
        pos.last_eval = dict(st.get("last_eval") or {})
        if int(st["schedule"]["steps_per_epoch"]) != self.steps_per_epoch:
            raise ConfigError(f"{self.run_dir}: the saved run has {st['schedule']['steps_per_epoch']} steps per epoch, "
                              f"this configuration {self.steps_per_epoch} (batch size or data changed)")
        rngs = st["rng"]
        rank, world = self.dist.rank, self.dist.world_size
        mine = rngs[rank] if rank < len(rngs) else None
        if mine is None or int(st.get("world_size", 1)) != world:
            log.warning("resuming with %d processes a run saved with %d: random streams are re-derived, so the "
                        "result is not bit-identical to an uninterrupted run", world, st.get("world_size", 1))
        if mine is not None:
            set_rng_state(mine, self.data.base.rng)
            loss = getattr(self.model, "loss", None)
            if loss is not None and "loss" in mine:
                loss.set_rng_state(mine["loss"])
        return pos, meters

    def reconcile(self, pos: Position) -> None:
        """Resume (rank 0): make ``last`` and ``best`` the checkpoints the state commits (module docstring);
        a dropped ``best`` resets ``pos.best``."""
        if checkpoint_step(self.run_dir / LAST) != pos.global_step:
            log.warning("%s: missing, damaged or from a save cut short; written again from the state",
                        self.run_dir / LAST)
            self.save_encoder(LAST, pos, metrics=pos.last_eval)
        want = pos.best.get("global_step")
        if checkpoint_step(self.run_dir / BEST) == want:
            return
        if want is not None:
            log.warning("%s is missing, damaged or not the best checkpoint of the saved state (global step %s); "
                        "the next evaluation writes a new one", self.run_dir / BEST, want)
            pos.best = no_best()
        for p in (self.run_dir / BEST, meta_path(self.run_dir / BEST), head_path(self.run_dir / BEST)):
            p.unlink(missing_ok=True)


def checkpoint_step(path: Path) -> int | None:
    """The global step of an intact encoder checkpoint (weights, metadata and head all readable), else None."""
    if not path.is_file():
        return None
    try:
        meta = read_meta(path)
        read_tensors(path)
        if meta.get("stdcl"):
            read_tensors(head_path(path))
    except DataError:
        return None
    step = meta.get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None
