"""Background training jobs (stdcl.train.jobs): real `stdcl train` subprocesses on tiny synthetic runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from stdcl.checkpoint import read_meta
from stdcl.errors import ConfigError
from stdcl.encoders.registry import spec
from stdcl.train.estimate import (EVAL_COST, FACTOR_RANGE, GPU_SPEEDUP, HISTORY, STARTUP_S,
                                  calibration, estimate, expected_seconds, record_outcome)
from stdcl.train.jobs import JobError, JobManager, JobStatus, gpu_available
from stdcl.train.progress import read_progress
from tests.support.training import TINY

BASE = ["--config", "synthetic", "--encoder", "hcn", "--stdcl", "on", *TINY]
LONG = BASE + ["train.epochs=50"]  # long enough to be killed or cancelled while it trains


@pytest.fixture
def jobs(tmp_path, monkeypatch):
    """A manager in tmp; the children inherit a tmp cache and one thread each (2 shared cores)."""
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manager = JobManager(tmp_path / "jobs")
    yield manager
    if manager.status().state == "running":  # a failed test leaves no training process behind
        manager.cancel(timeout=2)


def wait_for(jobs: JobManager, cond, timeout: float = 60.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = jobs.status()
        if cond(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out in state {st.state}; log:\n{jobs.log_tail(20)}")
        time.sleep(0.1)


def status_elsewhere(folder: Path) -> dict:
    """The job's status (:meth:`JobStatus.to_dict`) as another process (a reloaded page on another server) sees it."""
    code = ("import json, sys; from stdcl.train.jobs import JobManager; "
            "print(json.dumps(JobManager(sys.argv[1]).status().to_dict()))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def ended_elsewhere(folder: Path) -> tuple[str, int | None, str | None]:
    """(state, exit code, error) as another process sees them."""
    there = status_elsewhere(folder)
    return there["state"], there["exit_code"], there["error"]


def pid_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the whole process group, not only the leader
    except ProcessLookupError:
        return True
    return False


def training_processes(marker: str) -> list[int]:
    """Pids of live `stdcl train` processes whose command line names ``marker``."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"stdcl" in cmd and b"train" in cmd and any(marker.encode() in c for c in cmd) and state != "Z":
            pids.append(int(p.name))
    return pids


def test_run_finishes_with_progress_and_reattaches(jobs, tmp_path):
    run = tmp_path / "run"
    eta = estimate("hcn", 64, 1.0, "cpu", 32, history=jobs.folder)
    assert eta.calibrated_by == 0 and eta.seconds == eta.table_seconds and "not yet calibrated" in eta.basis
    st = jobs.start(BASE + ["train.epochs=1", "train.max_steps=8"], run, estimate=eta)
    assert st.state == "running" and st.pid > 0 and st.estimate_s == eta.seconds
    assert st.command == [sys.executable, "-m", "stdcl", "train", *BASE, "train.epochs=1", "train.max_steps=8",
                          "--out", str(run)]
    with pytest.raises(JobError, match="already running"):
        jobs.start(BASE + ["train.epochs=1"], tmp_path / "other")
    assert not (tmp_path / "other").exists()

    st = wait_for(jobs, lambda s: s.state != "running")
    assert (st.state, st.exit_code, st.error) == ("finished", 0, None), jobs.log_tail()
    assert st.elapsed == pytest.approx(st.ended - st.started) and st.elapsed > 0
    assert "done: 8 steps" in jobs.log_tail(5)
    # the finished job calibrates the next estimate: its measured time over the table's
    (line,) = [json.loads(x) for x in (jobs.folder / HISTORY).read_text().splitlines()]
    assert (line["encoder"], line["device"], line["table_s"]) == ("hcn", "cpu", round(eta.table_seconds, 3))
    assert line["measured_s"] == pytest.approx(st.elapsed, abs=1e-3)
    again = estimate("hcn", 64, 1.0, "cpu", 32, history=jobs.folder)
    ratio = min(max(st.elapsed / eta.table_seconds, FACTOR_RANGE[0]), FACTOR_RANGE[1])
    assert again.seconds == pytest.approx(eta.table_seconds * ratio, rel=1e-3) and again.calibrated_by == 1
    assert "last 1 finished hcn job on this machine's cpu" in again.basis

    # the progress equals an independent reading of the run's files
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    info = json.loads((run / "run.json").read_text())
    p = st.progress
    assert p.records == records
    assert [r["global_step"] for r in records if r["kind"] == "step"] == [4, 8]
    assert (p.step, p.epoch, p.total_steps, p.steps_per_epoch, p.total_epochs, p.fraction) == \
        (8, 1, 8, info["steps_per_epoch"], 1, 1.0)
    assert info["steps_per_epoch"] == 130 // 8
    ep = next(r for r in records if r["kind"] == "epoch")
    assert p.losses == {k: ep[f"train_{k}"] for k in ("loss", "ce", "spatial", "temporal")}
    assert p.losses["loss"] == pytest.approx(p.losses["ce"] + 0.5 * (p.losses["spatial"] + p.losses["temporal"]),
                                             rel=1e-5)
    assert (p.train_acc, p.samples_per_s, p.lr) == (ep["train_acc"], ep["train_samples_per_s"], ep["lr"])
    final = records[-1]
    assert final["kind"] == "final" and (p.val_top1, p.test_top1) == (final["val_top1"], final["test_top1"])
    assert p.remaining_s == 0.0 and p.train_items == 130
    assert read_meta(run / "last.safetensors")["global_step"] == 8
    assert (run / "best.safetensors").is_file() and (run / "summary.json").is_file()

    # reattach: a new manager (same process, then another process) reports the same
    again = JobManager(jobs.folder).status()
    assert again == st
    there = status_elsewhere(jobs.folder)
    assert (there["state"], there["pid"], there["progress"]["step"], there["run_dir"]) == \
        ("finished", st.pid, 8, str(run))

    # the end seen by nobody: the record still says running, the pid is dead -> decided from the run directory
    rec = json.loads(jobs.record_path.read_text())
    rec.update(state="running", exit_code=None, ended=None)
    jobs.record_path.write_text(json.dumps(rec))
    unseen = JobManager(jobs.folder).status()
    assert (unseen.state, unseen.exit_code) == ("finished", None)
    assert unseen.ended == pytest.approx(jobs.log_path.stat().st_mtime)

    # pid reuse: our own live pid with another start time is not the job; with its real start time it is
    own_start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    rec.update(pid=os.getpid(), proc_start=own_start + 1)
    jobs.record_path.write_text(json.dumps(rec))
    assert jobs.status().state == "finished"
    rec.update(state="running", exit_code=None, ended=None, pid=os.getpid(), proc_start=own_start)
    jobs.record_path.write_text(json.dumps(rec))
    assert jobs.status().state == "running"
    rec.update(state="finished", exit_code=0, ended=time.time())
    jobs.record_path.write_text(json.dumps(rec))

    jobs.clear()
    assert jobs.status() == JobStatus() and jobs.log_tail() == ""
    assert (run / "last.safetensors").is_file()  # the run itself stays


def test_cancel_a_running_job(jobs, tmp_path):
    run = tmp_path / "run"
    st = jobs.start(BASE + ["train.epochs=50"], run)
    st = wait_for(jobs, lambda s: s.state != "running" or s.progress.step is not None)
    assert st.state == "running", jobs.log_tail()
    p = st.progress
    assert p.total_steps == 50 * p.steps_per_epoch and p.total_epochs == 50 and p.step >= 4
    assert p.fraction == pytest.approx(p.step / p.total_steps)
    steps = [r for r in p.records if r["kind"] == "step"]
    assert p.losses == {k: steps[-1][k] for k in ("loss", "ce", "spatial", "temporal")}
    assert p.remaining_s == pytest.approx(sum(r["time_s"] for r in steps) / steps[-1]["global_step"]
                                          * (p.total_steps - p.step))
    assert status_elsewhere(jobs.folder)["state"] == "running"
    with pytest.raises(JobError, match="still running"):
        jobs.clear()

    st = jobs.cancel(timeout=10)
    assert (st.state, st.exit_code, st.cancelling) == ("cancelled", -signal.SIGTERM, False)
    assert pid_gone(st.pid)
    assert not (run / "summary.json").exists()
    assert JobManager(jobs.folder).status().state == "cancelled"
    assert status_elsewhere(jobs.folder)["state"] == "cancelled"
    assert jobs.cancel().state == "cancelled"  # nothing left to cancel: unchanged
    jobs.clear()
    assert jobs.status().state == "idle"


def test_failed_run_reports_the_error_line(jobs, tmp_path):
    st = jobs.start(["--config", "synthetic", "--encoder", "hcn", "train.no_such_key=1"], tmp_path / "run")
    st = wait_for(jobs, lambda s: s.state != "running")
    assert (st.state, st.exit_code) == ("failed", 2)
    assert st.error.startswith("stdcl: error: unknown config key train.no_such_key")
    assert st.error in jobs.log_tail(5).splitlines()
    assert st.progress.records == [] and st.progress.step is None
    # a new job may start once the previous one ended
    jobs.clear()


def test_a_job_killed_from_outside_is_failed_with_its_last_log_line_everywhere(jobs, tmp_path):
    folder = jobs.folder
    st = jobs.start(LONG, tmp_path / "run")
    st = wait_for(jobs, lambda s: s.state != "running" or s.progress.step is not None)
    assert st.state == "running", jobs.log_tail()
    os.kill(st.pid, signal.SIGKILL)  # not a cancel: the process is simply gone
    st = wait_for(jobs, lambda s: s.state != "running")
    last = [ln.strip() for ln in jobs.log_tail(50).splitlines() if ln.strip()][-1]
    reason = f"killed by signal SIGKILL; its log ends: {last}"
    assert (st.state, st.exit_code, st.error) == ("failed", -signal.SIGKILL, reason)
    assert JobManager(folder).status().error == reason  # another manager in this process
    assert ended_elsewhere(folder) == ("failed", -signal.SIGKILL, reason)

    # nobody saw it end (the starting server died too): decided from the folder, the same last line
    rec = json.loads(jobs.record_path.read_text())
    jobs.record_path.write_text(json.dumps(rec | {"state": "running", "exit_code": None, "ended": None}))
    assert ended_elsewhere(folder) == ("failed", None, f"the run ended without completing; its log ends: {last}")

    nxt = jobs.start(LONG, tmp_path / "next")  # the next job may start
    assert nxt.state == "running" and nxt.pid != st.pid
    assert jobs.cancel(timeout=10).state == "cancelled"


def _press_start(folder: str, run_dir: str, barrier, results) -> None:
    """One browser tab: its own manager on the shared folder, pressing Start when the other does."""
    manager = JobManager(folder)
    barrier.wait(timeout=60)
    try:
        results.put(("started", manager.start(LONG, run_dir).pid))
    except JobError as e:
        results.put(("refused", str(e)))


def check_one_started(outcomes: list[tuple[str, object]], folder: Path, tmp_path: Path) -> None:
    assert sorted(kind for kind, _ in outcomes) == ["refused", "started"], outcomes
    (pid,) = [v for kind, v in outcomes if kind == "started"]
    (refusal,) = [v for kind, v in outcomes if kind == "refused"]
    assert refusal.startswith("a training job is already running") and "\n" not in refusal
    assert [p.exists() for p in (tmp_path / "tab0", tmp_path / "tab1")].count(True) == 1  # the other never began
    assert training_processes(str(tmp_path)) == [pid]
    jobs = JobManager(folder)
    assert jobs.status().pid == pid
    assert jobs.cancel(timeout=10).state == "cancelled"


@pytest.mark.parametrize("tabs_are", ["threads", "processes"])
def test_two_tabs_pressing_start_at_once_get_one_job(tabs_are, jobs, tmp_path):
    folder = jobs.folder
    if tabs_are == "threads":
        barrier, results, tab = threading.Barrier(2), queue.Queue(), threading.Thread
    else:  # each its own interpreter, as two app servers on one folder
        ctx = multiprocessing.get_context("spawn")
        barrier, results, tab = ctx.Barrier(2), ctx.Queue(), ctx.Process
    tabs = [tab(target=_press_start, args=(str(folder), str(tmp_path / f"tab{i}"), barrier, results))
            for i in range(2)]
    for t in tabs:
        t.start()
    outcomes = [results.get(timeout=120) for _ in tabs]
    for t in tabs:
        t.join(timeout=60)
        assert getattr(t, "exitcode", 0) == 0
    check_one_started(outcomes, folder, tmp_path)


def test_start_refuses_bad_requests(jobs, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        jobs.start(BASE, taken)
    with pytest.raises(ConfigError, match="--out"):
        jobs.start(BASE + ["--out", "elsewhere"], tmp_path / "run")
    with pytest.raises(ConfigError, match="strings"):
        jobs.start(["--config", 3], tmp_path / "run")
    assert jobs.status().state == "idle"


def test_progress_skips_a_line_cut_short(tmp_path):
    recs = [{"kind": "step", "epoch": 1, "global_step": 4, "lr": 0.1, "loss": 2.0, "ce": 1.5, "acc": 0.25,
             "samples_per_s": 10.0, "time_s": 2.0}]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(recs[0]) + "\n" + '{"kind": "step", "epo')
    (tmp_path / "run.json").write_text(json.dumps({"total_steps": 10, "steps_per_epoch": 4}))
    p = read_progress(tmp_path)
    assert p.records == recs
    assert (p.step, p.total_epochs, p.fraction, p.losses, p.train_acc) == (4, 3, 0.4, {"loss": 2.0, "ce": 1.5}, 0.25)
    assert p.remaining_s == pytest.approx(2.0 / 4 * 6)


def test_calibration_uses_the_latest_matching_jobs(tmp_path):
    assert calibration(tmp_path, "hcn", "cpu") == (1.0, 0, "")
    for enc, dev, t, m in [("agcn", "cpu", 10, 30), ("agcn", "cpu", 10, 50), ("hcn", "cuda", 5, 1)]:
        record_outcome(tmp_path, enc, dev, t, m)
    # no hcn job on the cpu yet: any encoder on that device (median of 3.0 and 5.0)
    assert calibration(tmp_path, "hcn", "cpu") == (4.0, 2, "any encoder")
    assert calibration(tmp_path, "hcn", "cuda") == (FACTOR_RANGE[0], 1, "hcn")  # 0.2 = the clip floor
    record_outcome(tmp_path, "hcn", "cpu", 10, 20)
    with open(tmp_path / HISTORY, "a") as f:  # damaged lines are skipped, never fatal
        f.write('{"encoder": "hcn", "device": "cpu", "table_s": 0, "measured_s": 5}\n[1, 2]\n{"enc\n'
                '{"encoder": "hcn", "device": "tpu", "table_s": 1, "measured_s": 5}\n'
                '{"encoder": "hcn", "device": "cpu", "table_s": true, "measured_s": 5}\n')
    assert calibration(tmp_path, "hcn", "cpu") == (2.0, 1, "hcn")
    for i in range(12):  # only the latest HISTORY_USED count
        record_outcome(tmp_path, "hcn", "cpu", 10, 60)
    assert calibration(tmp_path, "hcn", "cpu") == (6.0, 10, "hcn")
    est = estimate("hcn", 100, 2, "cpu", 32, history=tmp_path)
    assert est.seconds == pytest.approx(6.0 * expected_seconds("hcn", 100, 2, "cpu", 32))
    assert "x 6.00" in est.basis and "last 10 finished hcn jobs" in est.basis
    record_outcome(tmp_path, "hcn", "cpu", 0, 10)  # nothing measured: nothing written
    assert len((tmp_path / HISTORY).read_text().splitlines()) == 21


def test_progress_marks_where_the_contrastive_term_starts(tmp_path):
    def step(n, frac, factor=1.0):
        return {"kind": "step", "epoch": 1, "global_step": n, "loss": 2.0, "ce": 2.0, "spatial": 0.0,
                "temporal": 0.0, "valid_frac_spatial": frac, "valid_frac_temporal": 0.0,
                "contrastive_factor": factor, "time_s": 1.0}
    recs = [step(5, 0.0), step(10, 0.5, factor=0.0), step(15, 0.25), step(20, 1.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    p = read_progress(tmp_path)
    assert p.contrastive and p.contrastive_start_step == 15  # banks filled at 10, the schedule let it in at 15
    assert "valid_frac_spatial" not in p.losses and "contrastive_factor" not in p.losses
    (tmp_path / "metrics.jsonl").write_text(json.dumps(recs[0]) + "\n")
    p = read_progress(tmp_path)
    assert p.contrastive and p.contrastive_start_step is None
    base = {k: v for k, v in recs[0].items() if not k.startswith(("valid", "contrastive", "spatial", "temporal"))}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(base) + "\n")
    assert not read_progress(tmp_path).contrastive


def test_expected_seconds():
    c = {n: spec(n).cpu_cost for n in ("hcn", "agcn", "ctrgcn")}
    assert expected_seconds("ctrgcn", 1000, 2, "cpu", 64) == \
        pytest.approx(STARTUP_S["cpu"] + 2 * 1000 * c["ctrgcn"] * 2)
    assert expected_seconds("hcn", 500, 1.5, "cuda", 32, num_eval_samples=100) == \
        pytest.approx(STARTUP_S["cuda"] + 1.5 * (500 + EVAL_COST * 100) * c["hcn"] / GPU_SPEEDUP)
    assert expected_seconds("hcn", 1000, 1, "cpu", 32) < expected_seconds("agcn", 1000, 1, "cpu", 32)
    with pytest.raises(ConfigError, match="unknown encoder"):
        expected_seconds("resnet", 10, 1, "cpu", 32)
    with pytest.raises(ConfigError, match="device"):
        expected_seconds("hcn", 10, 1, "tpu", 32)
    assert gpu_available() == torch.cuda.is_available()


def test_planned_steps_and_data_sizes_match_the_engine():
    from stdcl.train.config import load_config
    from stdcl.train.estimate import data_sizes, planned_steps

    cfg = load_config("synthetic", encoder="hcn", overrides=["data.source={num_samples: 200}", "train.batch_size=8",
                                                             "train.epochs=3"])
    sizes = data_sizes(cfg["data"])
    assert sizes["classes"] == 13 and sizes["layout"] == "ntu25"
    assert sizes["train_items"] + sizes["val"] + sizes["test"] == 200
    steps, spanned = planned_steps(cfg, sizes["train_items"])
    assert steps == 3 * (sizes["train_items"] // 8) and spanned == 3
    cfg["train"]["max_steps"] = 5
    assert planned_steps(cfg, sizes["train_items"]) == (5, 5 / (sizes["train_items"] // 8))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        planned_steps(cfg, 7)
