"""Exact resume (stop mid-epoch, --resume, identical weights) and the NaN/inf stop."""

from __future__ import annotations

import json

import pytest
import torch

from stdcl.checkpoint import read_meta
from stdcl.cli import main
from stdcl.train.engine import TrainingDiverged, train
from stdcl.train.run_dir import read_metrics
from stdcl.train.state import load_state
from tests.support.training import TINY, assert_same_tensors, tensors, tiny_config

# HCN keeps its dropout (torch RNG) and the synthetic set its random crop + rotation (the
# dataset's numpy Generator), so the resume must restore both; the loss draws random negatives.
EXTRA = ("train.epochs=2",)


def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, capsys):
    torch.set_num_threads(1)
    full = tmp_path / "full"
    assert not train(tiny_config(*EXTRA), full)["stopped"]

    cut = tmp_path / "cut"
    res = train(tiny_config(*EXTRA, "debug.stop_after_steps=11"), cut)  # mid-epoch 1 (16 steps per epoch)
    assert res["stopped"] and res["global_step"] == 11
    st = json.loads((cut / "state.json").read_text())["state"]
    assert (st["global_step"], st["epoch"], st["batch_in_epoch"]) == (11, 0, 11)
    assert {"torch", "python", "numpy_legacy", "dataset", "loss"} <= set(st["rng"][0])
    assert {"model", "optimizer", "scaler", "schedule", "sampler", "best"} <= set(st)
    assert any(k.startswith("loss.banks.spatial") for k in load_state(cut)["model"])

    assert main(["-q", "train", "--resume", str(cut)]) == 0
    assert "debug" not in capsys.readouterr().err
    assert_same_tensors(tensors(full / "last.safetensors"), tensors(cut / "last.safetensors"))
    assert_same_tensors(tensors(full / "best.safetensors"), tensors(cut / "best.safetensors"))
    a, b = load_state(full), load_state(cut)
    assert_same_tensors(a["model"], b["model"])  # head, banks and the loss RNG included
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    # the metrics log continues without duplicated steps, with the same numbers
    ra, rb = read_metrics(full), read_metrics(cut)
    assert [r["global_step"] for r in ra] == [r["global_step"] for r in rb]
    assert [r.get("loss", r.get("train_loss")) for r in ra] == [r.get("loss", r.get("train_loss")) for r in rb]


def test_injected_nan_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "nan"
    rc = main(["-q", "train", "--config", "synthetic", "--encoder", "hcn", "--out", str(run), *TINY,
               "train.checkpoint_every_steps=3", "debug.nan_at_step=8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "loss is nan" in err and "global step 8" in err and "last good checkpoint" in err
    meta = read_meta(run / "last.safetensors")
    assert meta["global_step"] == 6  # the save before the bad step
    assert load_state(run)["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in tensors(run / "last.safetensors").values())


def test_diverging_learning_rate_stops_and_keeps_the_previous_epoch(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "lr"
    # epoch 1 at lr 0.01, then x1e32 at epoch 2: lr = 1e30 blows the weights up after one step
    cfg = tiny_config("train.epochs=3", "optim.name=sgd", "optim.lr=0.01", "schedule.warmup_epochs=0",
                      "schedule.milestones=[1]", "schedule.gamma=1e32")
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at epoch 2.*lr 1e\+30.*global step 16\)"):
        train(cfg, run)
    assert read_meta(run / "last.safetensors")["global_step"] == 16
    assert all(torch.isfinite(t).all() for t in tensors(run / "last.safetensors").values())


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    run = tmp_path / "inf"
    step = torch.optim.SGD.step

    def poisoned(self, *a, **k):  # an update that overflows (an infinite lr is refused by the config check)
        out = step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    cfg = tiny_config("optim.name=sgd", "schedule.warmup_epochs=0", "train.checkpoint_every_steps=1")
    with pytest.raises(TrainingDiverged, match="weights became non-finite .* by global step 1"):
        train(cfg, run)
    assert not (run / "last.safetensors").exists() and not (run / "state.json").exists()
