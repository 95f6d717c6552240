"""``stdcl bench gpu``: the CPU rehearsal of the prepared GPU check, and the runner's bookkeeping.

The rehearsal runs every part with ``--device cpu --tiny`` in a subprocess (on a small NW-UCLA-format
folder written here, so the recipe part runs too) and asserts on the JSON's values: every part ok, the
loss equality, AMP trajectories within the stated tolerances, DDP vs one process, the job vs its
estimate, the NW-UCLA epochs. The runner tests use fake parts (fast): a part that raises is recorded
as failed and the rest still run; a budget too small marks later parts skipped; the JSON is rewritten
after every part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stdcl.bench.gpu import JSON_NAME, LOG_NAME, Context, Part, run_gpu_check
from stdcl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
UCLA_CODES = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)


def fake_ucla(root: Path) -> Path:
    """One sequence per action and view (views 1-2 train, 3 test), 12 frames, in CTR-GCN's json layout."""
    folder = root / "all_sqe"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for label, code in enumerate(UCLA_CODES):
        for view in (1, 2, 3):
            name = f"a{code:02d}_s01_e00_v{view:02d}"
            sk = (0.1 * rng.standard_normal((12, 20, 3)) + 0.05 * label).round(4).tolist()
            (folder / f"{name}.json").write_text(json.dumps({"file_name": name, "skeletons": sk, "label": label + 1}))
    return root


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[dict, Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("gpu")
    out = tmp / "check"
    env = dict(os.environ, OMP_NUM_THREADS="1", STDCL_CACHE=str(tmp / "cache"))
    proc = subprocess.run([sys.executable, "-m", "stdcl", "bench", "gpu", "--out", str(out), "--device", "cpu",
                           "--tiny", "--ucla", str(fake_ucla(tmp / "ucla"))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    return json.loads((out / JSON_NAME).read_text()), out, proc


@pytest.mark.slow
def test_rehearsal_every_part_ok_and_json_complete(rehearsal) -> None:
    report, out, proc = rehearsal
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert report["format"] == "stdcl-gpu-check" and report["complete"] is True and report["device"] == "cpu"
    assert list(report["parts"]) == ["environment", "loss", "amp", "train_step", "ddp", "finetune_job", "ucla"]
    for name, rec in report["parts"].items():
        assert rec["status"] == "ok", (name, rec["error"])
        assert rec["error"] is None and rec["seconds"] >= 0 and rec["budget_s"] > 0
    assert sum(r["seconds"] for r in report["parts"].values()) <= report["elapsed_s"] <= report["budget_s"]
    assert (out / LOG_NAME).read_text().count("gpu check: part ") == 7
    assert "ucla" in proc.stdout and "ok" in proc.stdout  # the summary lines


@pytest.mark.slow
def test_rehearsal_loss_and_amp_values(rehearsal) -> None:
    from stdcl.bench.gpu_parts import AMP_SIZES, AMP_TOL, LOSS_TOL

    parts = rehearsal[0]["parts"]
    env = parts["environment"]["result"]
    assert env["torch"] == torch.__version__ and env["gpu"] is None and env["memory_gib"] is None
    loss = parts["loss"]["result"]
    d = loss["device_vs_cpu"]
    assert d["equal"] and d["abs_diff"] <= LOSS_TOL and d["max_grad_diff"] <= LOSS_TOL and d["loss_cpu"] > 0
    assert loss["batched_vs_loop"]["max_loss_diff"] <= 1e-4 and loss["batched_vs_loop"]["loop_s"] > 0
    assert loss["checks"]["device_equals_cpu"] and loss["checks"]["batched_equals_loop"]
    amp = parts["amp"]["result"]
    assert amp["tolerances"] == AMP_TOL and amp["checks"]["all_within_tolerance"] and amp["encoders"]
    steps = AMP_SIZES["tiny"]["steps"]
    for name, row in amp["encoders"].items():
        assert all(len(row[k]["losses"]) == steps for k in ("float32", "float16", "bfloat16")), name
        for key, tol in AMP_TOL.items():
            assert row[key]["forward_rel_diff"] <= tol["forward"] and row[key]["final_rel_diff"] <= tol["final"]
            assert row[key]["max_rel_loss_diff"] > 0  # reduced precision really ran
        assert row["float32_repeat_max_rel_loss_diff"] == 0  # deterministic kernels: fp32 twice is bitwise equal
        assert row["float32"]["peak_memory_mib"] is None  # CPU: null
        assert row["float16"]["overflows_after_warmup"] == 0
    ts = parts["train_step"]["result"]["encoders"]
    for name, row in ts.items():
        for k in ("fp32", "amp"):
            r = row[k]
            assert r["ratio"] == pytest.approx(r["stdcl_s"] / r["baseline_s"]) and r["samples_per_s_stdcl"] > 0


@pytest.mark.slow
def test_rehearsal_ddp_job_and_ucla_values(rehearsal) -> None:
    from stdcl.bench.gpu_runs import DDP_TOL, _ucla_command

    report, out, _ = rehearsal
    parts = report["parts"]
    ddp = parts["ddp"]["result"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 2 and ddp["ddp_wrapped"]
    assert ddp["checks"]["loss_equal"] and ddp["checks"]["banks_equal"] and ddp["checks"]["sync_bn"] is None  # HCN
    assert len(ddp["losses_ddp"]) == len(ddp["losses_single"]) == ddp["steps"]
    assert ddp["max_rel_loss_diff"] <= DDP_TOL and ddp["banks_equal"]
    assert ddp["bank_filled"] == ddp["steps"] * ddp["global_batch"]
    job = parts["finetune_job"]["result"]
    assert job["state"] == "finished" and job["measured_s"] > 0 and job["estimate_s"] > 0
    assert job["measured_over_estimate"] == pytest.approx(job["measured_s"] / job["estimate_s"])
    assert job["replace_gpu_speedup_with"] is None  # CPU: nothing to say about the GPU figure
    ucla = parts["ucla"]["result"]
    for name in ("baseline", "stdcl"):
        r = ucla["runs"][name]
        assert r["finished"] and r["exit_code"] == 0 and r["epochs_reached"] == 2
        assert len(r["test_top1"]) == 2 and all(0 <= a <= 1 for a in r["test_top1"])
        assert all(e["train_samples_per_s"] > 0 and e["train_time_s"] > 0 for e in r["epochs"])
        assert r["stdcl"] == (name == "stdcl")
        # a second call resumes a run that holds a state (here finished ones are simply read back)
        cmd = _ucla_command(Path(r["run_dir"]), "on", Path(ucla["data"]), None)  # type: ignore[arg-type]
        assert cmd[-3:-1] == ["--resume", r["run_dir"]]


def _ctx(tmp_path: Path) -> Context:
    now = time.monotonic()
    return Context(out=tmp_path, device=torch.device("cpu"), tiny=True, ucla=None, deadline=now + 600,
                   part_deadline=now + 600)


def test_amp_fp16_overflow_compared_with_the_same_skipped_steps(tmp_path, monkeypatch) -> None:
    """An fp16 run whose GradScaler overflows is compared with fp32 leaving out the same optimiser steps."""
    from stdcl.bench import gpu_parts as P

    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: real(*a, **k, init_scale=2.0 ** 100))
    s = dict(P.AMP_SIZES["tiny"])
    row = P._amp_encoder("hcn", s, _ctx(tmp_path))
    assert row["float16"]["overflow_steps"][:1] == [0]  # 2**100 overflows at once, then halves
    assert row["float16"]["reference"].startswith("float32 skipping steps [0")
    assert row["float16"]["within_tolerance"] and row["float16"]["forward_rel_diff"] <= P.AMP_TOL["float16"]["forward"]
    assert row["bfloat16"]["reference"] == "float32"


def test_amp_compares_with_dropout_off(tmp_path) -> None:
    """CUDA draws dropout masks differently per dtype: the AMP models carry no active dropout."""
    from stdcl.bench import gpu_parts as P

    model, _ = P._amp_model("hcn", dict(P.AMP_SIZES["tiny"]))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert drops and all(m.p == 0.0 for m in drops)


def test_loss_on_takes_leaf_tensors_on_the_device(tmp_path) -> None:
    """The embeddings are leaves where the loss runs (a CPU tensor moved by ``.to`` is not, on CUDA)."""
    from stdcl.bench import gpu_parts as P

    s = dict(P.LOSS_SIZES["tiny"])
    loss, emb, labels, idx = P._filled_loss(s)
    emb = {k: v.requires_grad_(True) * 1.0 for k, v in emb.items()}  # non-leaf inputs, as after a device move
    value, grads, banks, valid = P._loss_on(loss, emb, labels, idx, torch.device("cpu"))
    assert value > 0 and all(g.shape == (s["batch"], s["dim"]) and g.abs().sum() > 0 for g in grads.values())


def test_only_runs_the_named_parts(tmp_path) -> None:
    from stdcl.bench.gpu import run_gpu_check

    seen = []
    parts = [_fake(n, lambda ctx, res, n=n: seen.append(n)) for n in ("a", "b", "c")]
    report = run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=10, parts=parts, only=["c", "a"])
    assert seen == ["a", "c"] and list(report["parts"]) == ["a", "c"] and report["only"] == ["c", "a"]
    with pytest.raises(ConfigError, match="unknown part.*zz"):
        run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=10, parts=parts, only=["zz"])


def _fake(name: str, fn, share: float = 1.0, min_s: float = 0.0) -> Part:
    return Part(name, fn, share, min_s, min_s)


def test_a_failing_part_is_recorded_and_the_rest_run(tmp_path) -> None:
    seen = {}

    def good(ctx, res):
        res["value"] = 1

    def bad(ctx, res):
        res["partial"] = 2
        raise ValueError("boom on purpose\nsecond line")

    def after(ctx, res):  # the JSON on disk already holds the earlier parts' outcomes
        seen.update(json.loads((ctx.out / JSON_NAME).read_text())["parts"])
        res["value"] = 3

    report = run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=60,
                           parts=[_fake("a", good), _fake("b", bad), _fake("c", after)])
    st = {k: v["status"] for k, v in report["parts"].items()}
    assert st == {"a": "ok", "b": "failed", "c": "ok"}
    assert report["parts"]["b"]["error"] == "ValueError: boom on purpose"
    assert report["parts"]["b"]["result"] == {"partial": 2} and "Traceback" in report["parts"]["b"]["traceback"]
    assert seen["a"]["status"] == "ok" and seen["b"]["status"] == "failed" and seen["c"]["status"] == "pending"
    assert json.loads((tmp_path / JSON_NAME).read_text()) == report  # the final file is the report


def test_too_small_a_budget_skips_later_parts(tmp_path) -> None:
    def slow(ctx, res):
        time.sleep(0.5)
        res["left_at_end"] = ctx.left()

    report = run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=1.0,
                           parts=[_fake("first", slow, share=9), _fake("second", slow, min_s=0.3),
                                  _fake("third", slow, min_s=0.6)])
    p = report["parts"]
    assert p["first"]["status"] == "ok" and p["first"]["budget_s"] == pytest.approx(0.818, abs=0.06)
    assert p["second"]["status"] == p["third"]["status"] == "skipped"
    assert p["second"]["error"].startswith("skipped: its budget") and "0.3 s it needs" in p["second"]["error"]
    on_disk = json.loads((tmp_path / JSON_NAME).read_text())
    assert report["complete"] and on_disk["parts"]["third"]["status"] == "skipped"


def test_budget_exceeded_inside_a_part_keeps_its_figures(tmp_path) -> None:
    def loop(ctx, res):
        res["done"] = []
        for i in range(1000):
            ctx.check_time(f"item {i}")
            res["done"].append(i)
            time.sleep(0.05)

    report = run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=0.3, parts=[_fake("loop", loop)])
    rec = report["parts"]["loop"]
    assert rec["status"] == "failed" and rec["error"].startswith("BudgetExceeded: time budget used up before item")
    assert 2 <= len(rec["result"]["done"]) <= 8


def test_ucla_absent_is_skipped_with_its_reason(tmp_path) -> None:
    from stdcl.bench.gpu_runs import ucla_recipe

    report = run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=30, parts=[_fake("ucla", ucla_recipe)])
    assert report["parts"]["ucla"]["status"] == "skipped"
    assert report["parts"]["ucla"]["error"] == ("skipped: no NW-UCLA data given "
                                                "(--ucla PATH: the folder holding all_sqe/)")
    report = run_gpu_check(tmp_path, device="cpu", tiny=True, budget_s=30, ucla=tmp_path / "nowhere",
                           parts=[_fake("ucla", ucla_recipe)])
    assert "nowhere: no NW-UCLA data there" in report["parts"]["ucla"]["error"]


def test_bad_options_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--budget-s must be positive"):
        run_gpu_check(tmp_path, device="cpu", budget_s=0)
    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, "-m", "stdcl", "bench", "gpu", "--out", str(tmp_path / "x")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines() == [
            "stdcl: error: --device cuda: torch sees no CUDA device (torch "
            f"{torch.__version__}); use --device cpu for the CPU rehearsal"]
        assert not (tmp_path / "x" / JSON_NAME).exists()


@pytest.mark.slow
def test_ucla_runs_stopped_at_the_budget_resume_on_the_next_call(tmp_path, monkeypatch) -> None:
    """Both NW-UCLA processes are stopped when the budget ends and the next call resumes them (--resume)."""
    from stdcl.bench import gpu_runs as R

    monkeypatch.setattr(R, "UCLA_TINY", [a if not a.startswith("train.epochs") else "train.epochs=500"
                                         for a in R.UCLA_TINY])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = fake_ucla(tmp_path / "ucla")
    seen = []
    for budget in (45.0, 30.0):
        now = time.monotonic()
        ctx = Context(out=tmp_path / "out", device=torch.device("cpu"), tiny=True, ucla=data, deadline=now + budget,
                      part_deadline=now + budget)
        res: dict = {}
        R.ucla_recipe(ctx, res)
        assert res["stopped_at_budget"] and time.monotonic() - now <= budget + 15
        for r in res["runs"].values():
            r["state_step"] = json.loads((Path(r["run_dir"]) / "state.json").read_text())["state"]["global_step"]
        seen.append(res["runs"])
    for name in ("baseline", "stdcl"):
        first, second = seen[0][name], seen[1][name]
        assert not first["resumed"] and second["resumed"] and not second["finished"]
        assert second["epochs_reached"] >= first["epochs_reached"]
        assert second["state_step"] > first["state_step"] >= 2  # the second call trained on from the checkpoint
