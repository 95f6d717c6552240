"""``stdcl bench gpu``: one prepared check of every CUDA path, sized to run once in minutes on one GPU.

Parts, in order (each its own time budget, see :data:`PARTS`): environment, loss (device vs CPU
value, batched vs the released loop), AMP (fp32 / fp16 / bf16 from the same seed and batches),
train-step overhead, DDP (one process per GPU, SyncBatchNorm, gathered banks), a Fine-tune job
through the app's job manager vs its estimate, and with the time left the NW-UCLA CTR-GCN
reference recipe (baseline and STD-CL, two concurrent resumable processes).

One JSON (``gpu-check.json``) is rewritten atomically after every part (and inside long parts),
so a run killed at its time limit keeps what it measured; each part records ``status``
(``ok`` / ``failed`` / ``skipped``; ``pending`` only while it runs or if the process was killed),
its ``error`` line, ``seconds``, ``budget_s`` and ``result``. The log is ``gpu-check.log``.
``--device cpu --tiny`` runs every part on the CPU with a few steps (the CPU test).
"""

from __future__ import annotations

import logging
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from stdcl.bench import gpu_parts as P
from stdcl.bench import gpu_runs as R
from stdcl.bench.gpu_context import BudgetExceeded, Context, PartSkipped
from stdcl.errors import ConfigError
from stdcl.io import make_folder, write_json_atomic
from stdcl.logs import progress

log = logging.getLogger("stdcl.bench.gpu")

JSON_NAME, LOG_NAME = "gpu-check.json", "gpu-check.log"
STATUSES = ("pending", "ok", "failed", "skipped")


@dataclass(frozen=True)
class Part:
    """One part: its function ``fn(ctx, result)`` fills ``result`` in place; ``share`` of the time left
    (against the parts still to run) is its budget; it is skipped when that is under ``min_s``."""

    name: str
    fn: Callable[[Context, dict[str, Any]], None]
    share: float
    min_s: float
    min_s_tiny: float


def part_names() -> list[str]:
    """The parts, in the order they run."""
    return [p.name for p in _parts()]


def _parts() -> list[Part]:
    return [Part("environment", P.environment, 1, 1, 0.1), Part("loss", P.loss_check, 5, 10, 0.5),
            Part("amp", P.amp_check, 18, 20, 1), Part("train_step", P.train_step_check, 16, 15, 1),
            Part("ddp", R.ddp_check, 10, 20, 1), Part("finetune_job", R.finetune_job, 15, 25, 1),
            Part("ucla", R.ucla_recipe, 35, 60, 1)]


def _budget(parts: list[Part], i: int, left: float) -> float:
    """Part ``i``'s budget: its share of ``left`` among the parts still to run (the last gets all)."""
    rest = sum(p.share for p in parts[i:])
    return left * parts[i].share / rest


def _resolve_device(name: str) -> torch.device:
    if name not in ("cuda", "cpu"):
        raise ConfigError(f"--device must be cuda or cpu, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device (torch "
                          f"{torch.__version__}); use --device cpu for the CPU rehearsal")
    return torch.device("cuda:0" if name == "cuda" else "cpu")


def run_gpu_check(out: str | Path, device: str = "cuda", tiny: bool = False, budget_s: float = 540.0,
                  ucla: str | Path | None = None, parts: list[Part] | None = None,
                  only: list[str] | None = None) -> dict[str, Any]:
    """Run every part within ``budget_s`` seconds; returns the report (also ``out/gpu-check.json``).

    ``parts`` replaces the parts list (tests); ``only`` keeps the named parts (a rerun of some, e.g. after a
    fix). A part that raises is recorded as failed and the next one runs; a part whose budget is below its
    minimum is skipped.
    """
    if not budget_s > 0:
        raise ConfigError(f"--budget-s must be positive, got {budget_s}")
    parts = _parts() if parts is None else parts
    if only is not None:
        unknown = sorted(set(only) - {p.name for p in parts})
        if unknown or not only:
            raise ConfigError(f"--parts: unknown part(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(p.name for p in parts)}")
        parts = [p for p in parts if p.name in only]
    dev = _resolve_device(device)
    out = make_folder(out)
    t0 = time.monotonic()
    handler = logging.FileHandler(out / LOG_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("stdcl")
    root.addHandler(handler)
    old_level = root.level
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)  # the log file holds every part's INFO lines
    report: dict[str, Any] = {
        "format": "stdcl-gpu-check", "version": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(dev), "tiny": bool(tiny), "budget_s": float(budget_s), "only": only,
        "ucla": None if ucla is None else str(ucla), "host": platform.node(), "torch": torch.__version__,
        "complete": False, "elapsed_s": 0.0,
        "parts": {p.name: {"status": "pending", "error": None, "seconds": None, "budget_s": None, "result": {}}
                  for p in parts}}
    path = out / JSON_NAME

    def save() -> None:
        report["elapsed_s"] = round(time.monotonic() - t0, 3)
        write_json_atomic(path, _finite(report))

    ctx = Context(out=out, device=dev, tiny=tiny, ucla=None if ucla is None else Path(ucla),
                  deadline=t0 + float(budget_s), save=save)
    try:
        save()
        for i, part in enumerate(progress(parts, "gpu check", unit="part")):
            rec = report["parts"][part.name]
            left = ctx.deadline - time.monotonic()
            budget = _budget(parts, i, left)
            rec["budget_s"] = round(budget, 3)
            need = part.min_s_tiny if tiny else part.min_s
            if budget < need:
                rec.update(status="skipped", seconds=0.0,
                           error=f"skipped: its budget {max(budget, 0):.1f} s of the {left:.1f} s left is under "
                                 f"the {need:g} s it needs")
                log.warning("gpu check: %s %s", part.name, rec["error"])
                save()
                continue
            log.info("gpu check: part %d/%d %s (budget %.1f s)", i + 1, len(parts), part.name, budget)
            ctx.part_deadline = time.monotonic() + budget
            ts = time.monotonic()
            try:
                part.fn(ctx, rec["result"])
                rec["status"] = "ok"
            except PartSkipped as e:
                rec.update(status="skipped", error=f"skipped: {e}")
                log.warning("gpu check: %s %s", part.name, rec["error"])
            except Exception as e:  # noqa: BLE001 - a failing part is recorded, the rest still run
                rec["status"] = "failed"
                rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
                rec["traceback"] = traceback.format_exc()[-3000:]
                log.error("gpu check: %s failed: %s", part.name, rec["error"])
            finally:
                if ctx.cuda:
                    torch.cuda.empty_cache()
            rec["seconds"] = round(time.monotonic() - ts, 3)
            log.info("gpu check: %s %s in %.1f s", part.name, rec["status"], rec["seconds"])
            save()
        report["complete"] = True
        save()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    return report


def _finite(obj: Any) -> Any:
    """``obj`` with NaN / infinite floats as None (valid JSON) and tuples as lists."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per part: status, seconds and its error or headline figures."""
    lines = []
    for name, rec in report["parts"].items():
        head = rec["result"].get("headline") if isinstance(rec.get("result"), dict) else None
        tail = rec["error"] if rec["status"] != "ok" else (head or "")
        secs = "-" if rec["seconds"] is None else f"{rec['seconds']:.1f} s"
        lines.append(f"  {name:13s} {rec['status']:8s} {secs:>9s}  {tail}")
    return lines


__all__ = ["BudgetExceeded", "Context", "PartSkipped", "JSON_NAME", "LOG_NAME", "Part", "STATUSES", "part_names",
           "run_gpu_check", "summary_lines"]
