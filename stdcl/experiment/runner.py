"""Running a grid: every cell that is not finished, as ``stdcl train`` subprocesses.

Locally, ``workers`` runs go at once, each with an even share of the CPU threads or one GPU of
``gpus`` (``CUDA_VISIBLE_DEVICES``); with ``ddp`` each run instead uses every listed GPU through
``torchrun``, one run at a time. A run that was interrupted continues with ``stdcl train
--resume`` (exact resume; ``checkpoint_every_steps`` bounds what a kill loses). A failed run
never stops the others: it is reported with the last line of its log. Each finished run writes
its results record into the run directory's grid results folder.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stdcl.errors import ConfigError
from stdcl.experiment.grid import Cell, Grid, config_digest
from stdcl.experiment.records import build_record, record_path, write_record
from stdcl.experiment.status import cell_status, log_path, read_json
from stdcl.io import make_folder, write_json_atomic


@dataclass
class RunOptions:
    """How runs are executed (none of these change what a run computes)."""

    workers: int = 1
    threads: int | None = None  # per run (default: usable CPUs // workers)
    gpus: tuple[str, ...] = ()
    ddp: bool = False
    checkpoint_every_steps: int | None = 200
    data_workers: int | None = None
    device: str | None = None  # cpu, cuda (default: the config's, auto; cuda with gpus)
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    cell: str
    ok: bool
    exit_code: int | None
    message: str
    final_test_top1: float | None = None
    seconds: float = 0.0


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def last_line(path: Path) -> str:
    """The last non-empty line of a log (tqdm carriage returns split too)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def train_command(cell: Cell, run_dir: Path, opts: RunOptions, resume: bool) -> list[str]:
    """The command line that trains (or resumes) ``cell`` into ``run_dir``."""
    execution = []
    if opts.checkpoint_every_steps:
        execution.append(f"train.checkpoint_every_steps={int(opts.checkpoint_every_steps)}")
    if opts.data_workers is not None:
        execution.append(f"data.num_workers={int(opts.data_workers)}")
    device = opts.device or ("cuda" if opts.gpus else None)
    if device:
        execution.append(f"device={device}")
    if resume:
        train = ["train", "--resume", str(run_dir), "--no-progress"] + execution
    else:
        train = ["train"] + cell.train_args() + execution + ["--out", str(run_dir), "--no-progress"]
    if opts.ddp and len(opts.gpus) > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(len(opts.gpus)), "-m", "stdcl"] + train
    return [sys.executable, "-m", "stdcl"] + train


def _clear_stale_start(run_dir: Path) -> None:
    """A run that died before its first save has a config but no resume state: set it aside."""
    from stdcl.train.run_dir import has_state

    if run_dir.is_dir() and not has_state(run_dir):
        aside = run_dir.with_name(f"{run_dir.name}.abandoned-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)


def write_missing_records(grid: Grid, root: Path, results: Path) -> list[str]:
    """Write the results record of every finished run that has none (or an outdated one)."""
    written = []
    for cell in grid.cells:
        digest = config_digest(cell.resolved_config())
        st = cell_status(cell, root, digest)
        if st.status != "finished":
            continue
        target = record_path(results, cell.name)
        rec = build_record(st.run_dir, grid.name, cell.name, cell.values, digest, cell.train_args())
        old = read_json(target)
        if not isinstance(old, dict) or old.get("config_digest") != digest or old.get("epochs") != rec["epochs"]:
            write_record(target, rec)
            written.append(cell.name)
    return written


def run_cell(grid: Grid, cell: Cell, root: Path, results: Path, opts: RunOptions,
             env_slot: dict[str, str] | None = None, stop: threading.Event | None = None,
             procs: dict[str, subprocess.Popen] | None = None) -> Outcome:
    """Train (or resume) one cell to the end; never raises for a failed run."""
    from stdcl.train.state import STATE_JSON

    digest = config_digest(cell.resolved_config())
    st = cell_status(cell, root, digest, results)
    if st.status in ("finished", "recorded"):
        return Outcome(cell.name, True, 0, "already " + st.status)
    if st.status in ("running", "changed"):
        return Outcome(cell.name, False, None, f"{st.status}: {st.message}")
    run_dir = st.run_dir
    resume = (run_dir / STATE_JSON).is_file()
    if not resume:
        _clear_stale_start(run_dir)
    log = log_path(root, cell)
    log.parent.mkdir(parents=True, exist_ok=True)
    failed = log_path(root, cell, ".failed.json")
    failed.unlink(missing_ok=True)
    cmd = train_command(cell, run_dir, opts, resume)
    env = dict(os.environ) | opts.extra_env | (env_slot or {})
    lock = log_path(root, cell, ".lock")
    t0 = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        write_json_atomic(lock, {"pid": proc.pid, "host": os.uname().nodename, "started": time.time()})
        if procs is not None:
            procs[cell.name] = proc
        try:
            code = proc.wait()
        finally:
            if procs is not None:
                procs.pop(cell.name, None)
            lock.unlink(missing_ok=True)
    seconds = time.monotonic() - t0
    if stop is not None and stop.is_set():
        return Outcome(cell.name, False, code, "interrupted (resumes next time)", seconds=seconds)
    st = cell_status(cell, root, digest)
    if code == 0 and st.status == "finished":
        rec = build_record(run_dir, grid.name, cell.name, cell.values, digest, cell.train_args())
        write_record(run_dir / "record.json", rec)
        write_record(record_path(results, cell.name), rec)
        return Outcome(cell.name, True, 0, "finished", rec.get("final_test_top1"), seconds)
    line = last_line(log) or f"exit code {code}"
    if code == 0:  # the process ended well but the run does not look finished: say what it looks like
        line = f"exited 0 but the run is {st.status}{f' ({st.message})' if st.message else ''}; last log line: {line}"
    write_json_atomic(failed, {"exit_code": code, "last_line": line, "log": str(log), "time": time.time()})
    return Outcome(cell.name, False, code, line, seconds=seconds)


def _slots(opts: RunOptions) -> list[dict[str, str]]:
    """One environment per concurrent run: its threads and its GPU(s)."""
    if opts.ddp:
        if not opts.gpus:
            raise ConfigError("--ddp needs --gpus (the GPUs one run spreads over)")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(opts.gpus)}]
    workers = max(1, int(opts.workers))
    if opts.gpus and workers > len(opts.gpus):
        raise ConfigError(f"{workers} workers but {len(opts.gpus)} GPUs: one GPU per run (or fewer workers)")
    threads = opts.threads or max(1, usable_cpus() // workers)
    slots = []
    for i in range(workers):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if opts.gpus:
            env["CUDA_VISIBLE_DEVICES"] = opts.gpus[i]
        slots.append(env)
    return slots


def run_grid(grid: Grid, root: Path, results: Path, opts: RunOptions, only: list[str] | None = None,
             report: Callable[[str], None] | None = None, show_progress: bool | None = None) -> list[Outcome]:
    """Run every unfinished cell (or those named in ``only``) with ``opts.workers`` at once."""
    from stdcl.logs import progress

    if report is None:
        from tqdm import tqdm

        report = tqdm.write
    make_folder(root)
    make_folder(results)
    for name in write_missing_records(grid, root, results):
        report(f"record written for finished run {name}")
    cells = [c for c in grid.cells if only is None or c.name in only]
    unknown = set(only or ()) - {c.name for c in grid.cells}
    if unknown:
        raise ConfigError(f"{grid.path}: no cell named {', '.join(sorted(unknown))}")
    todo = []
    for c in cells:
        st = cell_status(c, root, config_digest(c.resolved_config()), results)
        if st.status in ("finished", "recorded"):
            continue
        if st.status in ("running", "changed"):
            report(f"skip {c.name}: {st.status} ({st.message})")
            continue
        todo.append(c)
    slots = _slots(opts)
    report(f"{grid.name}: {len(todo)} of {len(cells)} runs to do, {len(slots)} at once -> {root}")
    jobs: queue.Queue[Cell] = queue.Queue()
    for c in todo:
        jobs.put(c)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()
    procs: dict[str, subprocess.Popen] = {}
    bar = progress(range(len(todo)), f"grid {grid.name}", total=len(todo), disable=show_progress is False,
                   unit="run")
    tick = iter(bar)

    def worker(slot: dict[str, str]) -> None:
        while not stop.is_set():
            try:
                cell = jobs.get_nowait()
            except queue.Empty:
                return
            with lock:
                report(f"start {cell.name} ({' '.join(f'{k}={v}' for k, v in slot.items())})")
            out = run_cell(grid, cell, root, results, opts, slot, stop, procs)
            with lock:
                outcomes.append(out)
                if out.ok:
                    acc = "" if out.final_test_top1 is None else f": final test top-1 {100 * out.final_test_top1:.2f}%"
                    report(f"done  {cell.name}{acc} ({out.seconds / 60:.1f} min)")
                else:
                    report(f"FAIL  {cell.name} (exit {out.exit_code}): {out.message}")
                next(tick, None)

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in slots]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        for p in list(procs.values()):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for t in threads:
            t.join(30)
        raise
    finally:
        close = getattr(bar, "close", None)
        if close:
            close()
    return outcomes


def remove_run(root: Path, cell: Cell, results: Path | None = None) -> None:
    """Delete a cell's run directory, its logs and (with ``results``) its record (``--rerun``)."""
    shutil.rmtree(root / cell.name, ignore_errors=True)
    if results is not None:
        record_path(results, cell.name).unlink(missing_ok=True)
    for suffix in (".log", ".failed.json"):
        log_path(root, cell, suffix).unlink(missing_ok=True)


__all__ = ["Outcome", "RunOptions", "remove_run", "run_cell", "run_grid", "train_command", "usable_cpus",
           "write_missing_records"]
