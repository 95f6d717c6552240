"""The committed GPU check records (results/gpu/): well formed, and what the README and the estimate say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stdcl.bench.gpu import STATUSES, part_names

RESULTS = Path(__file__).resolve().parents[2] / "results" / "gpu"
FULL, RERUN = RESULTS / "2026-12-04-h200-full.json", RESULTS / "2026-12-04-h200-rerun.json"


def _read(path: Path) -> dict:
    report = json.loads(path.read_text())
    assert report["format"] == "stdcl-gpu-check" and report["device"] == "cuda:0" and not report["tiny"]
    assert report["complete"] and report["elapsed_s"] <= report["budget_s"]
    assert set(report["parts"]) <= set(part_names())
    assert all(r["status"] in STATUSES for r in report["parts"].values())
    return report


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_record_is_a_complete_cuda_check(path: Path) -> None:
    _read(path)


def test_the_rerun_after_the_fixes_passes_its_checks() -> None:
    parts = _read(RERUN)["parts"]
    assert all(parts[n]["status"] == "ok" for n in ("environment", "loss", "amp", "ddp"))
    loss = parts["loss"]["result"]
    assert loss["checks"]["device_equals_cpu"] and loss["checks"]["batched_equals_loop"]
    amp = parts["amp"]["result"]
    assert amp["checks"]["all_within_tolerance"] and len(amp["encoders"]) == 6
    assert all(row["float32_repeat_max_rel_loss_diff"] == 0 for row in amp["encoders"].values())
    ddp = parts["ddp"]["result"]
    assert ddp["backend"] == "nccl" and ddp["max_rel_loss_diff"] == 0 and ddp["checks"]["banks_equal"]


def test_the_estimate_uses_the_measured_gpu_speedup() -> None:
    from stdcl.train.estimate import GPU_SPEEDUP

    job = _read(FULL)["parts"]["finetune_job"]["result"]
    assert job["state"] == "finished" and job["device"] == "cuda"
    assert GPU_SPEEDUP == pytest.approx(job["replace_gpu_speedup_with"], abs=0.5)
