"""``train.init_from`` and ``stdcl eval`` read weights through the shared loader: bundled names work."""

from __future__ import annotations

import torch

from stdcl.encoders import build_encoder
from stdcl.train.config import load_config
from stdcl.train.evaluate import evaluate
from stdcl.train.model_build import init_from
from stdcl.weights import load

BUNDLED = "bundled:synthetic_hcn_baseline"


def test_init_from_a_bundled_checkpoint_copies_its_weights():
    cfg = load_config("synthetic", encoder="hcn", overrides=[f"train.init_from={BUNDLED}", "data.window=32"])
    assert cfg["train"]["init_from"] == BUNDLED  # not turned into a path
    ref = load(BUNDLED).encoder
    torch.manual_seed(0)
    enc = build_encoder("hcn", ref.num_classes, layout=ref.layout, num_person=ref.num_person, window=ref.window)
    init_from(enc, cfg["train"]["init_from"])
    for k, v in ref.state_dict().items():
        assert torch.equal(enc.state_dict()[k], v), k


def test_eval_of_a_bundled_checkpoint(tmp_path):
    res = evaluate(BUNDLED, overrides=["data.source.num_samples=260"], out_dir=tmp_path / "ev")
    assert res["encoder"] == "hcn" and res["n"] > 0 and 0.0 <= res["top1"] <= 1.0
    assert (tmp_path / "ev").is_dir()
