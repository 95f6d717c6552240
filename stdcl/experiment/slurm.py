"""Running a grid on a SLURM cluster: one job array through ``submitit``, one task per unfinished cell.

Each task runs its cell exactly as the local runner does (``stdcl train``, or ``--resume`` when
the run has a saved state) and writes its results record. Tasks are requeued on time-out or
pre-emption (``submitit.helpers.Checkpointable``): the requeued task resumes the run from its
last ``checkpoint_every_steps`` save. The same path runs on one machine with
``cluster="local"`` (submitit's local executor), which is how it is tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdcl.errors import ConfigError
from stdcl.experiment.grid import load_grid
from stdcl.experiment.runner import Outcome, RunOptions, run_cell


@dataclass
class SlurmOptions:
    """What users set for a SLURM submission (``None``: the cluster's default)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: float | None = None
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: tuple[str, ...] = ()  # further `key=value` sbatch options, e.g. ("exclusive=",)


class CellTask:
    """A picklable task: run one cell of a grid file (re-read on the node) to its end."""

    def __init__(self, grid_path: str, cell: str, root: str, results: str, opts: RunOptions):
        self.grid_path, self.cell, self.root, self.results, self.opts = grid_path, cell, root, results, opts

    def __call__(self) -> Outcome:
        grid = load_grid(self.grid_path)
        return run_cell(grid, grid.cell(self.cell), Path(self.root), Path(self.results), self.opts)

    def checkpoint(self) -> Any:
        """Requeue on time-out / pre-emption: the run resumes from its last save."""
        import submitit

        return submitit.helpers.DelayedSubmission(CellTask(self.grid_path, self.cell, self.root, self.results,
                                                           self.opts))


def executor(folder: Path, cluster: str | None, opts: SlurmOptions, name: str) -> Any:
    """A configured ``submitit.AutoExecutor`` (``cluster``: ``None`` auto-detects, ``"slurm"``, ``"local"``)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit (pip install submitit)") from None
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"timeout_min": int(opts.time_min), "cpus_per_task": int(opts.cpus_per_task),
                              "tasks_per_node": 1, "nodes": 1, "name": name,
                              "slurm_array_parallelism": int(opts.array_parallelism)}
    if opts.gpus_per_task:
        params["gpus_per_node"] = int(opts.gpus_per_task)
    if opts.mem_gb:
        params["mem_gb"] = float(opts.mem_gb)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(opts, key):
            params[f"slurm_{key}"] = getattr(opts, key)
    extra = {}
    for item in opts.extra:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"--slurm-option {item!r} is not key=value")
        extra[k] = v
    if extra:
        params["slurm_additional_parameters"] = extra
    ex.update_parameters(**params)
    return ex


def submit_grid(grid_path: str | Path, cells: list[str], root: Path, results: Path, opts: SlurmOptions,
                cluster: str | None = "slurm") -> list[Any]:
    """Submit one array task per cell; returns the submitit jobs (``job.result()`` is an :class:`Outcome`)."""
    grid = load_grid(grid_path)
    run_opts = RunOptions(workers=1, threads=opts.cpus_per_task,
                          device="cuda" if opts.gpus_per_task else "cpu")
    ex = executor(root / "slurm", cluster, opts, f"stdcl-{grid.name}")
    tasks = [CellTask(str(Path(grid_path).resolve()), c, str(root), str(results), run_opts) for c in cells]
    if not tasks:
        return []
    with ex.batch():
        jobs = [ex.submit(t) for t in tasks]
    return jobs
