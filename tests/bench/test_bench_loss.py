"""``stdcl bench loss`` on a tiny bank: the batched loss equals the released loop, and the op counts are reported."""

import torch

from stdcl.bench.loss import bench_loss, module_step_counts, op_counts


def test_bench_loss_reports_equality_and_op_counts(capsys):
    row = bench_loss(bank_size=300, dim=16, batch=6, num_classes=3, repeats=1, num_pos=4, num_neg=16)
    assert row["valid_anchors"] == 6 and row["max_loss_diff"] <= 1e-5 and row["speedup"] > 0
    for key in ("ops", "module_step_ops"):
        assert 0 < row[key]["aten_ops"] < 1000 and row[key]["kernels"] is None  # kernels/copies: CUDA only
    assert row["module_step_ops"]["aten_ops"] > row["ops"]["aten_ops"]  # two branches and the bank writes
    assert "one STDCLLoss step (2 branches):" in capsys.readouterr().out


def test_op_counts_and_module_step():
    counts = op_counts(lambda: torch.ones(3).add_(1).sum(), torch.device("cpu"))
    assert counts["aten_ops"] >= 3 and counts["htod"] is None
    step = module_step_counts(200, 8, 4, 2, 2, 8, torch.device("cpu"))
    assert step == module_step_counts(200, 8, 4, 2, 2, 8, torch.device("cpu"))  # deterministic
