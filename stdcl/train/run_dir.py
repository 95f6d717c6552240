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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stdcl.errors import ConfigError, DataError
from stdcl.io import make_folder, write_text_atomic

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
SUMMARY = "summary.json"


def prepare_new(run_dir: str | os.PathLike) -> Path:
    """Create ``run_dir``; an existing non-empty directory is an error (no prompts)."""
    p = Path(run_dir)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ConfigError(f"{p} already exists; continue it with `stdcl train --resume {p}` "
                          "or choose another --out")
    make_folder(p)
    return p


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

    def truncate_after(self, global_step: int) -> None:
        """Keep only the complete records up to ``global_step`` (resume: no duplicated steps)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a partial last line from a killed run
            if int(rec.get("global_step", 0)) <= global_step and rec.get("kind") != "final":
                keep.append(line)
        write_text_atomic(self.path, "".join(k + "\n" for k in keep))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics log; a line cut short (a killed run, a write in progress) is skipped."""
    p = Path(run_dir) / METRICS
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
