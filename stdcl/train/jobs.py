"""Background training jobs: one ``stdcl train`` subprocess at a time, its state kept in files.

The app's Fine-tune page launches a short run, polls it, can cancel it, and reattaches after a
page reload or from another tab; so everything lives in a folder any process can read::

    FOLDER/
      job.json   the job record (written atomically): id, pid, process start time, command,
                 run_dir, started / ended (unix time), state, exit_code, cancel_requested
      job.log    stdout and stderr of the run (truncated at each start)
      job.lock   held with ``fcntl.flock`` while the record changes (start, cancel, clear, end)

The process that starts a job keeps its ``Popen`` and a thread that waits for it, so the exit
code is recorded as soon as the run ends. Any other process sees a dead pid instead; it then
decides from the run directory (``summary.json`` is written only when a run completes) and the
log. A pid is ours only while ``/proc/<pid>/stat`` shows the start time recorded at launch, so
a reused pid is never mistaken for the job (nor signalled).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from stdcl.errors import ConfigError, DataError, StdclError
from stdcl.io import read_json, write_json_atomic
from stdcl.train.estimate import Estimate, record_outcome
from stdcl.train.progress import Progress, read_progress
from stdcl.train.run_dir import METRICS, SUMMARY, prepare_new

STATES = ("idle", "running", "finished", "failed", "cancelled")
RECORD, LOG, LOCK = "job.json", "job.log", "job.lock"

# Popen objects of the jobs this process started, by pid (reaped by a waiting thread).
_CHILDREN: dict[int, subprocess.Popen] = {}
_CHILDREN_LOCK = threading.Lock()


class JobError(StdclError):
    """A job operation that the current state does not allow (e.g. a second start)."""


@dataclass
class JobStatus:
    """The job as seen now; ``state`` is one of :data:`STATES`."""

    state: str = "idle"
    pid: int | None = None
    run_dir: str | None = None
    command: list[str] = field(default_factory=list)
    started: float | None = None  # unix time
    ended: float | None = None
    elapsed: float | None = None  # seconds, start to end (or to now while running)
    exit_code: int | None = None  # None when the run ended unseen (decided from the run directory)
    cancelling: bool = False  # cancel requested, process not gone yet
    error: str | None = None  # one line, for failed runs
    estimate_s: float | None = None  # the expected time shown when it started, if one was given
    progress: Progress = field(default_factory=Progress)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- processes ------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a live or zombie pid; None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


def _has_proc() -> bool:
    return Path("/proc/self/stat").is_file()


def _is_alive(pid: int, proc_start: int | None) -> bool:
    """Whether ``pid`` is still the job's process (not exited, not a zombie, not a reused pid)."""
    with _CHILDREN_LOCK:
        proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    if _has_proc():
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X", "x"):
            return False
        return proc_start is None or st[1] == proc_start
    try:  # no /proc (not Linux): signal 0 only says some process has this pid
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: the pid was reused
    return True


def _exit_code_seen(pid: int) -> int | None:
    """The exit code of a dead job this process started (its waiting thread sets it at once)."""
    with _CHILDREN_LOCK:
        proc = _CHILDREN.get(pid)
    if proc is None:
        return None
    try:
        return proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        return None


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # start_new_session: the process group id is the pid


# -- the manager ----------------------------------------------------------------------------
class JobManager:
    """One training job at a time whose state lives in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.record_path = self.folder / RECORD
        self.log_path = self.folder / LOG
        self.lock_path = self.folder / LOCK

    # -- public -----------------------------------------------------------------------------
    def start(self, args: list[str], run_dir: str | os.PathLike, env: dict[str, str] | None = None,
              estimate: Estimate | None = None) -> JobStatus:
        """Launch ``python -m stdcl train *args --out run_dir`` in its own process group.

        ``args`` are ``stdcl train`` options and ``key=value`` overrides (e.g. ``["--config",
        "synthetic", "--encoder", "hcn", "--stdcl", "on", "train.epochs=1"]``); the environment
        is inherited, with ``env`` added. ``estimate``: the expected time shown for
        the job; when it finishes, its measured time calibrates the next estimates
        (:mod:`stdcl.train.estimate`). Raises :class:`JobError` while a job runs and
        :class:`~stdcl.errors.ConfigError` when ``run_dir`` already holds files.
        """
        args = list(args)
        bad = [a for a in args if not isinstance(a, str)]
        if bad:
            raise ConfigError(f"job arguments must be strings, got {bad[0]!r}")
        for flag in ("--out", "--resume"):
            if any(a == flag or a.startswith(flag + "=") for a in args):
                raise ConfigError(f"do not pass {flag} in the job arguments; the run directory is given separately")
        run_dir = Path(run_dir).absolute()
        with self._locked():
            rec = self._settle_locked()
            if rec is not None and rec["state"] == "running":
                raise JobError(f"a training job is already running (pid {rec['pid']}, {rec['run_dir']}); "
                               "wait for it or cancel it first")
            prepare_new(run_dir)  # a used run directory (not a failed attempt) is a ConfigError here, not in the log
            command = [sys.executable, "-m", "stdcl", "train", *args, "--out", str(run_dir)]
            child_env = dict(os.environ) | dict(env or {}) | {"PYTHONUNBUFFERED": "1"}
            with open(self.log_path, "wb") as log:
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=child_env, start_new_session=True)
            st = _proc_stat(proc.pid)
            rec = {"id": uuid.uuid4().hex, "pid": proc.pid, "proc_start": None if st is None else st[1],
                   "command": command, "run_dir": str(run_dir), "started": time.time(), "ended": None,
                   "state": "running", "exit_code": None, "cancel_requested": None,
                   "estimate": None if estimate is None else {"encoder": estimate.encoder, "device": estimate.device,
                                                              "seconds": estimate.seconds,
                                                              "table_s": estimate.table_seconds}}
            with _CHILDREN_LOCK:
                _CHILDREN[proc.pid] = proc
            try:
                write_json_atomic(self.record_path, rec)
            except BaseException:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        threading.Thread(target=self._reap, args=(proc, rec["id"]), daemon=True,
                         name=f"stdcl-job-{proc.pid}").start()
        return self.status()

    def status(self) -> JobStatus:
        """The job's state, timing, exit code, error line and progress (``idle`` when there is none)."""
        rec = self._read()
        if rec is not None and rec["state"] == "running" and not _is_alive(rec["pid"], rec.get("proc_start")):
            with self._locked():
                rec = self._settle_locked()
        if rec is None:
            return JobStatus()
        ended = rec.get("ended")
        elapsed = None if rec.get("started") is None else (ended if ended is not None else time.time()) - rec["started"]
        status = JobStatus(state=rec["state"], pid=rec["pid"], run_dir=rec["run_dir"], command=list(rec["command"]),
                           started=rec["started"], ended=ended, elapsed=elapsed, exit_code=rec.get("exit_code"),
                           cancelling=rec["state"] == "running" and rec.get("cancel_requested") is not None,
                           estimate_s=(rec.get("estimate") or {}).get("seconds"))
        if status.state == "failed":
            status.error = self._error_line(rec.get("exit_code"))
        status.progress = read_progress(rec["run_dir"])
        return status

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the job's log ("" when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-max(int(lines), 0):]) if lines > 0 else ""

    def cancel(self, timeout: float = 10.0) -> JobStatus:
        """SIGTERM the job's process group, SIGKILL after ``timeout`` s; the state becomes ``cancelled``.

        A job that is not running is left as it is (its status is returned).
        """
        with self._locked():
            rec = self._settle_locked()
            running = rec is not None and rec["state"] == "running"
            if running:
                rec["cancel_requested"] = time.time()
                write_json_atomic(self.record_path, rec)
        if not running:
            return self.status()
        pid, start = rec["pid"], rec.get("proc_start")
        if _is_alive(pid, start):
            _signal_group(pid, signal.SIGTERM)
            if not _wait_dead(pid, start, timeout):
                _signal_group(pid, signal.SIGKILL)
                _wait_dead(pid, start, 10.0)
        if not _is_alive(pid, start):
            _signal_group(pid, signal.SIGKILL)  # data-loading workers left in the group, if any
        with self._locked():
            self._settle_locked()
        return self.status()

    def clear(self) -> None:
        """Forget a finished, failed or cancelled job, or a damaged record (its run directory stays); refused
        while running."""
        with self._locked():
            try:
                rec = self._settle_locked()
            except JobError:  # a damaged record: nothing in it can be trusted, so forgetting it is all there is
                rec = None
            if rec is not None and rec["state"] == "running":
                raise JobError(f"the training job (pid {rec['pid']}) is still running; cancel it before clearing")
            self.record_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)

    # -- internals --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any] | None:
        if not self.record_path.exists():
            return None
        try:
            rec = read_json(self.record_path, "job record")
        except DataError as e:
            raise JobError(f"{e}; clear the job to start afresh") from None
        if not isinstance(rec, dict) or rec.get("state") not in STATES or not isinstance(rec.get("pid"), int) \
                or not isinstance(rec.get("run_dir"), str) or not isinstance(rec.get("command"), list):
            raise JobError(f"{self.record_path}: not a job record (state, pid, run_dir, command); "
                           "clear the job to start afresh")
        return rec

    def _settle_locked(self, exit_code: int | None = None, job_id: str | None = None) -> dict[str, Any] | None:
        """Re-read the record and, if its process has ended, write the final state (lock held)."""
        rec = self._read()
        if rec is None or rec["state"] != "running" or (job_id is not None and rec["id"] != job_id):
            return rec
        if exit_code is None:
            if _is_alive(rec["pid"], rec.get("proc_start")):
                return rec
            exit_code = _exit_code_seen(rec["pid"])
        rec["exit_code"] = exit_code
        rec["ended"] = time.time() if exit_code is not None else self._last_activity(rec)
        rec["state"] = self._end_state(rec)
        est = rec.get("estimate")
        # the calibration first: whoever reads "finished" (status() reads without the lock) finds it written
        if rec["state"] == "finished" and exit_code is not None and isinstance(est, dict):  # end time exact
            with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
                record_outcome(self.folder, est["encoder"], est["device"], float(est["table_s"]),
                               rec["ended"] - rec["started"])
        write_json_atomic(self.record_path, rec)
        with _CHILDREN_LOCK:
            _CHILDREN.pop(rec["pid"], None)
        return rec

    def _end_state(self, rec: dict[str, Any]) -> str:
        code = rec["exit_code"]
        completed = code == 0 if code is not None else self._completed_unseen(rec["run_dir"])
        if completed:
            return "finished"
        return "cancelled" if rec.get("cancel_requested") is not None else "failed"

    def _completed_unseen(self, run_dir: str) -> bool:
        """Exit code unknown: a run completed iff it wrote summary.json (or stopped as asked, exit 0)."""
        if (Path(run_dir) / SUMMARY).is_file():
            return True
        return any(line.startswith("stopped at step ") for line in self.log_tail(5).splitlines())

    def _last_activity(self, rec: dict[str, Any]) -> float:
        times = [p.stat().st_mtime for p in (self.log_path, Path(rec["run_dir"]) / METRICS) if p.exists()]
        return max([rec["started"], *times])

    def _error_line(self, exit_code: int | None) -> str:
        """Why a run failed, in one line: its ``stdcl: error:`` line, else how it ended and its log's last line."""
        lines = [ln.strip() for ln in self.log_tail(200).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("stdcl: error:")]
        if errors:
            return errors[-1]
        if exit_code is None:
            how = "the run ended without completing"
        elif exit_code < 0:
            try:
                how = f"killed by signal {signal.Signals(-exit_code).name}"
            except ValueError:
                how = f"killed by signal {-exit_code}"
        else:
            how = f"the run ended with exit code {exit_code}"
        return f"{how}; its log ends: {lines[-1]}" if lines else f"{how} (its log is empty)"

    def _reap(self, proc: subprocess.Popen, job_id: str) -> None:
        code = proc.wait()
        with contextlib.suppress(OSError, JobError):  # the folder may be gone by now
            with self._locked():
                self._settle_locked(exit_code=code, job_id=job_id)
        with _CHILDREN_LOCK:
            if _CHILDREN.get(proc.pid) is proc:
                del _CHILDREN[proc.pid]


def _wait_dead(pid: int, proc_start: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_alive(pid, proc_start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def gpu_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


__all__ = ["JobError", "JobManager", "JobStatus", "STATES", "gpu_available"]
