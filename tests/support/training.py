"""Shared tiny training configs for the tests/test_train_*.py files (synthetic data, small models)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from stdcl.train.config import load_config

#: ~200 synthetic samples (130 training items, 13 validation, 57 test), 16 frames, batch 8.
TINY = ["data.source={num_samples: 200}", "data.window=16", "train.batch_size=8", "train.eval_batch_size=64",
        "data.num_workers=0", "stdcl.loss.num_pos=2", "stdcl.loss.num_neg=8", "stdcl.head.dim=32",
        "train.log_every=4", "train.progress=false", "train.tensorboard=false"]


def tiny_config(*extra: str, encoder: str = "hcn", modality: str | None = None, stdcl: str = "on") -> dict:
    return load_config("synthetic", encoder=encoder, modality=modality, stdcl=stdcl, overrides=TINY + list(extra))


def tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"
