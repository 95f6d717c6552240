"""The checkpoints bundled for the app's demo: they load, match their metadata and reproduce
their recorded test accuracy on the synthetic teaching set."""

import json
from pathlib import Path

import pytest
import torch

from stdcl.checkpoint import load_encoder
from stdcl.cli import main
from stdcl.head.checkpoint import head_path, load_head

BUNDLED = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.safetensors"))
ENCODERS = [p for p in BUNDLED if not p.name.endswith(".head.safetensors")]


def test_budget_and_pairs():
    total = sum(p.stat().st_size for p in (BUNDLED[0].parent).iterdir())
    assert total < 50 * 2**20
    names = {p.stem for p in ENCODERS}
    for n in names:  # every encoder ships as a baseline / STD-CL pair
        base = n.rsplit("_", 1)[0]
        assert {f"{base}_baseline", f"{base}_stdcl"} <= names


@pytest.mark.parametrize("path", ENCODERS, ids=lambda p: p.stem)
def test_bundled_checkpoint_reproduces_its_accuracy(path, tmp_path, capsys):
    encoder, meta = load_encoder(path)
    assert meta["dataset"] == "synthetic" and meta["num_classes"] == len(meta["class_names"]) == 13
    assert meta["stdcl"] == path.stem.endswith("_stdcl")
    head = load_head(path, encoder, meta)
    assert (head is not None) == meta["stdcl"] == head_path(path).is_file()
    if head is not None:
        fmap = encoder.features(torch.zeros(1, 3, encoder.window, 25, 2)).map
        assert set(head(fmap)) == set(meta["head"]["head"]["branches"])
    assert main(["-q", "eval", str(path), "--split", "test", "--out", str(tmp_path)]) == 0
    measured = json.loads((tmp_path / "metrics.json").read_text())["top1"]
    assert measured == pytest.approx(meta["metrics"]["test_top1"], abs=0.005)
