"""Where each run of a grid stands (new / partial / running / finished / failed / changed), and how long
the rest will take on this machine.

Runs live in ``RUNS/<cell name>/`` (a normal ``stdcl train`` run directory); the runner keeps
``RUNS/logs/<cell>.log`` (the run's output), ``<cell>.failed.json`` (exit code and last log line
of the latest failure) and ``<cell>.lock`` (pid of the process running it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdcl.errors import ConfigError, StdclError
from stdcl.experiment.grid import Cell, Grid, config_digest

STATUSES = ("new", "partial", "running", "finished", "failed", "changed")
LOGS = "logs"


@dataclass
class RunStatus:
    """One cell's run: its status, how far it got and the expected time for what is left."""

    cell: Cell
    run_dir: Path
    status: str
    step: int | None = None
    total_steps: int | None = None
    message: str = ""
    expected_s: float | None = None  # for the remaining steps
    estimate_source: str = ""

    @property
    def fraction(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return min(self.step / self.total_steps, 1.0)


def runs_root(grid: Grid, runs: str | os.PathLike | None = None) -> Path:
    """``--runs`` > the grid's ``runs:`` > ``$STDCL_RUNS/<name>`` > ``runs/<name>``."""
    if runs is not None:
        return Path(runs).expanduser().resolve()
    if grid.runs is not None:
        return grid.runs
    env = os.environ.get("STDCL_RUNS")
    return (Path(env).expanduser() / grid.name if env else Path("runs") / grid.name).resolve()


def project_root(path: str | os.PathLike) -> Path | None:
    """The nearest folder above ``path`` with a ``pyproject.toml`` or ``.git`` (None if there is none)."""
    for folder in Path(path).resolve().parents:
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder
    return None


def results_dir(grid: Grid, results: str | os.PathLike | None = None) -> Path:
    """``--results`` > ``results/<name>`` in the project holding the grid file (:func:`project_root`),
    else in the working directory; so the records land in the same place wherever the command runs."""
    if results is not None:
        return Path(results).expanduser().resolve()
    base = (project_root(grid.path) if grid.path is not None else None) or Path.cwd()
    return (base / "results" / grid.name).resolve()


def log_path(root: Path, cell: Cell, suffix: str = ".log") -> Path:
    return root / LOGS / f"{cell.name}{suffix}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or not JSON (callers check the shape)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _run_digest(run_dir: Path) -> str | None:
    """The digest of a run's ``config.yaml``, keys added to ``base.yaml`` since it ran taking their defaults."""
    from stdcl.train.config import deep_merge, read_yaml, schema

    try:
        return config_digest(deep_merge(schema(), read_yaml(run_dir / "config.yaml")))
    except (StdclError, OSError):
        return None


def cell_status(cell: Cell, root: Path, digest: str | None = None, results: Path | None = None) -> RunStatus:
    """The status of ``cell``'s run under ``root`` (``digest``: the cell's config digest, if known).

    With ``results``, a cell whose run directory is gone but whose results record (same digest)
    is kept counts as ``recorded``: done, and not run again.
    """
    from stdcl.train.run_dir import SUMMARY, read_metrics

    d = root / cell.name
    st = RunStatus(cell=cell, run_dir=d, status="new")
    info = read_json(d / "run.json")
    if isinstance(info, dict) and isinstance(info.get("total_steps"), int):
        st.total_steps = info["total_steps"]
    steps = [r.get("global_step") for r in read_metrics(d)] if d.is_dir() else []
    steps = [s for s in steps if isinstance(s, int)]
    st.step = max(steps) if steps else None
    lock = read_json(log_path(root, cell, ".lock"))
    if isinstance(lock, dict) and isinstance(lock.get("pid"), int) and pid_alive(lock["pid"]) \
            and lock.get("host") == os.uname().nodename:
        st.status, st.message = "running", f"pid {lock['pid']}"
        return st
    if (d / SUMMARY).is_file():
        st.status = "finished"
        st.step = st.total_steps or st.step
        if digest is not None and _run_digest(d) not in (None, digest):
            st.status = "changed"
            st.message = "the grid's config for this cell differs from the run's config.yaml"
        return st
    failed = read_json(log_path(root, cell, ".failed.json"))
    if isinstance(failed, dict):
        st.status = "failed"
        st.message = f"exit {failed.get('exit_code')}: {failed.get('last_line', '')}"
        return st
    if (d / "config.yaml").is_file():
        st.status = "partial"
        if digest is not None and _run_digest(d) not in (None, digest):
            st.status, st.message = "changed", "the grid's config for this cell differs from the run's config.yaml"
    elif not d.exists() and results is not None and digest is not None and _recorded(results, cell, digest):
        st.status, st.message = "recorded", "run directory gone; its results record is kept"
    return st


def _recorded(results: Path, cell: Cell, digest: str) -> bool:
    from stdcl.experiment.records import read_record, record_path

    path = record_path(results, cell.name)
    if not path.is_file():
        return False
    try:
        return read_record(path)["config_digest"] == digest
    except (StdclError, OSError):
        return False


def _measured_seconds_per_sample(statuses: list[RunStatus]) -> dict[str, float]:
    """Seconds per training sample, per encoder, measured in this grid's own runs (step records)."""
    from stdcl.train.run_dir import read_metrics

    out: dict[str, list[float]] = {}
    for st in statuses:
        if st.status not in ("finished", "partial", "running", "failed"):
            continue
        recs = [r for r in read_metrics(st.run_dir) if r.get("kind") == "step"]
        rates = [float(r["samples_per_s"]) for r in recs if isinstance(r.get("samples_per_s"), (int, float))
                 and r["samples_per_s"] > 0]
        if rates:
            enc = st.cell.resolved_config()["model"]["encoder"]
            out.setdefault(enc, []).append(len(rates) / sum(rates))  # harmonic mean of the rates
    return {k: sum(v) / len(v) for k, v in out.items()}


def plan(grid: Grid, root: Path, device: str = "cpu", results: Path | None = None) -> list[RunStatus]:
    """Every cell's status and the expected time of what is left.

    The per-sample cost comes from this grid's own runs of the same encoder when there are any
    (measured on this machine, with the thread count they ran with), else from the Fine-tune
    cost table (each encoder's registered ``cpu_cost``, NTU-sized input, scaled
    by window).
    """
    from stdcl.train.estimate import EVAL_COST, data_sizes, expected_seconds, planned_steps

    statuses = []
    sizes: dict[str, dict[str, Any] | None] = {}
    configs = {}
    for cell in grid.cells:
        cfg = cell.resolved_config()
        configs[cell.name] = cfg
        statuses.append(cell_status(cell, root, config_digest(cfg), results))
    measured = _measured_seconds_per_sample(statuses)
    for st in statuses:
        if st.status in ("finished", "recorded", "changed"):
            st.expected_s = None if st.status == "changed" else 0.0
            continue
        cfg = configs[st.cell.name]
        key = json.dumps(cfg["data"], sort_keys=True, default=str)
        if key not in sizes:
            try:
                sizes[key] = data_sizes(cfg["data"])
            except (StdclError, OSError) as e:
                sizes[key] = {"error": str(e)}
        sz = sizes[key]
        if "error" in sz:
            st.message = st.message or f"no estimate: data not readable here ({sz['error']})"
            continue
        try:
            steps, epochs = planned_steps(cfg, sz["train_items"])
        except ConfigError as e:
            st.message = str(e)
            continue
        st.total_steps = st.total_steps or steps
        left = 1.0 - (st.fraction or 0.0)
        enc = cfg["model"]["encoder"]
        eval_n = (sz["val"] + (sz["test"] if cfg["train"]["test_during_training"] else 0)) * math.ceil(epochs)
        if enc in measured and device == "cpu":
            per = measured[enc]
            st.expected_s = left * (epochs * sz["train_items"] + EVAL_COST * eval_n) * per
            st.estimate_source = "measured in this grid's runs"
        else:
            st.expected_s = left * expected_seconds(enc, sz["train_items"], epochs, device=device,
                                                    window=int(cfg["data"]["window"] or 64),
                                                    num_eval_samples=eval_n // max(math.ceil(epochs), 1),
                                                    joints_persons=max(sz["joints"] * sz["persons"], 1))
            st.estimate_source = "cost table, scaled by window and joints x persons"
    return statuses


def format_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
