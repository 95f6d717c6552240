"""The contrastive term's schedule: off before ``stdcl.loss.start_epoch`` (banks still fill), then ramped."""

from __future__ import annotations

import pytest

from stdcl.errors import ConfigError
from stdcl.train.engine import train
from stdcl.train.optim import contrastive_factor
from stdcl.train.run_dir import read_metrics
from tests.support.training import tiny_config


def test_contrastive_factor_schedule():
    assert [contrastive_factor(e, 2, 0) for e in (0, 1.99, 2, 5)] == [0.0, 0.0, 1.0, 1.0]
    assert [contrastive_factor(e, 1, 2) for e in (0.5, 1, 2, 3, 4)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert contrastive_factor(0, 0, 0) == 1.0


def test_term_joins_at_start_epoch(tmp_path):
    cfg = tiny_config("train.epochs=2", "stdcl.loss.start_epoch=1", "train.log_every=1", "train.eval_every=0")
    train(cfg, tmp_path / "r", show_progress=False)
    steps = [r for r in read_metrics(tmp_path / "r") if r["kind"] == "step"]
    first = [r for r in steps if r["epoch"] == 1]
    second = [r for r in steps if r["epoch"] == 2]
    assert first and second
    assert all(r["contrastive_factor"] == 0.0 and r["loss"] == pytest.approx(r["ce"]) for r in first)
    # the banks filled during epoch 1, so the term is active from the first step of epoch 2
    assert all(r["contrastive_factor"] == 1.0 for r in second)
    assert any(r["spatial"] > 0 for r in first)  # computed (and logged) while off
    assert all(r["loss"] > r["ce"] for r in second if r["spatial"] + r["temporal"] > 0)


@pytest.mark.parametrize("key, value", [("stdcl.loss.start_epoch", -1), ("stdcl.loss.ramp_epochs", "x"),
                                        ("stdcl.loss.weight", ".nan"), ("optim.lr", ".nan")])
def test_bad_schedule_values(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny_config(f"{key}={value}")
