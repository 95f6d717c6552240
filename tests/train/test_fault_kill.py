"""Fault test: a training run SIGKILLed at random points (checkpoint writes included) and resumed until
it completes ends exactly like an uninterrupted run (metrics, summary, weights)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from stdcl.train.run_dir import read_metrics
from stdcl.train.state import load_state
from tests.support.training import TINY, assert_same_tensors, tensors

# 65 training items, 8 steps an epoch, 2 epochs; a checkpoint every 3 steps and at each epoch's end
ARGS = ["--config", "synthetic", "--encoder", "hcn", "--stdcl", "on", *TINY, "data.source={num_samples: 100}",
        "train.epochs=2", "train.checkpoint_every_steps=3"]
#: Where the run kills itself (stdcl.train.faults): writing best at the end of epoch 1, then a checkpoint write
#: cut at each of its stages (the point's 1st or 2nd time in that session), and once from outside at a random time.
FIRST, POINTS = "best:1", ("last", "state-partial", "state-tensors")
TIMING = {"samples_per_s", "time_s", "train_samples_per_s", "train_time_s"}  # wall-clock, differ by nature


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stdcl", "train", "--no-progress", *args]


def child_env(kill_at: str | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("STDCL_TEST_KILL_AT", None)
    if kill_at:
        env["STDCL_TEST_KILL_AT"] = kill_at
    return env


def state_step(run: Path) -> int:
    try:
        return json.loads((run / "state.json").read_text())["state"]["global_step"]
    except (OSError, ValueError, KeyError):
        return -1


def kill_when_it_progresses(proc: subprocess.Popen, run: Path, delay: float, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` from outside ``delay`` seconds after it saved a state beyond the one it resumed."""
    start = state_step(run)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and state_step(run) <= start:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_sigkilled_run_resumed_until_done_equals_an_uninterrupted_one(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = subprocess.Popen(command(*ARGS, "--out", str(ref)), env=child_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    rng = random.Random(20240611)
    plan = [f"{p}:{rng.randint(1, 2)}" for p in rng.sample(POINTS, len(POINTS))]
    plan.insert(rng.randint(0, len(plan)), "outside")
    plan.insert(0, FIRST)
    kills, attempts = [], 0
    while True:
        kill_at = plan[attempts] if attempts < len(plan) else None
        args = ARGS + ["--out", str(run)] if attempts == 0 else ["--resume", str(run)]
        proc = subprocess.Popen(command(*args), env=child_env(None if kill_at == "outside" else kill_at),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kill_at == "outside":
            kill_when_it_progresses(proc, run, delay=rng.uniform(0.0, 0.4))
        err = proc.communicate(timeout=120)[1]
        attempts += 1
        assert proc.returncode in (0, -signal.SIGKILL), err
        assert "Traceback" not in err, err
        if proc.returncode == 0:
            break
        kills.append((kill_at, state_step(run)))
        assert attempts < 12, kills
    assert len(kills) >= 4, f"too few kills landed: {kills}"
    assert reference.wait(timeout=120) == 0, reference.stderr.read()

    a, b = json.loads((ref / "summary.json").read_text()), json.loads((run / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k != "run_dir"} == {k: v for k, v in b.items() if k != "run_dir"}
    assert comparable(read_metrics(ref)) == comparable(read_metrics(run))
    for name in ("last.safetensors", "last.head.safetensors", "best.safetensors", "best.head.safetensors"):
        assert_same_tensors(tensors(ref / name), tensors(run / name))
    assert_same_tensors(load_state(ref)["model"], load_state(run)["model"])
    assert sorted(p.name for p in ref.iterdir()) == sorted(p.name for p in run.iterdir())  # no leftovers
