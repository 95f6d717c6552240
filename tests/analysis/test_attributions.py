"""analysis.attributions: exact decomposition of the STD-CL embeddings, cosine parts, class
centroids, Grad-CAM (against an independent autograd computation), frame mapping, attention
weights, joint relations and the one-sample bundle; no gradients or mode changes left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import attributions as A
from analysis.datasets import open_analysis_data, stratified_subset
from analysis.embeddings import Embeddings, embed_batch, extract_embeddings
from analysis.models import LoadedModel, bundled_models, load_model
from stdcl.encoders import available, build_encoder
from stdcl.errors import ConfigError
from stdcl.head import DecouplingHead

ENCODERS = tuple(available())


def _cos(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))


def _no_grads(*modules: torch.nn.Module) -> bool:
    return all(p.grad is None for m in modules for p in m.parameters())


@pytest.fixture(scope="session")
def bundled(tmp_path_factory):
    """Both bundled models, a batch of test samples and STD-CL embeddings of a small subset."""
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STDCL_CACHE", str(tmp_path_factory.mktemp("cache")))
        refs = {r.label: r for r in bundled_models()}
        stdcl = load_model(refs["synthetic_hcn_stdcl"])
        base = load_model(refs["synthetic_hcn_baseline"])
        data = open_analysis_data(stdcl, "test")
        ids = stratified_subset(data.labels, 52, seed=1)
        emb = extract_embeddings(stdcl, data, ids)
    x = torch.stack([torch.as_tensor(data.dataset[int(i)][0]) for i in ids[:5]])
    labels = data.labels[ids[:5]]
    return {"stdcl": stdcl, "base": base, "emb": emb, "x": x, "labels": labels}


def _small_model(name: str, head: DecouplingHead | None = None, window: int = 16, persons: int = 1,
                 seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    enc = build_encoder(name, 5, layout="ucla20", num_person=persons, window=window)
    return LoadedModel(enc, head, {}, Path(f"{name}.safetensors"), "digest", f"random {name}", "file")


# -- decomposition ------------------------------------------------------------------------------------

def test_decomposition_of_bundled_stdcl_is_exact(bundled):
    m, x = bundled["stdcl"], bundled["x"]
    d = A.decompose(m, x)
    with torch.no_grad():
        ref = m.head(m.encoder.features(x).map)  # independent forward of the head
    reference = embed_batch(m, x)
    v = m.layout.num_joints
    assert set(d) == {"spatial", "temporal"}
    assert d["spatial"]["terms"].shape == (5, v, 256)  # HCN map keeps joints: V' = V
    assert d["temporal"]["terms"].shape == (5, 32, 256)  # and frames: T' = window = 32
    for k, part in d.items():
        assert part["bias"].shape == (256,)
        np.testing.assert_allclose(part["terms"].sum(1) + part["bias"], ref[k].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(part["embedding"], reference[k].numpy(), atol=1e-6, rtol=0)
    # cosine parts against the true class centroid sum to the cosine of the embedding
    for k, part in d.items():
        cent = A.class_centroids(bundled["emb"], k)
        refv = cent[bundled["labels"]]
        parts, bias_part = A.similarity_contributions(part["terms"], part["bias"], refv)
        assert parts.shape == (5, part["terms"].shape[1]) and bias_part.shape == (5,)
        np.testing.assert_allclose(parts.sum(1) + bias_part, _cos(ref[k].numpy(), refv), atol=1e-5, rtol=0)
        assert (_cos(ref[k].numpy(), refv) > 0.5).all()  # a trained head: samples sit near their class


def test_decomposition_with_random_attention_head():
    enc_shape = build_encoder("hcn", 5, layout="ucla20", num_person=2, window=16).feature_shape(16)
    torch.manual_seed(3)
    head = DecouplingHead(enc_shape, reduction=4, dim=24, pooling="attention")
    for br in (head.spatial, head.temporal):  # zero-initialised scores give uniform weights: make them not
        torch.nn.init.normal_(br.score.weight, std=0.5)
        torch.nn.init.normal_(br.score.bias)
        torch.nn.init.normal_(br.project.bias)
    m = _small_model("hcn", head, persons=2)
    x = torch.randn(3, 3, 16, 20, 2)
    d = A.decompose(m, x)
    with torch.no_grad():
        fmap = m.encoder.features(x).map
        ref = head(fmap)
    for k in ("spatial", "temporal"):
        assert d[k]["terms"].shape == (3, 20 if k == "spatial" else 16, 24)
        np.testing.assert_allclose(d[k]["terms"].sum(1) + d[k]["bias"], ref[k].numpy(), atol=1e-5, rtol=0)
        c = np.random.default_rng(0).normal(size=24)
        parts, b = A.similarity_contributions(d[k]["terms"], d[k]["bias"], c)
        np.testing.assert_allclose(parts.sum(1) + b, _cos(ref[k].numpy(), c), atol=1e-5, rtol=0)
    # attention weights against a hand computation of the scoring layer's softmax
    w = A.attention_weights(m, x)
    flat = fmap.flatten(0, 1)
    for k, pooled in (("spatial", flat.mean(2)), ("temporal", flat.mean(3))):
        sc = getattr(head, k).score
        logits = pooled.transpose(1, 2) @ sc.weight.detach()[0] + sc.bias.detach()
        expect = torch.softmax(logits, -1).view(3, 2, -1).numpy()
        assert w[k].shape == expect.shape
        np.testing.assert_allclose(w[k], expect, atol=1e-6)
        np.testing.assert_allclose(w[k].sum(-1), 1.0, atol=1e-6)
        assert w[k].std() > 1e-3  # not uniform
    assert _no_grads(m.encoder, head)


def test_similarity_contributions_by_hand():
    terms = np.array([[[1.0, 0.0], [0.0, 2.0]]])  # one sample, two positions, D = 2
    bias = np.array([0.0, 1.0])  # s = (1, 3)
    parts, b = A.similarity_contributions(terms, bias, np.array([0.0, 1.0]))
    denom = np.sqrt(10.0)
    np.testing.assert_allclose(parts, [[0.0, 2.0 / denom]])
    np.testing.assert_allclose(b, [1.0 / denom])
    # a zero reference has no cosine: all parts 0, never NaN
    parts, b = A.similarity_contributions(terms, bias, np.zeros(2))
    assert np.all(parts == 0) and np.all(b == 0)
    with pytest.raises(ConfigError, match="reference"):
        A.similarity_contributions(terms, bias, np.zeros(3))
    with pytest.raises(ConfigError, match="terms"):
        A.similarity_contributions(terms[0], bias, np.zeros(2))


def test_class_centroids_by_hand():
    x = np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    emb = Embeddings({"spatial": x}, np.zeros((4, 3), np.float32), np.array([0, 0, 2, 2]), list("abcd"),
                     np.arange(4), ["c0", "c1", "c2"], None, "head", "k")
    c = A.class_centroids(emb, "spatial")
    assert c.dtype == np.float32 and c.shape == (3, 2)
    np.testing.assert_allclose(c[0], [(0.6 + 0.0) / 2, (0.8 + 1.0) / 2], atol=1e-7)
    np.testing.assert_array_equal(c[1], [0.0, 0.0])  # absent class -> zeros
    np.testing.assert_allclose(c[2], [0.5, 0.0])  # a zero embedding counts as a zero unit vector
    assert np.isfinite(c).all()


def test_baseline_has_no_decomposition(bundled):
    with pytest.raises(ConfigError, match="no STD-CL head"):
        A.decompose(bundled["base"], bundled["x"])
    assert A.attention_weights(bundled["base"], bundled["x"]) is None
    assert A.attention_weights(bundled["stdcl"], bundled["x"]) is None  # mean pooling
    assert A.joint_relations(bundled["stdcl"], bundled["x"]) is None  # HCN learns no joint graph


# -- Grad-CAM -----------------------------------------------------------------------------------------

def _cam_by_hand(enc, x: torch.Tensor, cls: list[int]) -> np.ndarray:
    """Grad-CAM through the *full* forward, capturing the last block's output with a hook, one sample at a time."""
    enc.eval()
    out = []
    for n, c in enumerate(cls):
        store = {}
        hook = enc.blocks[-1].register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
        try:
            logits = enc(x[n:n + 1])
        finally:
            hook.remove()
        a = store["a"]  # (M, C', T', V')
        (g,) = torch.autograd.grad(logits[0, c], a)
        w = g.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((w * a).sum(1)).sum(0).detach()
        out.append((cam / cam.max()).numpy())
    return np.stack(out)


def test_grad_cam_equals_hand_computation_agcn():
    m = _small_model("agcn", persons=2, seed=1)
    x = torch.randn(3, 3, 16, 20, 2)
    m.encoder.train()  # the call must switch to eval and restore this
    before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    g = A.grad_cam(m, x)
    assert m.encoder.training
    assert _no_grads(m.encoder)
    after = m.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched
    with torch.no_grad():
        m.encoder.eval()
        pred = m.encoder(x).argmax(1).tolist()
    np.testing.assert_array_equal(g["class_index"], pred)
    np.testing.assert_allclose(g["cam"], _cam_by_hand(m.encoder, x, pred), atol=1e-5)
    # an explicit class (one for all samples, or one per sample)
    g2 = A.grad_cam(m, x, class_index=4)
    np.testing.assert_array_equal(g2["class_index"], [4, 4, 4])
    np.testing.assert_allclose(g2["cam"], _cam_by_hand(m.encoder, x, [4, 4, 4]), atol=1e-5)
    g3 = A.grad_cam(m, x, class_index=np.array([0, 1, 2]))
    np.testing.assert_allclose(g3["cam"], _cam_by_hand(m.encoder, x, [0, 1, 2]), atol=1e-5)
    with pytest.raises(ConfigError, match="class_index"):
        A.grad_cam(m, x, class_index=5)
    with pytest.raises(ConfigError, match="class_index"):
        A.grad_cam(m, x, class_index=[0, 1])
    assert _no_grads(m.encoder)


@pytest.mark.parametrize("name", ENCODERS)
def test_grad_cam_shapes_every_encoder(name):
    window = 32 if name == "hcn" else 16
    persons = 2 if name == "hcn" else 1
    m = _small_model(name, window=window, persons=persons)
    x = torch.randn(2, 3, window, 20, persons)
    m.encoder.train()
    g = A.grad_cam(m, x)
    _, t, v = m.encoder.feature_shape(window)
    assert g["cam"].shape == (2, t, v) and g["frames"].shape == (2, window, 20)
    assert g["cam"].min() >= 0 and np.allclose(g["cam"].max((1, 2)), 1.0, atol=1e-6)
    assert g["logits"].shape == (2, 5)
    np.testing.assert_array_equal(g["class_index"], g["logits"].argmax(1))
    np.testing.assert_allclose(g["frames"], A.cam_to_frames(g["cam"], window))
    assert m.encoder.training and _no_grads(m.encoder)
    rel = A.joint_relations(m, x)
    if name == "hcn":
        assert rel is None
    else:
        assert len(rel) == 10 and all(r.shape == (20, 20) and np.isfinite(r).all() for r in rel)
    assert m.encoder.training


def test_grad_cam_bundled_hcn(bundled):
    m, x = bundled["stdcl"], bundled["x"]
    g = A.grad_cam(m, x)
    assert g["cam"].shape == (5, 32, 25)
    np.testing.assert_array_equal(g["frames"], g["cam"])  # HCN's map has T' = T: identity mapping
    np.testing.assert_array_equal(g["class_index"], bundled["labels"])  # the demo model gets these right
    assert _no_grads(m.encoder, m.head)


def test_cam_to_frames():
    const = np.full((2, 4, 3), 0.7)
    np.testing.assert_allclose(A.cam_to_frames(const, 16), 0.7, atol=1e-7)
    rng = np.random.default_rng(0)
    cam = rng.random((2, 5, 3))
    f = A.cam_to_frames(cam, 17)
    assert f.shape == (2, 17, 3)
    np.testing.assert_allclose(f[:, 0], cam[:, 0], atol=1e-7)
    np.testing.assert_allclose(f[:, -1], cam[:, -1], atol=1e-7)
    np.testing.assert_allclose(f[:, ::4], cam, atol=1e-7)  # 17 frames over 5 positions: every 4th frame is a position
    np.testing.assert_allclose(f[:, 2], (cam[:, 0] + cam[:, 1]) / 2, atol=1e-7)  # midway
    ramp = np.linspace(0, 1, 4)[None, :, None]
    np.testing.assert_allclose(A.cam_to_frames(ramp, 10)[0, :, 0], np.linspace(0, 1, 10), atol=1e-7)
    np.testing.assert_allclose(A.cam_to_frames(cam, 5), cam, atol=1e-7)
    with pytest.raises(ConfigError):
        A.cam_to_frames(cam[0], 5)


# -- the one-sample bundle ----------------------------------------------------------------------------

def test_sample_attributions_stdcl(bundled):
    m, x, emb = bundled["stdcl"], bundled["x"], bundled["emb"]
    cents = {k: A.class_centroids(emb, k) for k in ("spatial", "temporal")}
    m.encoder.train()
    m.head.train()
    try:
        r = A.sample_attributions(m, x[1], cents)
        assert m.encoder.training and m.head.training
    finally:
        m.encoder.eval()
        m.head.eval()
    assert _no_grads(m.encoder, m.head)
    with torch.no_grad():
        logits = m.encoder(x[1:2])[0].numpy()
        emb1 = m.head(m.encoder.features(x[1:2]).map)
    np.testing.assert_allclose(r["logits"], logits, atol=1e-5)
    assert r["prediction"] == r["class_index"] == int(logits.argmax())
    np.testing.assert_allclose(r["probabilities"].sum(), 1.0)
    assert r["feature_shape"] == (64, 32, 25)
    g = A.grad_cam(m, x[1:2])
    np.testing.assert_allclose(r["grad_cam"], g["cam"][0], atol=1e-6)
    np.testing.assert_allclose(r["grad_cam_frames"], g["frames"][0], atol=1e-6)
    d = A.decompose(m, x[1:2])
    for k, length in (("spatial", 25), ("temporal", 32)):
        s = r[k]
        assert s["term_norms"].shape == (length,) and s["contributions"].shape == (length,)
        np.testing.assert_allclose(s["term_norms"], np.linalg.norm(d[k]["terms"][0], axis=1), rtol=1e-6)
        cos = _cos(emb1[k][0].numpy(), cents[k][r["class_index"]])
        assert s["cosine"] == pytest.approx(float(cos), abs=1e-5)
        assert s["contributions"].sum() + s["bias_contribution"] == pytest.approx(float(cos), abs=1e-5)
        assert s["embedding_norm"] == pytest.approx(float(np.linalg.norm(emb1[k][0].numpy())), rel=1e-5)
    assert r["attention"] is None and r["joint_relations"] is None
    # another class as reference and Grad-CAM target; no centroids -> no cosine parts
    other = (r["class_index"] + 1) % 13
    r2 = A.sample_attributions(m, x[1].numpy(), None, class_index=other)
    assert r2["class_index"] == other and r2["prediction"] == r["prediction"]
    np.testing.assert_allclose(r2["grad_cam"], A.grad_cam(m, x[1:2], other)["cam"][0], atol=1e-6)
    assert r2["spatial"]["contributions"] is None and r2["spatial"]["cosine"] is None
    np.testing.assert_allclose(r2["spatial"]["term_norms"], r["spatial"]["term_norms"])
    with pytest.raises(ConfigError, match="one sample"):
        A.sample_attributions(m, x, cents)
    with pytest.raises(ConfigError, match="centroids"):
        A.sample_attributions(m, x[1], {"spatial": cents["spatial"][:, :10]})


def test_sample_attributions_baseline_and_gcn(bundled):
    r = A.sample_attributions(bundled["base"], bundled["x"][0], None)
    assert r["spatial"] is None and r["temporal"] is None and r["attention"] is None
    assert r["grad_cam"].shape == (32, 25) and r["grad_cam_frames"].shape == (32, 25)
    # a GCN with an attention head: relations, attention weights and the decomposition all present
    enc_shape = build_encoder("ctrgcn", 5, layout="ucla20", num_person=1, window=16).feature_shape(16)
    head = DecouplingHead(enc_shape, dim=16, pooling="attention")
    m = _small_model("ctrgcn", head)
    x = torch.randn(3, 16, 20, 1)
    r = A.sample_attributions(m, x, None)
    assert r["grad_cam"].shape == (4, 20) and r["grad_cam_frames"].shape == (16, 20)
    assert r["spatial"]["term_norms"].shape == (20,) and r["temporal"]["term_norms"].shape == (4,)
    assert r["attention"]["spatial"].shape == (1, 20) and r["attention"]["temporal"].shape == (1, 4)
    np.testing.assert_allclose(r["attention"]["spatial"], 1 / 20, atol=1e-7)  # zero-initialised scores
    assert len(r["joint_relations"]) == 10
    np.testing.assert_allclose(r["joint_relations"][0], A.joint_relations(m, x[None])[0], atol=1e-6)
    assert _no_grads(m.encoder, head)
