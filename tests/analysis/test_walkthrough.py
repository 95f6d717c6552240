"""analysis.walkthrough: one sample step by step, hardest positives / negatives, twin margins, loss, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis import walkthrough as wt
from analysis.embeddings import Embeddings
from analysis.models import bundled_models, load_model
from stdcl.data.layouts import get_layout
from stdcl.data.synthetic import SyntheticSource
from stdcl.data.transforms import build_transform
from stdcl.errors import ConfigError


def _emb(n: int = 60, k: int = 4, d: int = 8, seed: int = 0, meta=None) -> Embeddings:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    spaces = {s: (rng.normal(size=(n, d)) + labels[:, None] * 0.3).astype(np.float32) for s in ("spatial", "temporal")}
    spaces["spatial"][5] = spaces["spatial"][9]  # an exact tie (rows 5 and 9 share class 1)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    return Embeddings(spaces, logits, labels.astype(np.int64), [f"s{i}" for i in range(n)], np.arange(n),
                      [f"class {c}" for c in range(k)], meta, "head", "test-key")


def _cos(emb: Embeddings, row: int, space: str) -> np.ndarray:
    x = emb.space(space).astype(np.float64)
    return np.array([x[r] @ x[row] / (np.linalg.norm(x[r]) * np.linalg.norm(x[row])) for r in range(len(x))])


@pytest.mark.parametrize("row, space", [(0, "spatial"), (5, "spatial"), (9, "spatial"), (17, "temporal")])
def test_hardest_partners_equal_brute_force(row, space):
    emb = _emb()
    sims = _cos(emb, row, space)
    pos = sorted((r for r in range(len(emb)) if emb.labels[r] == emb.labels[row] and r != row),
                 key=lambda r: (round(sims[r], 12), r))[:5]
    neg = sorted((r for r in range(len(emb)) if emb.labels[r] != emb.labels[row]),
                 key=lambda r: (-round(sims[r], 12), r))[:5]
    got_pos, got_neg = wt.hardest_partners(emb, row, space, k=5)
    assert got_pos.tolist() == pos and got_neg.tolist() == neg
    res = wt.contrast_partners(emb, row, space, k=5)
    assert [r["row"] for r in res["positives"]] == pos and [r["row"] for r in res["negatives"]] == neg
    assert all(r["label"] == emb.labels[row] for r in res["positives"])
    assert all(r["label"] != emb.labels[row] for r in res["negatives"])
    np.testing.assert_allclose([r["cosine"] for r in res["negatives"]], sims[neg], atol=1e-12)
    same = [r for r in range(len(emb)) if emb.labels[r] == emb.labels[row] and r != row]
    other = [r for r in range(len(emb)) if emb.labels[r] != emb.labels[row]]
    assert res["num_positives"] == len(same) and res["num_negatives"] == len(other)
    assert res["mean_positive"] == pytest.approx(sims[same].mean())
    assert res["mean_negative"] == pytest.approx(sims[other].mean())
    if row == 9:  # row 5 is an exact copy: the easiest positive, never among the hardest
        assert 5 not in pos


def test_anchor_loss_with_all_negatives_equals_the_released_formula():
    emb = _emb(n=24, k=3, d=6, seed=2)
    row, space, tau = 4, "temporal", 0.8
    labels = emb.labels
    # K >= the number of negatives: hard and random negatives are all the negatives, the rows are identical
    res = wt.anchor_loss(emb, row, space, num_pos=3, num_neg=100, tau=tau)
    x = emb.space(space).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x[row]
    pos = np.sort(sims[labels == labels[row]])[:3]  # the P lowest, the anchor's own slot included
    neg = sims[labels != labels[row]]
    lse = math.log(np.exp(neg / tau).sum())
    expected = np.mean([math.log1p(math.exp(lse - p / tau)) for p in pos])
    assert res["num_pos"] == 3 and res["num_neg"] == len(neg) and res["capped"] and res["valid"]
    assert res["loss"] == pytest.approx(expected, rel=1e-5)
    one_class = Embeddings(emb.spaces, emb.logits, np.zeros(len(emb), np.int64), emb.names, emb.indices,
                           emb.class_names, None, "head", "k")
    assert wt.anchor_loss(one_class, 0, space) is None


def test_class_similarity_and_twin_contrast_equal_brute_force():
    meta = [{"name": "a", "twin": 1, "twin_type": "spatial", "contrast": "mirrored", "description": "left"},
            {"name": "b", "twin": 0, "twin_type": "spatial", "contrast": "mirrored", "description": "right"},
            {"name": "c", "twin": None}, {"name": "d", "twin": None}]
    emb = _emb(meta=meta)
    row = 4  # class 0
    for space in ("spatial", "temporal"):
        sims = _cos(emb, row, space)
        want = [np.mean([sims[r] for r in range(len(emb)) if emb.labels[r] == c and r != row]) for c in range(4)]
        np.testing.assert_allclose(wt.class_similarity(emb, row, space), want, atol=1e-12)
    tw = wt.twin_contrast(emb, row)
    assert tw["twin"] == 1 and tw["twin_type"] == "spatial" and tw["contrast"] == "mirrored"
    assert tw["twin_description"] == "right"
    for space, v in tw["spaces"].items():
        sim = wt.class_similarity(emb, row, space)
        assert v["own"] == pytest.approx(sim[0]) and v["twin"] == pytest.approx(sim[1])
        assert v["margin"] == pytest.approx(sim[0] - sim[1])
    assert wt.twin_contrast(emb, 2) is None  # class 2 has no twin
    assert wt.twin_contrast(_emb(), row) is None  # no class metadata
    with pytest.raises(ConfigError):
        wt.hardest_partners(emb, 0, "spatial", k=0)


@pytest.fixture(scope="module")
def sample():
    torch.set_num_threads(1)
    src = SyntheticSource(split="test", num_samples=130, seed=0)
    tf = build_transform("ntu", False, window=32)
    return tf(src.read(6), np.random.default_rng(0))  # "sit down", one person


@pytest.mark.parametrize("kind", ["stdcl", "baseline"])
def test_walk_sample_steps_equal_the_encoder_and_head(sample, kind):
    model = load_model(next(r for r in bundled_models() if r.label == f"synthetic_hcn_{kind}"))
    walk = wt.walk_sample(model, sample)
    with torch.no_grad():
        feats = model.encoder.features(torch.as_tensor(sample)[None])
        fmap = feats.map[0].double()  # (M, C', T', V')
        logits = model.encoder.classify(feats)[0]
    m, c, t, v = fmap.shape
    assert walk.feature_shape == (c, t, v) == tuple(model.encoder.feature_shape(32)) and walk.persons == m
    np.testing.assert_allclose(walk.per_joint, fmap.mean(2).mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(walk.per_frame, fmap.mean(3).mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(walk.activity, fmap.abs().mean(1).mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(walk.logits, logits.numpy(), atol=1e-5)
    assert walk.prediction == int(logits.argmax())
    if kind == "stdcl":
        with torch.no_grad():
            emb = model.head(feats.map)
        assert walk.st_source == "head"
        np.testing.assert_allclose(walk.spatial, emb["spatial"][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(walk.temporal, emb["temporal"][0].numpy(), atol=1e-5)
    else:
        assert walk.st_source == "pooled"
        np.testing.assert_allclose(walk.spatial, walk.per_joint.reshape(-1), atol=1e-6)
        np.testing.assert_allclose(walk.temporal, walk.per_frame.reshape(-1), atol=1e-6)
    with pytest.raises(ConfigError):
        wt.walk_sample(model, sample[None])


def test_figures():
    layout = get_layout("ntu25")
    vals = np.arange(64 * 25, dtype=float).reshape(64, 25)
    fig = wt.channel_heatmap(vals, list(layout.joints), "joint")
    assert fig.data[0].type == "heatmap" and list(fig.data[0].x) == list(layout.joints)
    assert np.array_equal(np.asarray(fig.data[0].z), vals)
    centred = wt.channel_heatmap(vals, None, "joint", center=True)
    np.testing.assert_allclose(np.asarray(centred.data[0].z), vals - vals.mean(1, keepdims=True))
    assert list(centred.data[0].x) == list(range(25))
    with pytest.raises(ConfigError):
        wt.channel_heatmap(vals, ["a"], "joint")
    strips = wt.embedding_strips({"s": np.ones(4), "t": np.arange(6.0)})
    z = np.asarray(strips.data[0].z, dtype=float)
    assert z.shape == (2, 6) and np.isnan(z[0, 4:]).all() and np.array_equal(z[1], np.arange(6.0))
    bars = wt.class_similarity_figure({"spatial": np.array([0.9, 0.1, 0.2]), "temporal": np.array([0.8, 0.7, 0.0])},
                                      ["a", "b", "c"], own=0, twin=1)
    assert [t.name for t in bars.data] == ["spatial", "temporal"]
    assert list(bars.data[0].marker.line.color) == ["black", "#d62728", "rgba(0,0,0,0)"]
    with pytest.raises(ConfigError):
        wt.class_similarity_figure({"spatial": np.zeros(2)}, ["a", "b", "c"], own=0)
    star = wt.add_query_marker(bars, (1.5, -2.0))
    assert star.data[-1].marker.symbol == "star" and tuple(star.data[-1].x) == (1.5,)
