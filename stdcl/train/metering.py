"""What a run reports: running averages of the step quantities, ``metrics.jsonl`` records, the
TensorBoard scalars, the log lines and ``train.log``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from stdcl.train.run_dir import METRICS, TRAIN_LOG, MetricsLog

log = logging.getLogger("stdcl.train")


class Window:
    """Running sums of the logged step quantities (a log interval, or an epoch)."""

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
    def from_state(cls, st: dict[str, Any] | None) -> "Window":
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


class Recorder:
    """``metrics.jsonl`` and TensorBoard of a run; only rank 0 (``enabled``) writes."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = run_dir
        self.metrics = MetricsLog(run_dir / METRICS, enabled=enabled)
        self.enabled = enabled
        self._tb = None

    def open_tensorboard(self, setting: bool | str) -> None:
        """Start the event files (``train.tensorboard``: ``auto`` when installed, true, false)."""
        if not self.enabled or setting is False:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency
        except ImportError:
            if setting is True:
                log.warning("train.tensorboard is true but tensorboard is not installed; skipping it")
            return
        self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def write(self, rec: dict[str, Any], scalars: str | None = None) -> None:
        """Append ``rec`` to ``metrics.jsonl``; with ``scalars`` (``step``, ``epoch``) its numbers also go to
        TensorBoard under ``<scalars>/<key>``."""
        self.metrics.write(rec)
        if self._tb is None or scalars is None:
            return
        for k, v in rec.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "global_step"):
                self._tb.add_scalar(f"{scalars}/{k}", v, rec["global_step"])

    def truncate_after(self, global_step: int) -> None:
        """Resume: drop the records after ``global_step`` (and damaged lines, with a warning)."""
        dropped = self.metrics.truncate_after(global_step)
        if dropped:
            log.warning("%s: dropped %d damaged line(s) (cut short or not a record)", self.metrics.path, dropped)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class TrainLog:
    """``train.log``: every ``stdcl`` log record of the session appended to the run's file (rank 0)."""

    def __init__(self, run_dir: Path):
        self.handler: logging.Handler | None = logging.FileHandler(run_dir / TRAIN_LOG)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("stdcl").addHandler(self.handler)

    def session_ended(self, e: BaseException) -> None:
        """Say why the session ended, whatever the log level."""
        if self.handler is not None:
            self.handler.handle(logging.LogRecord(log.name, logging.ERROR, __file__, 0, "session ended: %s: %s",
                                                  (type(e).__name__, e), None))

    def close(self) -> None:
        if self.handler is not None:
            logging.getLogger("stdcl").removeHandler(self.handler)
            self.handler.close()
            self.handler = None


def log_start(cfg: dict[str, Any], data: Any, enc_params: int, epochs: int, steps_per_epoch: int, device: Any,
              world_size: int | None) -> None:
    """The first line of a session: what trains on what, for how long, where."""
    d = data
    log.info("%s on %s (%s, %d classes, %d train items, %s val, %d test), %s%s, %d epochs x %d steps, device %s"
             "%s", cfg["model"]["encoder"], cfg["data"]["dataset"], cfg["data"]["modality"], d.num_classes,
             len(d.train), "no" if d.val is None else len(d.val), len(d.test),
             f"{enc_params:,} parameters", " + STD-CL head" if cfg["stdcl"]["enabled"] else "",
             epochs, steps_per_epoch, device, f", {world_size} processes" if world_size else "")
    if d.val is None:
        log.warning("no validation split (data.val_fraction=0): `best` is not written")


def log_epoch(epoch: int, epochs: int, summary: dict[str, float], evals: dict[str, Any]) -> None:
    """One line per epoch: loss, training accuracy, validation / test top-1, throughput."""
    log.info("epoch %d/%d: loss %.4f, train acc %.2f%%%s%s, %.0f samples/s", epoch, epochs,
             summary.get("loss", float("nan")), 100 * summary["acc"],
             f", val {100 * evals['val_top1']:.2f}%" if "val_top1" in evals else "",
             f", test {100 * evals['test_top1']:.2f}%" if "test_top1" in evals else "",
             summary["samples_per_s"])


def log_done(global_step: int, best: dict[str, Any], last_eval: dict[str, Any]) -> None:
    log.info("done: %d steps; best val top-1 %s (epoch %s, test %s); last test top-1 %s", global_step,
             _pct(best.get("val_top1")), best.get("epoch"), _pct(best.get("test_top1")),
             _pct(last_eval.get("test_top1")))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"
