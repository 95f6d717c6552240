"""Where and in what batches embeddings are computed: the GPU when PyTorch sees one (else the CPU), a
copy of the shared model on that device, and results that do not depend on the batch size."""

from __future__ import annotations

import numpy as np
import torch

from analysis import embeddings as E
from analysis.datasets import open_analysis_data
from analysis.models import bundled_models, load_model


def test_the_gpu_is_used_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert E.embedding_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E.embedding_device() == torch.device("cpu")
    assert E.DEFAULT_BATCH["cuda"] > E.DEFAULT_BATCH["cpu"]


def _model():
    return load_model(next(r for r in bundled_models() if r.label == "synthetic_hcn_stdcl").path)


def test_another_device_gets_a_copy_and_the_shared_model_stays():
    model = _model()
    assert E._on_device(model, torch.device("cpu")) is model
    moved = E._on_device(model, torch.device("meta"))
    assert moved is not model and moved.digest == model.digest
    assert next(moved.encoder.parameters()).device.type == "meta"
    assert next(moved.head.parameters()).device.type == "meta"
    assert next(model.encoder.parameters()).device.type == "cpu"  # other pages still read it on the CPU


def test_batches_of_the_default_size_and_results_independent_of_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = _model()
    data = open_analysis_data(model, "test")
    ids = np.arange(70)
    done = []
    auto = E.compute_embeddings(model, data, ids, progress=lambda d, t: done.append((d, t)))
    assert done == [(64, 70), (70, 70)]  # the CPU default: 64 per batch
    small = E.compute_embeddings(model, data, ids, batch_size=16, progress=lambda d, t: None)
    assert auto.key == small.key and set(auto.spaces) == set(small.spaces)
    for k in auto.spaces:
        np.testing.assert_allclose(auto.spaces[k], small.spaces[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(auto.logits, small.logits, rtol=1e-4, atol=1e-5)
