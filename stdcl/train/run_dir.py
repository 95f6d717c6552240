"""The run directory: what a training run writes, and how to find it again.

::

    RUN/
      config.yaml            resolved config (every key)
      run.json               version, start time, device, world size, dataset sizes
      val_split.json         the training samples held out for validation (names)
      metrics.jsonl          one JSON record per line: {"kind": "step" | "epoch" | "final", ...}
      train.log              the log of every (resumed) session
      last.safetensors/.json encoder checkpoint (stdcl.checkpoint format) of the latest save
      best.safetensors/.json encoder checkpoint with the best validation top-1
      state.json + state-<step>.safetensors   everything else needed to resume
      summary.json           final metrics (written when the run ends)
      tensorboard/           event files (only when tensorboard is importable)
      probes/                training-time probe snapshots (stdcl.train.probes)

Every file is written atomically (a temporary name, renamed when complete), except the two
logs, which only grow: ``metrics.jsonl`` by one flushed line per record (readers skip a line
cut short; a resume drops it) and ``train.log``. A run killed at any moment therefore leaves
complete files, plus at most a temporary ``.<name>.*.part*`` that the next session removes.

A run that ends before its first checkpoint (a data error on step 1, a kill during start-up)
leaves a *failed attempt*: no training state and no summary, only the files of the layout
above. Such a directory does not block the user: ``stdcl train --out RUN`` may reuse it (the
new run keeps nothing of the attempt but appends to its ``train.log``), and ``stdcl train
--resume RUN`` starts it again from step 0 with its ``config.yaml`` (and any overrides).
A directory with other files, a training state or a summary is never reused.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from stdcl import __version__
from stdcl.errors import ConfigError, DataError
from stdcl.io import make_folder, read_json, write_json_atomic, write_text_atomic
from stdcl.train.config import check_keys, dump_config, parse_override, read_yaml, schema, set_dotted, validate
from stdcl.train.data import TrainData, validation_samples
from stdcl.train.splits import describe_validation

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
SUMMARY = "summary.json"
RUN_INFO = "run.json"
VAL_SPLIT = "val_split.json"
TRAIN_LOG = "train.log"
STATE_JSON = "state.json"
STATE_FILES = "state-*.safetensors"
#: What a run writes before its first checkpoint (the files a failed attempt may hold).
_ATTEMPT_FILES = {CONFIG, RUN_INFO, VAL_SPLIT, METRICS, TRAIN_LOG, "tensorboard", LAST, "last.json",
                  "last.head.safetensors", BEST, "best.json", "best.head.safetensors", "probes"}

_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(\.[^.]+)?$")

log = logging.getLogger("stdcl.train")


def prepare_new(run_dir: str | os.PathLike) -> bool:
    """Create ``run_dir`` for a new run; True when it reused a failed attempt (module docstring).

    An existing directory that is neither empty nor a failed attempt is a :class:`ConfigError` (no prompts).
    """
    p = Path(run_dir)
    if p.is_dir() and is_failed_attempt(p):
        clear_attempt(p)
        return True
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ConfigError(f"{p} already exists; continue it with `stdcl train --resume {p}` "
                          "or choose another --out")
    make_folder(p)
    return False


def open_run_dir(run_dir: str | os.PathLike, resume: bool) -> tuple[str | None, bool, bool]:
    """Create (new run) or check (resume) a run directory (rank 0); returns (a note for the log once
    ``train.log`` is open, whether a resume starts over from step 0, whether this call created the
    directory). A directory that cannot be used is a one-line :class:`ConfigError` or :class:`DataError`."""
    d = Path(run_dir)
    if not resume:
        reused = prepare_new(d)
        return (f"{d}: the previous attempt ended before its first checkpoint; starting afresh here"
                if reused else None), False, not reused
    if not is_run_dir(d):
        raise ConfigError(f"{d}: not a run directory (no {CONFIG}); nothing to resume")
    gone = remove_partial_writes(d)
    if has_state(d):
        return (f"removed {len(gone)} unfinished file(s) of a killed session: {', '.join(gone)}" if gone
                else None), False, False
    if (d / SUMMARY).exists():
        raise DataError(d / STATE_JSON, f"missing: the run ended ({SUMMARY}) but its training state is gone; "
                                        "nothing to resume")
    clear_attempt(d, keep=(TRAIN_LOG, CONFIG))  # the config stays until this start has written its own
    return (f"{d} has no training state (it ended before its first checkpoint): starting it from step 0 with "
            f"its {CONFIG}"), True, False


def remove_failed_start(run_dir: str | os.PathLike) -> None:
    """Undo :func:`open_run_dir` of a new run that failed before writing its config: its ``train.log``
    and the directory go (when nothing else is in it), so that the same command can be retried."""
    d = Path(run_dir)
    (d / TRAIN_LOG).unlink(missing_ok=True)
    try:
        d.rmdir()
    except OSError:
        pass


def has_state(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a training state (``state.json`` or a ``state-<step>.safetensors``)."""
    p = Path(run_dir)
    return (p / STATE_JSON).exists() or any(p.glob(STATE_FILES))


def is_failed_attempt(run_dir: str | os.PathLike) -> bool:
    """A non-empty directory holding only files a run writes before its first checkpoint (no state, no summary)."""
    entries = list(Path(run_dir).iterdir())
    return bool(entries) and all(e.name in _ATTEMPT_FILES or _is_partial(e) for e in entries)


def clear_attempt(run_dir: str | os.PathLike, keep: tuple[str, ...] = (TRAIN_LOG,)) -> None:
    """Remove what a failed attempt wrote (the layout's files and temporary leftovers) but ``keep``."""
    for e in Path(run_dir).iterdir():
        if e.name in keep or not (e.name in _ATTEMPT_FILES or _is_partial(e)):
            continue
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e)
        else:
            e.unlink()


def remove_partial_writes(run_dir: str | os.PathLike) -> list[str]:
    """Delete the temporary files of atomic writes that a killed process left (their names)."""
    gone = []
    for e in Path(run_dir).iterdir():
        if _is_partial(e) and e.is_file():
            e.unlink()
            gone.append(e.name)
    return gone


def _is_partial(entry: Path) -> bool:
    """A temporary file of :func:`stdcl.io.atomic_path` (``.<name>.<8 random characters>.part<suffix>``)."""
    return _PARTIAL.match(entry.name) is not None


def is_run_dir(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG).is_file()


def checkpoint_of(target: str | os.PathLike, which: str = "best") -> Path:
    """The encoder checkpoint of a run (``best``, falling back to ``last``) or the file itself."""
    p = Path(target)
    if p.is_dir():
        if not is_run_dir(p):
            raise DataError(p, f"not a run directory (no {CONFIG})")
        want = p / (BEST if which == "best" else LAST)
        if want.is_file():
            return want
        if which == "best" and (p / LAST).is_file():
            return p / LAST
        raise DataError(want, "no such checkpoint (the run has not saved one yet)")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise DataError(p, "no such checkpoint")
    return p


def write_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    write_text_atomic(run_dir / CONFIG, dump_config(cfg))


def write_run_info(run_dir: Path, cfg: dict[str, Any], data: TrainData, model: torch.nn.Module,
                   device: torch.device, world_size: int, steps_per_epoch: int, total_steps: int) -> None:
    """``run.json``: versions, start time, host, device, model and dataset sizes."""
    d = data
    head = model.head
    info = {"version": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
            "torch": torch.__version__, "device": str(device), "world_size": world_size,
            "encoder": cfg["model"]["encoder"], "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
            "head_parameters": sum(p.numel() for p in head.parameters()) if head is not None else 0,
            "dataset": cfg["data"]["dataset"], "protocol": cfg.get("protocol"),
            "train_items": len(d.train), "val_samples": 0 if d.val is None else len(d.val),
            "test_samples": len(d.test), "classes": d.num_classes, "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps}
    write_json_atomic(run_dir / RUN_INFO, info)


def write_val_split(run_dir: Path, cfg: dict[str, Any], data: TrainData) -> None:
    """``val_split.json``: how the validation samples were held out, and their names (logged too)."""
    d = data
    taken = describe_validation(validation_samples(cfg, d.base), d.base.num_samples, d.base.subjects)
    if taken["by"] != "none":
        log.info("validation: %d training samples (%.1f %%) held out by %s%s", taken["held_out"],
                 100 * taken["held_out_fraction"], taken["by"],
                 f" (subjects {taken['subjects']})" if taken["subjects"] else
                 " (whole subjects would miss the asked fraction)" if d.base.subjects is not None else "")
    write_json_atomic(run_dir / VAL_SPLIT, {"fraction": cfg["data"]["val_fraction"], "seed": cfg["data"]["val_seed"],
                                            **taken, "names": [] if d.val is None else d.val.names})


def damaged_run_files(run_dir: Path) -> tuple[str, ...]:
    """Of ``run.json`` and ``val_split.json``, those that are missing or not a JSON object."""
    return tuple(n for n in (RUN_INFO, VAL_SPLIT) if not _json_object(run_dir / n))


def _json_object(path: Path) -> bool:
    try:
        return isinstance(read_json(path), dict)
    except DataError:
        return False


def resume_config(run_dir: str | os.PathLike, overrides: list[str] = ()) -> dict[str, Any]:
    """The saved config of a run with ``key=value`` overrides applied (validated). A ``config.yaml`` that
    is damaged or no longer valid is a one-line :class:`DataError` naming it (an override may mend it)."""
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


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one flushed line per record)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()

    def truncate_after(self, global_step: int) -> int:
        """Keep only the complete records up to ``global_step`` (resume: no duplicated steps, no final
        record); returns how many damaged lines (cut short, not a record) were dropped with them."""
        if not self.enabled or not self.path.exists():
            return 0
        lines = self.path.read_text(errors="replace").splitlines()
        records = [(line, _record(line)) for line in lines if line.strip()]
        keep = [line for line, rec in records if rec is not None and rec["global_step"] <= global_step
                and rec.get("kind") != "final"]
        write_text_atomic(self.path, "".join(k + "\n" for k in keep))
        return sum(rec is None for _, rec in records)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics log; a line cut short (a killed run, a write in progress) or that
    is not a record (a JSON object with a whole-number ``global_step``) is skipped."""
    p = Path(run_dir) / METRICS
    try:
        text = p.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return []
    return [rec for rec in map(_record, text.splitlines()) if rec is not None]


def _record(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    step = rec.get("global_step") if isinstance(rec, dict) else None
    return rec if isinstance(step, int) and not isinstance(step, bool) else None
