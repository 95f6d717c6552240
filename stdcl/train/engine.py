"""The training loop: ``Trainer(cfg, run_dir).run()`` (``stdcl train``), resumable bit for bit.

One step: forward the encoder (+ STD-CL head and loss when ``stdcl.enabled``) under autocast,
``CE + contrastive``, a finite-loss check (all ranks agree), backward through the GradScaler
(fp16 only), optional gradient clipping, SGD/Adam step. The learning rate is a pure function
of (epoch, step) (:mod:`stdcl.train.optim`).

Resume: ``state.json`` + ``state-<step>.safetensors`` hold the whole model (encoder, head,
banks, loss RNG), the optimiser and GradScaler states, the schedule position, every RNG
(torch CPU/CUDA, numpy legacy, python ``random``, the training dataset's numpy Generator, per
rank), the sampler position (epoch and batch within it; the permutation is a function of
seed + epoch) and the best validation score. On CPU with ``num_workers=0`` a resumed run
ends with weights identical to an uninterrupted one, wherever the previous session was killed.
(With workers, each resumed epoch re-derives the workers' seeds, so augmentations after a
mid-epoch resume differ.) A save writes ``best`` (when it improved), then ``last``, then the
state, which commits them: on resume ``last`` and ``best`` are checked against the state, a
``last`` from a cut-short save is written again from it, and a ``best`` that is not the one
the state records (cut short, damaged) is dropped with its record, so the next evaluation
writes a new one. A damaged ``run.json`` / ``val_split.json`` is written again.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from stdcl import __version__
from stdcl.data.base import worker_init_fn
from stdcl.errors import ConfigError, DataError, StdclError
from stdcl.io import read_json, write_json_atomic, write_text_atomic
from stdcl.logs import progress
from stdcl.train import distributed as D
from stdcl.train.config import dump_config
from stdcl.train.data import TrainData, build_train_data
from stdcl.train.evaluate import accuracy_metrics, autocast, autocast_dtype, predict
from stdcl.train.optim import Schedule, build_optimizer, contrastive_factor
from stdcl.train.faults import fault_point
from stdcl.train.run_dir import (BEST, CONFIG, LAST, METRICS, RUN_INFO, STATE_JSON, SUMMARY, TRAIN_LOG, VAL_SPLIT,
                                 MetricsLog, clear_attempt, has_state, is_run_dir, prepare_new, remove_partial_writes)
from stdcl.train.splits import EpochSampler
from stdcl.train.state import keep_latest_state, load_state, rng_state, save_state, set_rng_state

log = logging.getLogger("stdcl.train")


class TrainingDiverged(StdclError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class StopRequested(Exception):
    """Internal: ``debug.stop_after_steps`` reached (the state was saved)."""


def worker_count(requested: int) -> int:
    """Data-loading processes: the configured number, capped by the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(int(requested), cpus))


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local rank>`` when CUDA is present, else ``cpu``."""
    name = name or "auto"
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"config key device: {name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class _Window:
    """Running sums of the logged step quantities."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.samples = 0
        self.correct = 0
        self.t0 = time.perf_counter()

    def add(self, values: dict[str, float], samples: int, correct: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        self.samples += samples
        self.correct += correct

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "n": self.n, "samples": self.samples, "correct": self.correct,
                "elapsed": time.perf_counter() - self.t0}

    @classmethod
    def from_state(cls, st: dict[str, Any] | None) -> "_Window":
        w = cls()
        if st:
            w.sums, w.n, w.samples, w.correct = dict(st["sums"]), int(st["n"]), int(st["samples"]), int(st["correct"])
            w.t0 -= float(st.get("elapsed", 0.0))
        return w

    def summary(self) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        out["acc"] = self.correct / max(self.samples, 1)
        out["samples_per_s"] = self.samples / dt
        out["time_s"] = dt
        return out


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
        self.global_step = 0
        self.epoch = 0  # 0-based epoch in progress
        self.batch_in_epoch = 0  # batches of `epoch` already done
        self.best: dict[str, Any] = {"val_top1": None, "epoch": None, "global_step": None}
        self.last_saved_step: int | None = None
        self._tb = None
        self._file_handler: logging.Handler | None = None
        self._meters: dict[str, Any] = {}  # running log averages restored on resume (identical logs)
        self._restore_determinism: tuple[bool, bool, bool] | None = None
        self._created = False  # this session created run_dir (removed again if the start fails)
        self.last_eval: dict[str, Any] = {}
        self.window, self.epoch_meter = _Window(), _Window()

    # -- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        env_local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(cfg.get("device", "auto"), env_local)
        self.dist = D.setup_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device(f"cuda:{self.dist.local_rank}")
        self.is_main = self.dist.is_main
        self.num_workers = worker_count(cfg["data"]["num_workers"])
        # the run directory: rank 0 decides, everyone learns the outcome
        err, note, start_over = None, None, False
        if self.is_main:
            try:
                note, start_over = self._prepare_run_dir()
            except StdclError as e:
                err = str(e)
        err, start_over = D.broadcast_object((err, start_over), self.dist)
        if err is not None:
            raise ConfigError(err)
        self.resume = self.resume and not start_over
        if self.is_main:
            self._file_handler = logging.FileHandler(self.run_dir / TRAIN_LOG)
            self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger("stdcl").addHandler(self._file_handler)
            if note:
                log.warning(note)

        seed = int(cfg["seed"])
        if cfg.get("deterministic"):
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            self._restore_determinism = (torch.are_deterministic_algorithms_enabled(),
                                         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

        rank, world = self.dist.rank, self.dist.world_size
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

        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg["optim"])
        self.schedule = Schedule(cfg["schedule"], float(cfg["optim"]["lr"]), self.epochs, self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(cfg["train"]["amp"], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.metrics = MetricsLog(self.run_dir / METRICS, enabled=self.is_main)

        if self.resume:
            self._load_resume_state()
        elif self.is_main:
            self._write_run_files()
        if world > 1:
            if not self.resume:  # distinct dropout streams per rank (a resumed run restored its own)
                torch.manual_seed(seed + rank)
            with warnings.catch_warnings():  # broadcast_buffers=False: the banks are identical on every rank
                warnings.simplefilter("ignore", FutureWarning)
                self.ddp = torch.nn.parallel.DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=False)
        else:
            self.ddp = self.model
        if self.is_main and cfg["train"].get("tensorboard", "auto") is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                if cfg["train"].get("tensorboard") is True:
                    log.warning("train.tensorboard is true but tensorboard is not installed; skipping it")

    def _prepare_run_dir(self) -> tuple[str | None, bool]:
        """Rank 0: create (new run) or check (resume) the run directory; returns (a note for the log once
        ``train.log`` is open, whether a resume starts over from step 0). See :mod:`stdcl.train.run_dir`."""
        d = self.run_dir
        if not self.resume:
            reused = prepare_new(d)
            self._created = not reused
            return (f"{d}: the previous attempt ended before its first checkpoint; starting afresh here"
                    if reused else None), False
        if not is_run_dir(d):
            raise ConfigError(f"{d}: not a run directory (no {CONFIG}); nothing to resume")
        gone = remove_partial_writes(d)
        if has_state(d):
            return (f"removed {len(gone)} unfinished file(s) of a killed session: {', '.join(gone)}" if gone
                    else None), False
        if (d / SUMMARY).exists():
            raise DataError(d / STATE_JSON, f"missing: the run ended ({SUMMARY}) but its training state is gone; "
                                            "nothing to resume")
        clear_attempt(d, keep=(TRAIN_LOG, CONFIG))  # the config stays until this start has written its own
        return (f"{d} has no training state (it ended before its first checkpoint): starting it from step 0 with "
                f"its {CONFIG}"), True

    def _build_model(self) -> torch.nn.Module:
        from stdcl.encoders import build_encoder
        from stdcl.head.model import build_stdcl_model

        cfg, d = self.cfg, self.data
        enc = build_encoder(cfg["model"]["encoder"], num_classes=d.num_classes, layout=d.layout,
                            in_channels=d.in_channels, num_person=d.num_person, window=d.window,
                            **dict(cfg["model"].get("options") or {}))
        init = cfg["train"].get("init_from")
        if init and not self.resume:
            self._init_from(enc, init)
        st = cfg["stdcl"]
        if st["enabled"]:
            loss_opts = dict(st["loss"])
            loss_opts.setdefault("seed", int(cfg["seed"]))
            model = build_stdcl_model(enc, d.window, dict(st["head"]), loss_opts,
                                      slot_labels=torch.as_tensor(d.train.labels), num_classes=d.num_classes)
            from stdcl.head.loss import small_data_advice

            advice = small_data_advice(model.loss.capacity_per_class(), int(loss_opts["num_pos"]),
                                       int(cfg["train"]["epochs"]), float(loss_opts.get("start_epoch") or 0),
                                       bool(loss_opts.get("scale_to_data")))
            if advice:
                log.warning(advice)
        else:
            model = build_stdcl_model(enc, d.window, None, None)
        if cfg["train"].get("sync_bn"):
            model = D.convert_sync_batchnorm(model, self.device)
        return model.to(self.device)

    def _init_from(self, enc: torch.nn.Module, path: str) -> None:
        from stdcl.checkpoint import load_encoder

        src, meta = load_encoder(path)
        if src.name != enc.name:
            raise ConfigError(f"train.init_from {path}: a {src.name} checkpoint, but the config trains {enc.name}")
        own, sd = enc.state_dict(), src.state_dict()
        strict = bool(self.cfg["train"].get("init_strict", True))
        skipped = [k for k in sd if k in own and own[k].shape != sd[k].shape]
        if skipped and strict:
            raise ConfigError(f"train.init_from {path}: shapes differ for {', '.join(skipped[:3])}"
                              f"{' ...' if len(skipped) > 3 else ''} (set train.init_strict=false to skip them)")
        missing = [k for k in own if k not in sd]
        if missing and strict:
            raise ConfigError(f"train.init_from {path}: missing {', '.join(missing[:3])}")
        enc.load_state_dict({k: v for k, v in sd.items() if k in own and k not in skipped}, strict=False)
        log.info("initialised %s from %s%s", enc.name, path,
                 f" (skipped {len(skipped)} tensors: {skipped})" if skipped else "")

    def _write_run_files(self, only: tuple[str, ...] = (CONFIG, RUN_INFO, VAL_SPLIT)) -> None:
        if CONFIG in only:
            write_text_atomic(self.run_dir / CONFIG, dump_config(self.cfg))
        if RUN_INFO in only:
            self._write_run_info()
        if VAL_SPLIT in only:
            self._write_val_split()

    def _write_run_info(self) -> None:
        d = self.data
        n_params = sum(p.numel() for p in self.model.encoder.parameters())
        head = self.model.head
        info = {"version": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                "torch": torch.__version__, "device": str(self.device), "world_size": self.dist.world_size,
                "encoder": self.cfg["model"]["encoder"], "encoder_parameters": n_params,
                "head_parameters": sum(p.numel() for p in head.parameters()) if head is not None else 0,
                "dataset": self.cfg["data"]["dataset"], "protocol": self.cfg.get("protocol"),
                "train_items": len(d.train), "val_samples": 0 if d.val is None else len(d.val),
                "test_samples": len(d.test), "classes": d.num_classes, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps}
        write_json_atomic(self.run_dir / RUN_INFO, info)

    def _write_val_split(self) -> None:
        from stdcl.train.data import validation_samples
        from stdcl.train.splits import describe_validation

        d = self.data
        taken = describe_validation(validation_samples(self.cfg, d.base), d.base.num_samples, d.base.subjects)
        if taken["by"] != "none":
            log.info("validation: %d training samples (%.1f %%) held out by %s%s", taken["held_out"],
                     100 * taken["held_out_fraction"], taken["by"],
                     f" (subjects {taken['subjects']})" if taken["subjects"] else
                     " (whole subjects would miss the asked fraction)" if d.base.subjects is not None else "")
        write_json_atomic(self.run_dir / VAL_SPLIT,
                          {"fraction": self.cfg["data"]["val_fraction"], "seed": self.cfg["data"]["val_seed"],
                           **taken, "names": [] if d.val is None else d.val.names})

    # -- state ------------------------------------------------------------------------------
    def _rank_rng(self) -> dict[str, Any]:
        st = rng_state(self.data.base.rng)
        loss = getattr(self.model, "loss", None)
        if loss is not None:
            st["loss"] = loss.get_rng_state()
        return st

    def _save(self, best: dict[str, Any] | None = None) -> None:
        """Write ``best`` (when given: its metrics), ``last`` and the resume state, which commits them, for
        the current position; rank 0 writes.

        Weights that are no longer finite are never saved: the run stops and keeps the previous save.
        """
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDiverged(f"weights became non-finite ({bad[0]}{' and others' if len(bad) > 1 else ''}) "
                                   f"by global step {self.global_step} (lr {self.optimizer.param_groups[0]['lr']:.3g});"
                                   f" training stopped; the last good checkpoint is {self.run_dir / LAST} "
                                   f"(global step {self.last_saved_step})")
        rngs = D.all_gather_object(self._rank_rng(), self.dist)
        D.broadcast_buffers(self.model.encoder, self.dist)
        if not self.is_main:
            return
        state = {
            "global_step": self.global_step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best": self.best, "last_eval": self.last_eval, "world_size": self.dist.world_size,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "schedule": {"base_lr": self.schedule.base_lr, "epochs": self.epochs,
                         "steps_per_epoch": self.steps_per_epoch, "lr": self.optimizer.param_groups[0]["lr"]},
            "sampler": {"seed": self.sampler.seed, "epoch": self.epoch, "start_batch": self.batch_in_epoch},
            "rng": rngs,
            "meters": {"window": self.window.state(), "epoch": self.epoch_meter.state()},
        }
        if best is not None:
            self._save_encoder(self.run_dir / BEST, kind="best", metrics=best)
            fault_point("best")
        self._save_encoder(self.run_dir / LAST, kind="last", metrics=self.last_eval)
        fault_point("last")
        save_state(self.run_dir, state)
        self.last_saved_step = self.global_step

    def _save_encoder(self, path: Path, kind: str, metrics: dict[str, Any] | None = None) -> None:
        from stdcl.checkpoint import save_encoder

        st = self.cfg["stdcl"]
        enc = self.model.encoder
        save_encoder(path, enc, kind=kind, class_names=self.data.class_names, dataset=self.cfg["data"]["dataset"],
                     protocol=self.cfg.get("protocol"), modality=self.cfg["data"]["modality"],
                     layout=enc.layout.name, num_classes=self.data.num_classes, stdcl=bool(st["enabled"]),
                     head=({"head": st["head"], "loss": st["loss"]} if st["enabled"] else None),
                     epoch=self.epoch + (1 if self.batch_in_epoch >= self.steps_per_epoch else 0),
                     global_step=self.global_step, metrics=metrics or {}, best=self.best,
                     run=str(self.run_dir), config=self.cfg)
        if self.model.head is not None:
            from stdcl.head.checkpoint import save_head

            save_head(path, self.model.head)

    def _load_resume_state(self) -> None:
        st = load_state(self.run_dir)
        try:
            self._apply_state(st)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            what = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise DataError(self.run_dir / STATE_JSON, f"the saved state does not fit this run ({type(e).__name__}"
                                                       f"{': ' + what if what else ''})") from e
        spe = self.steps_per_epoch
        if self.global_step != self.epoch * spe + self.batch_in_epoch or self.batch_in_epoch > spe:
            raise DataError(self.run_dir / STATE_JSON, f"inconsistent position: global step {self.global_step} is "
                                                       f"not epoch {self.epoch} x {spe} steps + batch "
                                                       f"{self.batch_in_epoch}")
        dropped = self.metrics.truncate_after(self.global_step)
        if dropped:
            log.warning("%s: dropped %d damaged line(s) (cut short or not a record)", self.run_dir / METRICS, dropped)
        self.last_saved_step = self.global_step
        if self.is_main:
            damaged = tuple(n for n in (RUN_INFO, VAL_SPLIT) if not _json_object(self.run_dir / n))
            if damaged:
                log.warning("%s missing or damaged: written again", " and ".join(damaged))
            self._write_run_files((CONFIG, *damaged))
            self._reconcile_checkpoints()
        log.info("resumed %s at epoch %d, batch %d (global step %d)", self.run_dir, self.epoch + 1,
                 self.batch_in_epoch, self.global_step)

    def _apply_state(self, st: dict[str, Any]) -> None:
        """Load a saved state into the model, optimiser, counters and RNGs (its errors: a state that does not fit)."""
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        if st.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(st["scaler"])
        self.global_step = int(st["global_step"])
        self.epoch = int(st["epoch"])
        self.batch_in_epoch = int(st["batch_in_epoch"])
        best = st.get("best") or self.best
        if not all(best.get(k) is None or isinstance(best[k], (int, float)) for k in ("val_top1", "global_step")):
            raise TypeError(f"best must hold numbers, got {best!r}")
        self.best = best
        self._meters = st.get("meters") or {}
        for k in ("window", "epoch"):
            _Window.from_state(self._meters.get(k))
        self.last_eval = dict(st.get("last_eval") or {})
        if int(st["schedule"]["steps_per_epoch"]) != self.steps_per_epoch:
            raise ConfigError(f"{self.run_dir}: the saved run has {st['schedule']['steps_per_epoch']} steps per epoch, "
                              f"this configuration {self.steps_per_epoch} (batch size or data changed)")
        rngs = st["rng"]
        mine = rngs[self.dist.rank] if self.dist.rank < len(rngs) else None
        if mine is None or int(st.get("world_size", 1)) != self.dist.world_size:
            log.warning("resuming with %d processes a run saved with %d: random streams are re-derived, so the "
                        "result is not bit-identical to an uninterrupted run", self.dist.world_size,
                        st.get("world_size", 1))
        if mine is not None:
            set_rng_state(mine, self.data.base.rng)
            loss = getattr(self.model, "loss", None)
            if loss is not None and "loss" in mine:
                loss.set_rng_state(mine["loss"])

    def _reconcile_checkpoints(self) -> None:
        """Resume: make ``last`` and ``best`` the checkpoints the state commits (module docstring)."""
        if _checkpoint_step(self.run_dir / LAST) != self.global_step:
            log.warning("%s: missing, damaged or from a save cut short; written again from the state",
                        self.run_dir / LAST)
            self._save_encoder(self.run_dir / LAST, kind="last", metrics=self.last_eval)
        want = self.best.get("global_step")
        if _checkpoint_step(self.run_dir / BEST) == want:
            return
        from stdcl.checkpoint import meta_path
        from stdcl.head.checkpoint import head_path

        if want is not None:
            log.warning("%s is missing, damaged or not the best checkpoint of the saved state (global step %s); "
                        "the next evaluation writes a new one", self.run_dir / BEST, want)
            self.best = {"val_top1": None, "epoch": None, "global_step": None}
        for p in (self.run_dir / BEST, meta_path(self.run_dir / BEST), head_path(self.run_dir / BEST)):
            p.unlink(missing_ok=True)

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self) -> dict[str, Any]:
        D.broadcast_buffers(self.model.encoder, self.dist)
        out: dict[str, Any] = {}
        kw = dict(batch_size=int(self.cfg["train"]["eval_batch_size"]), device=self.device, amp_dtype=self.amp_dtype,
                  num_workers=self.num_workers, rank=self.dist.rank,
                  world_size=self.dist.world_size, disable_progress=self.disable_progress)
        splits = [("val", self.data.val)]
        if self.cfg["train"].get("test_during_training", True) or self._finished():
            splits.append(("test", self.data.test))
        for name, ds in splits:
            if ds is None:
                continue
            logits, labels, _ = predict(self.model.encoder, ds, desc=f"{name} epoch {self.epoch + 1}", **kw)
            m = accuracy_metrics(logits, labels, self.data.class_names)
            out[f"{name}_top1"], out[f"{name}_top5"] = m["top1"], m["top5"]
        return out

    def _finished(self) -> bool:
        return self.global_step >= self.total_steps

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
                     "`stdcl train --resume %s`", self.global_step, self.run_dir)
            return {"stopped": True, "global_step": self.global_step, "run_dir": str(self.run_dir)}
        except BaseException as e:  # train.log tells why the session ended, whatever the log level
            if self._file_handler is not None:
                self._file_handler.handle(logging.LogRecord(log.name, logging.ERROR, __file__, 0,
                                                            "session ended: %s: %s", (type(e).__name__, e), None))
            raise
        finally:
            if self._tb is not None:
                self._tb.close()
            if self._file_handler is not None:
                logging.getLogger("stdcl").removeHandler(self._file_handler)
                self._file_handler.close()
            if hasattr(self, "dist"):
                D.cleanup_distributed(self.dist)
            if self._restore_determinism is not None:  # leave the process as we found it
                det, cudnn_det, bench = self._restore_determinism
                torch.use_deterministic_algorithms(det)
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, bench

    def _discard_failed_start(self) -> None:
        """A new run that failed before writing its config leaves no directory behind (retry works)."""
        if not self._created or (self.run_dir / CONFIG).exists():
            return
        if self._file_handler is not None:
            logging.getLogger("stdcl").removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
        (self.run_dir / "train.log").unlink(missing_ok=True)
        try:
            self.run_dir.rmdir()
        except OSError:
            pass

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        d = self.data
        if self.is_main:
            enc_params = sum(p.numel() for p in self.model.encoder.parameters())
            log.info("%s on %s (%s, %d classes, %d train items, %s val, %d test), %s%s, %d epochs x %d steps, device %s"
                     "%s", cfg["model"]["encoder"], cfg["data"]["dataset"], cfg["data"]["modality"], d.num_classes,
                     len(d.train), "no" if d.val is None else len(d.val), len(d.test),
                     f"{enc_params:,} parameters", " + STD-CL head" if cfg["stdcl"]["enabled"] else "",
                     self.epochs, self.steps_per_epoch, self.device,
                     f", {self.dist.world_size} processes" if self.dist.enabled else "")
            if d.val is None:
                log.warning("no validation split (data.val_fraction=0): `best` is not written")
        log_every = int(cfg["train"]["log_every"])
        eval_every = int(cfg["train"]["eval_every"])
        ckpt_every = cfg["train"].get("checkpoint_every_steps")
        stop_after = cfg["debug"].get("stop_after_steps")
        nan_at = cfg["debug"].get("nan_at_step")
        clip = cfg["optim"].get("grad_clip")
        world = self.dist.world_size

        while self.epoch < self.epochs and not self._finished():
            epoch = self.epoch
            self.sampler.set_epoch(epoch, self.batch_in_epoch)
            gen = torch.Generator()
            gen.manual_seed((int(cfg["seed"]) * 1_000_003 + epoch * 7919 + self.dist.rank) % 2**63)
            loader = DataLoader(d.train, batch_sampler=self.sampler, num_workers=self.num_workers,
                                pin_memory=self.device.type == "cuda", worker_init_fn=worker_init_fn, generator=gen)
            self.model.train()
            self.window = _Window.from_state(self._meters.get("window"))
            self.epoch_meter = _Window.from_state(self._meters.get("epoch"))
            self._meters = {}
            bar = progress(loader, f"epoch {epoch + 1}/{self.epochs}", total=len(self.sampler),
                           disable=self.disable_progress, unit="batch")
            for x, y, idx in bar:
                lr = self.schedule.apply(self.optimizer, epoch, self.batch_in_epoch)
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                idx = idx.to(self.device, non_blocking=True)
                values, correct = self._step(x, y, idx, clip, nan_at, lr)
                self.global_step += 1
                self.batch_in_epoch += 1
                n = x.shape[0] * world
                self.window.add(values, n, correct)
                self.epoch_meter.add(values, n, correct)
                fault_point("step")
                if self.global_step % log_every == 0:
                    rec = {"kind": "step", "epoch": epoch + 1, "global_step": self.global_step, "lr": lr} | \
                        self.window.summary()
                    self.metrics.write(rec)
                    self._tb_scalars("step", rec)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}", lr=f"{lr:.3g}")
                    self.window = _Window()
                if ckpt_every and self.global_step % int(ckpt_every) == 0:
                    self._save()
                if stop_after and self.global_step == int(stop_after):
                    self._save()
                    raise StopRequested
                if self._finished():
                    break
            end_of_epoch = self.batch_in_epoch >= self.steps_per_epoch
            summary = self.epoch_meter.summary()
            do_eval = self._finished() or (end_of_epoch and eval_every > 0 and (epoch + 1) % eval_every == 0)
            evals = self._evaluate() if do_eval else {}
            self.last_eval = evals or self.last_eval
            rec = {"kind": "epoch", "epoch": epoch + 1, "global_step": self.global_step,
                   "lr": self.optimizer.param_groups[0]["lr"]} | {f"train_{k}": v for k, v in summary.items()} | evals
            improved = evals.get("val_top1") is not None and (self.best["val_top1"] is None
                                                                or evals["val_top1"] > self.best["val_top1"])
            if improved:
                self.best = {"val_top1": evals["val_top1"], "test_top1": evals.get("test_top1"),
                             "epoch": epoch + 1, "global_step": self.global_step}
            rec["best_val_top1"] = self.best["val_top1"]
            self.metrics.write(rec)
            self._tb_scalars("epoch", rec)
            if self.is_main:
                log.info("epoch %d/%d: loss %.4f, train acc %.2f%%%s%s, %.0f samples/s", epoch + 1, self.epochs,
                         summary.get("loss", float("nan")), 100 * summary["acc"],
                         f", val {100 * evals['val_top1']:.2f}%" if "val_top1" in evals else "",
                         f", test {100 * evals['test_top1']:.2f}%" if "test_top1" in evals else "",
                         summary["samples_per_s"])
            if end_of_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                self.window, self.epoch_meter = _Window(), _Window()
            self._save(best=evals if improved else None)

        result = {"run_dir": str(self.run_dir), "global_step": self.global_step, "epochs": self.epoch,
                  "best": self.best, "final": self.last_eval, "stopped": False}
        if self.is_main:
            self.metrics.write({"kind": "final", "global_step": self.global_step} | self.last_eval
                               | {"best": self.best})
            write_json_atomic(self.run_dir / SUMMARY, result)
            keep_latest_state(self.run_dir)
            log.info("done: %d steps; best val top-1 %s (epoch %s, test %s); last test top-1 %s", self.global_step,
                     _pct(self.best.get("val_top1")), self.best.get("epoch"), _pct(self.best.get("test_top1")),
                     _pct(self.last_eval.get("test_top1")))
        return result

    def _step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, clip: float | None, nan_at: int | None,
              lr: float) -> tuple[dict[str, float], int]:
        self.optimizer.zero_grad(set_to_none=True)
        amp = self.amp_dtype
        with autocast(self.device, amp):
            out = self.ddp(x, labels=y, indices=idx)
        logits = out["logits"].float()
        ce = F.cross_entropy(logits, y)
        total = ce
        values: dict[str, Any] = {}
        con = out.get("contrastive")
        if con is not None:
            loss_cfg = self.cfg["stdcl"]["loss"]
            factor = contrastive_factor(self.epoch + self.batch_in_epoch / max(self.steps_per_epoch, 1),
                                        float(loss_cfg.get("start_epoch") or 0), float(loss_cfg.get("ramp_epochs") or 0))
            term = con["loss"] * factor  # before start_epoch the banks fill, the term adds 0 (graph kept for DDP)
            if self.dist.enabled:
                term = term * self._contrastive_scale(con, y.shape[0])
            total = total + term
            values.update({k: v for k, v in con.items() if k != "loss"})
            values["contrastive_factor"] = factor
        if nan_at is not None and self.global_step + 1 == int(nan_at):
            total = total * float("nan")
        check = torch.stack([total.detach().float(), ce.detach().float(),
                             (logits.argmax(1) == y).sum().float()])
        check = D.all_reduce_sum(check, self.dist)
        loss_v, ce_v, correct = (float(v) for v in check.tolist())
        world = self.dist.world_size
        if not math.isfinite(loss_v):
            where = (f"the last good checkpoint is {self.run_dir / LAST} (global step {self.last_saved_step})"
                     if self.last_saved_step is not None else "no checkpoint was saved before it")
            raise TrainingDiverged(f"loss is {loss_v} at epoch {self.epoch + 1}, global step {self.global_step + 1} "
                                   f"(lr {lr:.3g}); training stopped; {where}")
        self.scaler.scale(total).backward()
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = {"loss": loss_v / world, "ce": ce_v / world} | {k: float(v) for k, v in values.items()}
        return values, int(correct)

    def _contrastive_scale(self, con: dict[str, Any], batch: int) -> float:
        """Make the data-parallel gradient that of the global batch's contrastive mean.

        Each rank's term is a mean over its own valid anchors and DDP averages the ranks, so
        ranks with few valid anchors would weigh as much as ranks with many. Scaling rank
        ``r``'s term by ``world * n_r / N`` (``n_r`` its valid anchors, ``N`` all ranks') gives
        exactly ``sum of rows / all valid rows``, the single-process loss of the global batch.
        Both branches share one valid mask (their banks hold the same slots), so one scale fits.
        """
        branch = next(k for k in con if k.startswith("valid_frac_"))
        n_local = round(float(con[branch]) * batch)
        total = D.all_reduce_sum(torch.tensor([float(n_local)], device=self.device), self.dist).item()
        return self.dist.world_size * n_local / total if total > 0 else 0.0

    def _tb_scalars(self, kind: str, rec: dict[str, Any]) -> None:
        if self._tb is None:
            return
        for k, v in rec.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "global_step"):
                self._tb.add_scalar(f"{kind}/{k}", v, rec["global_step"])


def _json_object(path: Path) -> bool:
    """Whether ``path`` holds a JSON object."""
    try:
        return isinstance(read_json(path), dict)
    except DataError:
        return False


def _checkpoint_step(path: Path) -> int | None:
    """The global step of an intact encoder checkpoint (weights, metadata and head all readable), else None."""
    from stdcl.checkpoint import read_meta, read_tensors
    from stdcl.head.checkpoint import head_path

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


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def train(cfg: dict[str, Any], run_dir: str | os.PathLike, resume: bool = False,
          show_progress: bool | None = None) -> dict[str, Any]:
    """Run :class:`Trainer`; returns its summary."""
    return Trainer(cfg, run_dir, resume=resume, show_progress=show_progress).run()


def resume_config(run_dir: str | os.PathLike, overrides: list[str] = ()) -> dict[str, Any]:
    """The saved config of a run with ``key=value`` overrides applied (validated). A ``config.yaml`` that
    is damaged or no longer valid is a one-line :class:`DataError` naming it (an override may mend it)."""
    from stdcl.train.config import check_keys, parse_override, read_yaml, schema, set_dotted, validate

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG}); nothing to resume")
    saved = read_yaml(path)
    cfg = copy.deepcopy(saved)
    for o in overrides:
        set_dotted(cfg, *parse_override(o))
    try:
        check_keys(cfg, schema())
        validate(cfg)
    except ConfigError as e:
        try:  # the file alone: is it the file or an override that is wrong?
            check_keys(saved, schema())
            validate(saved)
        except ConfigError:
            raise DataError(path, f"{e} (edit the file, or give the key as key=value, to resume)") from None
        raise
    return cfg


__all__ = ["Trainer", "TrainingDiverged", "resolve_device", "resume_config", "train"]
