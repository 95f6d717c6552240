"""analysis core: loading models, the data they read, and embeddings (with the on-disk cache)."""

import shutil

import numpy as np
import pytest
import torch

import analysis.embeddings as embeddings_mod
from analysis.datasets import AnalysisData, check_compatible, open_analysis_data, stratified_subset
from analysis.embeddings import embed_batch, extract_embeddings, pooled_embeddings
from analysis.models import (LoadedModel, bundled_models, discover_models, load_model,
                             load_official_model)
from stdcl.encoders import build_encoder
from stdcl.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def models():
    refs = {r.label: r for r in bundled_models()}
    return {k: load_model(refs[f"synthetic_hcn_{k}"]) for k in ("baseline", "stdcl")}


@pytest.fixture(scope="module")
def data(models):
    return open_analysis_data(models["baseline"], "test")


def test_bundled_pairs_load_with_heads_only_for_stdcl(models):
    assert {r.label for r in bundled_models()} >= {"synthetic_hcn_baseline", "synthetic_hcn_stdcl"}
    assert models["baseline"].head is None and not models["baseline"].stdcl
    assert models["stdcl"].head is not None and models["stdcl"].kind == "bundled"
    assert models["stdcl"].class_names[0] == "wave left hand" and len(models["stdcl"].class_names) == 13
    assert models["baseline"].digest != models["stdcl"].digest


def test_digest_follows_content_and_discovery_finds_runs_and_files(tmp_path, models):
    src = models["stdcl"].path
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: {}\n")
    for suffix in (".safetensors", ".json", ".head.safetensors"):
        shutil.copy(src.with_name(src.stem + suffix), run / f"best{suffix}")
    loose = tmp_path / "runs" / "loose.safetensors"
    shutil.copy(src, loose)
    shutil.copy(src.with_suffix(".json"), loose.with_suffix(".json"))
    (tmp_path / "runs" / "empty_run").mkdir()
    (tmp_path / "runs" / "empty_run" / "config.yaml").write_text("data: {}\n")  # no checkpoint yet: skipped
    refs = discover_models(tmp_path / "runs")
    assert [(r.label, r.kind) for r in refs] == [("loose", "file"), ("r1", "run")]
    from_run = load_model(refs[1])
    assert from_run.digest == models["stdcl"].digest and from_run.head is not None
    loose_model = load_model(loose)
    assert loose_model.head is None  # no head file beside it: analysed as its encoder alone
    assert loose_model.digest != models["stdcl"].digest
    with pytest.raises(DataError, match="no such file"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(DataError, match="not a folder"):
        discover_models(tmp_path / "missing")


def test_official_weights_load_weights_only(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder("hcn", num_classes=13, layout="ntu25", window=32).eval()
    pt = tmp_path / "hcn.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}}, pt)
    m = load_official_model(pt, "hcn", 13, window=32)
    x = torch.randn(2, 3, 32, 25, 2)
    with torch.no_grad():
        assert torch.equal(m.encoder(x), enc(x))
    assert m.kind == "official" and m.head is None
    with pytest.raises(DataError, match="hcn.pt"):
        load_official_model(pt, "hcn", 60, window=32)  # wrong class count: one line naming the file

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, bad)
    with pytest.raises(DataError, match=r"holds Python objects, not only tensors \(print\); refusing"):
        load_official_model(bad, "hcn", 13, window=32)


def test_analysis_data_matches_the_dataset_and_checks_compatibility(models, data):
    assert len(data) == 858 and data.class_names == models["baseline"].class_names
    assert np.array_equal(data.labels, [data.dataset[i][1] for i in range(len(data))])
    assert data.identity["split"] == "test" and data.identity["window"] == 32
    val = open_analysis_data(models["baseline"], "val")
    assert 0 < len(val) < 300 and set(val.names).isdisjoint(data.names)
    wrong_classes = LoadedModel(build_encoder("hcn", num_classes=10, layout="ntu25", window=32), None, {}, None,
                                "x", "ten-classes", "file")
    with pytest.raises(ConfigError, match="10 classes, the data 13"):
        check_compatible(wrong_classes, data)
    wrong_layout = LoadedModel(build_encoder("ctrgcn", num_classes=13, layout="ucla20", window=32), None, {}, None,
                               "x", "ucla-model", "file")
    with pytest.raises(ConfigError, match="20 joints"):
        check_compatible(wrong_layout, data)


def test_stratified_subset_keeps_class_proportions():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    idx = stratified_subset(labels, 40, seed=1)
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [20, 10, 6, 4]
    assert np.array_equal(stratified_subset(labels, 500), np.arange(200))
    assert np.array_equal(stratified_subset(labels, 40, seed=1), idx)


def test_embeddings_are_what_they_claim(models, data):
    x = torch.as_tensor(np.stack([data.dataset[i][0] for i in range(4)]))
    for name, model in models.items():
        out = embed_batch(model, x)
        feats = model.encoder.features(x)
        sp = feats.map.mean(3).flatten(2).mean(1)  # mean over T', joint-major flatten, mean over persons
        assert torch.allclose(out["spatial_pooled"], sp) and out["spatial_pooled"].shape[1] == 64 * 25
        assert torch.allclose(out["temporal_pooled"], feats.map.mean(4).flatten(2).mean(1))
        fc = model.encoder.classifier
        assert torch.allclose(fc(out["global"]), out["logits"], atol=1e-5)  # global = the classifier's input
        assert torch.allclose(out["logits"], model.encoder(x), atol=1e-5)
        if model.head is None:
            assert out["spatial"] is out["spatial_pooled"] and out["temporal"] is out["temporal_pooled"]
        else:
            ref = model.head(feats.map)
            assert torch.allclose(out["spatial"], ref["spatial"]) and out["temporal"].shape == (4, 256)
    s, t = pooled_embeddings(torch.arange(2 * 2 * 3 * 4 * 5.0).view(2, 2, 3, 4, 5))
    assert s.shape == (2, 15) and t.shape == (2, 12)


def test_extract_is_cached_by_content_data_and_selection(models, data, tmp_path, monkeypatch):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path))
    rows = stratified_subset(data.labels, 39)
    emb = extract_embeddings(models["stdcl"], data, rows, progress=lambda done, total: None)
    assert len(emb) == 39 and emb.st_source == "head" and np.array_equal(emb.indices, rows)
    assert np.array_equal(emb.labels, data.labels[rows]) and emb.names == [data.names[i] for i in rows]
    assert emb.accuracy == pytest.approx((emb.logits.argmax(1) == emb.labels).mean())
    assert list((tmp_path / "embeddings").glob("*.npz"))

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(embeddings_mod, "compute_embeddings", boom)
    again = extract_embeddings(models["stdcl"], data, rows)
    assert again.key == emb.key and again.names == emb.names and again.class_meta == emb.class_meta
    for k in emb.spaces:
        assert np.array_equal(again.spaces[k], emb.spaces[k])
    with pytest.raises(AssertionError, match="recomputed"):
        extract_embeddings(models["stdcl"], data, rows[:-1])  # another selection: another key
    with pytest.raises(AssertionError, match="recomputed"):
        extract_embeddings(models["baseline"], data, rows)  # another checkpoint: another key
    # a damaged cache entry (flipped bytes, cut short, another layout) is recomputed, not an error
    entry = next((tmp_path / "embeddings").glob("*.npz"))
    good = entry.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for damaged in (bytes(flipped), good[: len(good) // 3], b""):
        entry.write_bytes(damaged)
        with pytest.raises(AssertionError, match="recomputed"):
            extract_embeddings(models["stdcl"], data, rows)
    entry.write_bytes(good)
    sub = emb.subset(np.array([2, 0]))
    assert sub.names == [emb.names[2], emb.names[0]] and np.array_equal(sub.spaces["global"][1], emb.spaces["global"][0])
    assert isinstance(data, AnalysisData)
