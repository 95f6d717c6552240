"""The training loop: ``Trainer(cfg, run_dir).run()`` (``stdcl train``), resumable bit for bit.

One step: forward the encoder (+ STD-CL head and loss when ``stdcl.enabled``) under autocast,
``CE + contrastive``, a finite-loss check (all ranks agree), backward through the GradScaler
(fp16 only), optional gradient clipping, SGD/Adam step. The learning rate is a pure function
of (epoch, step) (:mod:`stdcl.train.optim`).

Resume continues bit for bit on CPU with ``num_workers=0``, wherever the previous session was
killed: what the state holds and how ``last`` / ``best`` are reconciled is in
:mod:`stdcl.train.checkpointing`; a damaged ``run.json`` / ``val_split.json`` is written again.

The other concerns live beside this module: :mod:`~stdcl.train.device` (device, precision,
determinism), :mod:`~stdcl.train.model_build` (the model, ``init_from``, DDP),
:mod:`~stdcl.train.objective` (the loss) and :mod:`~stdcl.train.metering` (running averages,
``metrics.jsonl``, TensorBoard, log lines).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from stdcl.data.base import worker_init_fn
from stdcl.errors import ConfigError, StdclError
from stdcl.io import write_json_atomic
from stdcl.logs import progress
from stdcl.train import distributed as D
from stdcl.train.checkpointing import Checkpointer, Position
from stdcl.train.data import TrainData, build_train_data
from stdcl.train.device import (autocast, autocast_dtype, grad_scaler, make_deterministic, resolve_device,
                                restore_determinism, seed_everything, worker_count)
from stdcl.train.evaluate import split_accuracies
from stdcl.train.faults import fault_point
from stdcl.train.metering import Recorder, TrainLog, Window, log_done, log_epoch, log_start
from stdcl.train.model_build import build_model, wrap_data_parallel
from stdcl.train.objective import training_loss
from stdcl.train.optim import Schedule, build_optimizer
from stdcl.train.probes import ProbeRecorder, probe_epochs
from stdcl.train.run_dir import (CONFIG, LAST, RUN_INFO, SUMMARY, VAL_SPLIT, damaged_run_files, open_run_dir,
                                 remove_failed_start, write_config, write_run_info, write_val_split)
from stdcl.train.splits import EpochSampler
from stdcl.train.state import keep_latest_state

log = logging.getLogger("stdcl.train")


class TrainingDiverged(StdclError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class StopRequested(Exception):
    """Internal: ``debug.stop_after_steps`` reached (the state was saved)."""


class Trainer:
    """One training run (new or resumed) of a resolved config into ``run_dir``.

    Args:
        cfg: a resolved config (:func:`stdcl.train.config.load_config`).
        run_dir: the run directory (new: must not exist or be empty).
        resume: continue the run in ``run_dir`` from its saved state (``cfg`` may then carry
            overrides of the saved config, e.g. more epochs).
        show_progress: tqdm bars (None: only on a terminal).
    """

    def __init__(self, cfg: dict[str, Any], run_dir: str | os.PathLike, resume: bool = False,
                 show_progress: bool | None = None):
        self.cfg = copy.deepcopy(cfg)
        self.run_dir = Path(run_dir)
        self.resume = resume
        show = show_progress if cfg["train"].get("progress", True) else False
        self.disable_progress = None if show is None else not show  # tqdm's `disable`
        self.pos = Position()  # counters, best and latest evaluation (what a save records)
        self.last_saved_step: int | None = None
        self.recorder: Recorder | None = None
        self._train_log: TrainLog | None = None
        self._meters: dict[str, Any] = {}  # running log averages restored on resume (identical logs)
        self._determinism_before: tuple[bool, bool, bool] | None = None
        self._created = False  # this session created run_dir (removed again if the start fails)
        self.window, self.epoch_meter = Window(), Window()
        self.probes: ProbeRecorder | None = None
        self.probe_at: set[int] = set()  # epochs (1-based) whose end is probed

    # -- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        self.device = resolve_device(cfg.get("device", "auto"), int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = D.setup_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device(f"cuda:{self.dist.local_rank}")
        self.is_main = self.dist.is_main
        self.num_workers = worker_count(cfg["data"]["num_workers"])
        self._open_run_dir()
        seed = int(cfg["seed"])
        if cfg.get("deterministic"):
            self._determinism_before = make_deterministic()
        seed_everything(seed)
        self._build_data(seed)
        self.model = build_model(cfg, self.data, self.device, resume=self.resume)
        self.optimizer = build_optimizer(self.model, cfg["optim"])
        self.schedule = Schedule(cfg["schedule"], float(cfg["optim"]["lr"]), self.epochs, self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(cfg["train"]["amp"], self.device)
        self.scaler = grad_scaler(self.device, self.amp_dtype)
        self.recorder = Recorder(self.run_dir, enabled=self.is_main)
        self.checkpointer = Checkpointer(self.run_dir, cfg, self.data, self.model, self.optimizer, self.scaler,
                                         self.schedule, self.sampler, self.dist, self.epochs, self.steps_per_epoch)
        self.probes = self._make_probes()
        if self.resume:
            self._resume()
        elif self.is_main:
            self._write_run_files()
        if self.probes is not None:
            self.probes.start()
        world = self.dist.world_size
        if world > 1 and not self.resume:  # distinct dropout streams per rank (a resumed run restored its own)
            torch.manual_seed(seed + self.dist.rank)
        self.ddp = wrap_data_parallel(self.model, self.device, world)
        self.recorder.open_tensorboard(cfg["train"].get("tensorboard", "auto"))

    def _open_run_dir(self) -> None:
        """Rank 0 creates (new run) or checks (resume) the run directory, everyone learns the outcome;
        ``train.log`` opens (:func:`stdcl.train.run_dir.open_run_dir`)."""
        err, note, start_over = None, None, False
        if self.is_main:
            try:
                note, start_over, self._created = open_run_dir(self.run_dir, self.resume)
            except StdclError as e:
                err = str(e)
        err, start_over = D.broadcast_object((err, start_over), self.dist)
        if err is not None:
            raise ConfigError(err)
        self.resume = self.resume and not start_over
        if self.is_main:
            self._train_log = TrainLog(self.run_dir)
            if note:
                log.warning(note)

    def _build_data(self, seed: int) -> None:
        """The datasets, this rank's sampler and the run's length in steps."""
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        self.data_seed = seed + 1000 * rank if world > 1 else seed
        self.data: TrainData = build_train_data(cfg, self.data_seed)
        gb = int(cfg["train"]["batch_size"])
        if gb % world:
            raise ConfigError(f"train.batch_size {gb} (the global batch) is not divisible by {world} processes")
        self.sampler = EpochSampler(len(self.data.train), gb // world, shuffle=True, seed=seed, rank=rank,
                                    world_size=world, drop_last=True)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        if self.steps_per_epoch < 1:
            raise ConfigError(f"the training split has {len(self.data.train)} items, fewer than one batch of {gb}")
        self.epochs = int(cfg["train"]["epochs"])
        max_steps = cfg["train"].get("max_steps")
        self.total_steps = self.epochs * self.steps_per_epoch if max_steps is None else \
            min(int(max_steps), self.epochs * self.steps_per_epoch)

    def _make_probes(self) -> ProbeRecorder | None:
        """The probe recorder (``probe.enabled``) and the epochs it snapshots (:mod:`stdcl.train.probes`)."""
        p = self.cfg["probe"]
        if not p["enabled"]:
            return None
        split = "val" if p["split"] == "val" and self.data.val is not None else "test"
        if p["split"] == "val" and split == "test":
            log.warning("probe.split=val but the run has no validation split: probing the test split")
        self.probe_at = set(probe_epochs(self.epochs, int(self.cfg["train"]["eval_every"]), int(p["snapshots"])))
        return ProbeRecorder(self.run_dir, self.cfg, self.data.val if split == "val" else self.data.test,
                             self.data.class_names, getattr(self.data.test, "class_meta", None), split,
                             enabled=self.is_main)

    def _probe(self) -> None:
        """A probe snapshot at the current position (the model is left in eval mode)."""
        if self.probes is not None:
            self.probes.record(self.model.encoder, self.model.head, self.pos.global_step,
                               self.pos.global_step / self.steps_per_epoch, self.device)

    def _write_run_files(self, only: tuple[str, ...] = (CONFIG, RUN_INFO, VAL_SPLIT)) -> None:
        if CONFIG in only:
            write_config(self.run_dir, self.cfg)
        if RUN_INFO in only:
            write_run_info(self.run_dir, self.cfg, self.data, self.model, self.device, self.dist.world_size,
                           self.steps_per_epoch, self.total_steps)
        if VAL_SPLIT in only:
            write_val_split(self.run_dir, self.cfg, self.data)

    def _resume(self) -> None:
        """Continue from the saved state: position, weights, RNGs; metrics and run files mended."""
        self.pos, self._meters = self.checkpointer.restore()
        self.recorder.truncate_after(self.pos.global_step)
        if self.probes is not None:
            self.probes.truncate_after(self.pos.global_step)
        self.last_saved_step = self.pos.global_step
        if self.is_main:
            damaged = damaged_run_files(self.run_dir)
            if damaged:
                log.warning("%s missing or damaged: written again", " and ".join(damaged))
            self._write_run_files((CONFIG, *damaged))
            self.checkpointer.reconcile(self.pos)
        log.info("resumed %s at epoch %d, batch %d (global step %d)", self.run_dir, self.pos.epoch + 1,
                 self.pos.batch_in_epoch, self.pos.global_step)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to the end (or to ``max_steps``); returns the summary. Raises :class:`TrainingDiverged`."""
        try:
            try:
                self._setup()
            except BaseException:
                self._discard_failed_start()
                raise
            return self._run()
        except StopRequested:
            log.info("stopped after %d steps as requested (debug.stop_after_steps); resume with "
                     "`stdcl train --resume %s`", self.pos.global_step, self.run_dir)
            return {"stopped": True, "global_step": self.pos.global_step, "run_dir": str(self.run_dir)}
        except BaseException as e:  # train.log tells why the session ended, whatever the log level
            if self._train_log is not None:
                self._train_log.session_ended(e)
            raise
        finally:
            if self.recorder is not None:
                self.recorder.close()
            if self._train_log is not None:
                self._train_log.close()
            if hasattr(self, "dist"):
                D.cleanup_distributed(self.dist)
            if self._determinism_before is not None:  # leave the process as we found it
                restore_determinism(self._determinism_before)

    def _discard_failed_start(self) -> None:
        """A new run that failed before writing its config leaves no directory behind (retry works)."""
        if not self._created or (self.run_dir / CONFIG).exists():
            return
        if self._train_log is not None:
            self._train_log.close()
            self._train_log = None
        remove_failed_start(self.run_dir)

    def _finished(self) -> bool:
        return self.pos.global_step >= self.total_steps

    def _run(self) -> dict[str, Any]:
        p = self.pos
        if self.is_main:
            log_start(self.cfg, self.data, sum(q.numel() for q in self.model.encoder.parameters()), self.epochs,
                      self.steps_per_epoch, self.device, self.dist.world_size if self.dist.enabled else None)
        if p.global_step == 0:
            self._probe()
        while p.epoch < self.epochs and not self._finished():
            self._train_epoch(p.epoch)
            self._end_epoch(p.epoch)
        result = {"run_dir": str(self.run_dir), "global_step": p.global_step, "epochs": p.epoch,
                  "best": p.best, "final": p.last_eval, "stopped": False}
        if self.is_main:
            self.recorder.write({"kind": "final", "global_step": p.global_step} | p.last_eval | {"best": p.best})
            write_json_atomic(self.run_dir / SUMMARY, result)
            keep_latest_state(self.run_dir)
            log_done(p.global_step, p.best, p.last_eval)
        return result

    def _train_epoch(self, epoch: int) -> None:
        """The steps of ``epoch`` from the current position to its end (or the run's); step records,
        periodic saves and ``debug.stop_after_steps`` on the way."""
        cfg, p = self.cfg, self.pos
        log_every = int(cfg["train"]["log_every"])
        ckpt_every = cfg["train"].get("checkpoint_every_steps")
        stop_after = cfg["debug"].get("stop_after_steps")
        self.sampler.set_epoch(epoch, p.batch_in_epoch)
        gen = torch.Generator()
        gen.manual_seed((int(cfg["seed"]) * 1_000_003 + epoch * 7919 + self.dist.rank) % 2**63)
        loader = DataLoader(self.data.train, batch_sampler=self.sampler, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda", worker_init_fn=worker_init_fn, generator=gen)
        self.model.train()
        self.window = Window.from_state(self._meters.get("window"))
        self.epoch_meter = Window.from_state(self._meters.get("epoch"))
        self._meters = {}
        bar = progress(loader, f"epoch {epoch + 1}/{self.epochs}", total=len(self.sampler),
                       disable=self.disable_progress, unit="batch")
        for x, y, idx in bar:
            lr = self.schedule.apply(self.optimizer, epoch, p.batch_in_epoch)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            idx = idx.to(self.device, non_blocking=True)
            values, correct = self._step(x, y, idx, lr)
            p.global_step += 1
            p.batch_in_epoch += 1
            n = x.shape[0] * self.dist.world_size
            self.window.add(values, n, correct)
            self.epoch_meter.add(values, n, correct)
            fault_point("step")
            if p.global_step % log_every == 0:
                rec = {"kind": "step", "epoch": epoch + 1, "global_step": p.global_step, "lr": lr} | \
                    self.window.summary()
                self.recorder.write(rec, scalars="step")
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}", lr=f"{lr:.3g}")
                self.window = Window()
            if ckpt_every and p.global_step % int(ckpt_every) == 0:
                self._save()
            if stop_after and p.global_step == int(stop_after):
                self._save()
                raise StopRequested
            if self._finished():
                break

    def _end_epoch(self, epoch: int) -> None:
        """After the steps of ``epoch``: evaluate when due, the epoch record, ``best``, advance, save."""
        p = self.pos
        eval_every = int(self.cfg["train"]["eval_every"])
        end_of_epoch = p.batch_in_epoch >= self.steps_per_epoch
        summary = self.epoch_meter.summary()
        do_eval = self._finished() or (end_of_epoch and eval_every > 0 and (epoch + 1) % eval_every == 0)
        evals = self._evaluate() if do_eval else {}
        if self._finished() or (end_of_epoch and epoch + 1 in self.probe_at):
            self._probe()
        improved = p.note_evaluation(evals)
        rec = {"kind": "epoch", "epoch": epoch + 1, "global_step": p.global_step,
               "lr": self.optimizer.param_groups[0]["lr"]} | {f"train_{k}": v for k, v in summary.items()} | evals
        rec["best_val_top1"] = p.best["val_top1"]
        self.recorder.write(rec, scalars="epoch")
        if self.is_main:
            log_epoch(epoch + 1, self.epochs, summary, evals)
        if end_of_epoch:
            p.epoch += 1
            p.batch_in_epoch = 0
            self.window, self.epoch_meter = Window(), Window()
        self._save(best=evals if improved else None)

    def _step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, lr: float) -> tuple[dict[str, float], int]:
        """One optimiser step on a batch; returns the logged values (averaged over ranks) and the correct count."""
        p = self.pos
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp_dtype):
            out = self.ddp(x, labels=y, indices=idx)
        logits = out["logits"].float()
        total, ce, values = training_loss(out, y, self.cfg["stdcl"]["loss"],
                                          p.epoch + p.batch_in_epoch / max(self.steps_per_epoch, 1),
                                          self.dist, self.device)
        nan_at = self.cfg["debug"].get("nan_at_step")
        if nan_at is not None and p.global_step + 1 == int(nan_at):
            total = total * float("nan")
        check = torch.stack([total.detach().float(), ce.detach().float(),
                             (logits.argmax(1) == y).sum().float()])
        check = D.all_reduce_sum(check, self.dist)
        loss_v, ce_v, correct = (float(v) for v in check.tolist())
        world = self.dist.world_size
        if not math.isfinite(loss_v):
            where = (f"the last good checkpoint is {self.run_dir / LAST} (global step {self.last_saved_step})"
                     if self.last_saved_step is not None else "no checkpoint was saved before it")
            raise TrainingDiverged(f"loss is {loss_v} at epoch {p.epoch + 1}, global step {p.global_step + 1} "
                                   f"(lr {lr:.3g}); training stopped; {where}")
        self.scaler.scale(total).backward()
        clip = self.cfg["optim"].get("grad_clip")
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = {"loss": loss_v / world, "ce": ce_v / world} | {k: float(v) for k, v in values.items()}
        return values, int(correct)

    def _evaluate(self) -> dict[str, Any]:
        """Top-1 / top-5 on the validation split (and the test split when configured, or at the end)."""
        D.broadcast_buffers(self.model.encoder, self.dist)
        splits = [("val", self.data.val)]
        if self.cfg["train"].get("test_during_training", True) or self._finished():
            splits.append(("test", self.data.test))
        return split_accuracies(self.model.encoder, splits, self.data.class_names, f"epoch {self.pos.epoch + 1}",
                                batch_size=int(self.cfg["train"]["eval_batch_size"]), device=self.device,
                                amp_dtype=self.amp_dtype, num_workers=self.num_workers, rank=self.dist.rank,
                                world_size=self.dist.world_size, disable_progress=self.disable_progress)

    def _save(self, best: dict[str, Any] | None = None) -> None:
        """Save ``best`` (when given: its metrics), ``last`` and the resume state at the current position.

        Weights that are no longer finite are never saved: the run stops and keeps the previous save.
        """
        bad = [n for n, q in self.model.named_parameters() if not bool(torch.isfinite(q).all())]
        if bad:
            raise TrainingDiverged(f"weights became non-finite ({bad[0]}{' and others' if len(bad) > 1 else ''}) "
                                   f"by global step {self.pos.global_step} "
                                   f"(lr {self.optimizer.param_groups[0]['lr']:.3g}); training stopped; the last good "
                                   f"checkpoint is {self.run_dir / LAST} (global step {self.last_saved_step})")
        meters = {"window": self.window.state(), "epoch": self.epoch_meter.state()}
        if self.checkpointer.save(self.pos, meters, best):
            self.last_saved_step = self.pos.global_step


def train(cfg: dict[str, Any], run_dir: str | os.PathLike, resume: bool = False,
          show_progress: bool | None = None) -> dict[str, Any]:
    """Run :class:`Trainer`; returns its summary."""
    return Trainer(cfg, run_dir, resume=resume, show_progress=show_progress).run()


__all__ = ["StopRequested", "Trainer", "TrainingDiverged", "train"]
