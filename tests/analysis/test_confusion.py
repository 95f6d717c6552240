"""analysis.confusion: exact counts and orderings on hand-built predictions, alignment by name,
errors for mismatched inputs, and consistency on the bundled baseline vs STD-CL checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.confusion import align, cell_samples, confidences, confusion, confusion_change, most_confused
from analysis.datasets import open_analysis_data
from analysis.embeddings import Embeddings, extract_embeddings
from analysis.models import bundled_models, load_model
from stdcl.errors import ConfigError

CLASSES = ["c0", "c1", "c2", "c3"]


def _emb(labels, preds, scores=None, names=None, classes=CLASSES) -> Embeddings:
    """Logits that are 0 except ``score`` at the predicted class (confidence grows with the score)."""
    labels = np.asarray(labels, dtype=np.int64)
    n, k = len(labels), len(classes)
    scores = np.full(n, 2.0) if scores is None else np.asarray(scores, dtype=np.float64)
    logits = np.zeros((n, k), np.float32)
    logits[np.arange(n), preds] = scores
    names = names or [f"s{i:02d}" for i in range(n)]
    return Embeddings({"global": np.zeros((n, 2), np.float32)}, logits, labels, list(names),
                      np.arange(100, 100 + n), list(classes), None, "pooled", "key")


# c0: 4 samples (0, 1, 1, 3); c1: 2 (1, 0); c2: 2 (2, 0); c3: 4 (3, 3, 3, 2)
LABELS = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
PREDS = [0, 1, 1, 3, 1, 0, 2, 0, 3, 3, 3, 2]
SCORES = [1, 1, 3, 2, 2, 1, 1, 4, 1, 1, 1, 5]


def _softmax_top(score: float, k: int = 4) -> float:
    return float(np.exp(score) / (np.exp(score) + k - 1))


def test_confusion_counts():
    c = confusion(_emb(LABELS, PREDS, SCORES))
    expect = np.array([[1, 2, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 3]])
    np.testing.assert_array_equal(c["matrix"], expect)
    assert c["matrix"].dtype == np.int64
    assert c["support"] == {"c0": 4, "c1": 2, "c2": 2, "c3": 4}
    assert c["per_class"] == {"c0": 0.25, "c1": 0.5, "c2": 0.5, "c3": 0.75}
    assert c["top1"] == pytest.approx(6 / 12) and c["n"] == 12
    assert c["top5"] == 1.0  # only 4 classes: every label is in the top 4
    # a class without samples: accuracy None, support 0
    c = confusion(_emb([0, 0], [0, 1]))
    assert c["per_class"]["c2"] is None and c["support"]["c2"] == 0


def test_cell_samples_sorted_by_confidence():
    e = _emb(LABELS, PREDS, SCORES)
    cell = cell_samples(e, 0, 1)
    assert [s["row"] for s in cell] == [2, 1]  # score 3 before score 1
    assert [s["name"] for s in cell] == ["s02", "s01"]
    assert [s["index"] for s in cell] == [102, 101]
    assert cell[0]["confidence"] == pytest.approx(_softmax_top(3))
    assert cell[1]["confidence"] == pytest.approx(_softmax_top(1))
    np.testing.assert_allclose(confidences(e), [_softmax_top(s) for s in SCORES])
    diag = cell_samples(e, 3, 3)
    assert [s["row"] for s in diag] == [8, 9, 10]  # equal confidence: row order
    assert cell_samples(e, 1, 2) == []
    with pytest.raises(ConfigError, match="true class"):
        cell_samples(e, 4, 0)
    with pytest.raises(ConfigError, match="predicted class"):
        cell_samples(e, 0, -1)


def test_most_confused_order_and_ties():
    e = _emb(LABELS, PREDS, SCORES)
    mc = most_confused(e)
    cells = [(r["true"], r["predicted"], r["count"], r["rate"]) for r in mc]
    # count 2 first; count 1 with rate 0.5 before rate 0.25; equal count and rate by class ids
    assert cells == [(0, 1, 2, 0.5), (1, 0, 1, 0.5), (2, 0, 1, 0.5), (0, 3, 1, 0.25), (3, 2, 1, 0.25)]
    assert mc[0]["true_name"] == "c0" and mc[0]["predicted_name"] == "c1"
    assert mc[0]["samples"] == ["s02", "s01"]
    assert mc[4]["samples"] == ["s11"]
    assert [(r["true"], r["predicted"]) for r in most_confused(e, top=2)] == [(0, 1), (1, 0)]
    assert most_confused(_emb([0, 1], [0, 1])) == []  # all correct: no off-diagonal cells


def test_confusion_change_aligns_by_name():
    a = _emb(LABELS, PREDS, SCORES)
    preds_b = [0, 0, 1, 0, 1, 1, 2, 0, 3, 3, 2, 3]  # c0 +0.5, c1 +0.5, c2 0, c3 0
    b = _emb(LABELS, preds_b)
    perm = np.random.default_rng(0).permutation(len(LABELS))
    b_shuffled = b.subset(perm)
    assert b_shuffled.names != b.names
    np.testing.assert_array_equal(align(a, b_shuffled), np.argsort(perm))
    ch = confusion_change(a, b_shuffled)
    np.testing.assert_array_equal(ch["matrix_delta"], confusion(b)["matrix"] - confusion(a)["matrix"])
    assert ch["matrix_delta"].sum() == 0
    assert ch["fixed"] == ["s01", "s03", "s05", "s11"]  # a's order
    assert ch["broken"] == ["s10"]
    assert ch["top1"]["a"] == pytest.approx(6 / 12) and ch["top1"]["b"] == pytest.approx(9 / 12)
    assert ch["top1"]["delta"] == pytest.approx(3 / 12)
    rows = [(r["name"], r["a"], r["b"], r["delta"]) for r in ch["per_class"]]
    # sorted by delta, ties by class id
    assert rows == [("c0", 0.25, 0.75, 0.5), ("c1", 0.5, 1.0, 0.5), ("c2", 0.5, 0.5, 0.0), ("c3", 0.75, 0.75, 0.0)]
    assert [r["name"] for r in ch["helped"]] == ["c0", "c1"] and ch["hurt"] == []
    assert ch["per_class"][0]["support"] == 4
    # the reverse direction: helped and hurt swap, fixed and broken swap
    back = confusion_change(b_shuffled, a)
    assert [r["name"] for r in back["hurt"]] == ["c0", "c1"] and back["helped"] == []
    assert sorted(back["fixed"]) == ["s10"] and sorted(back["broken"]) == ["s01", "s03", "s05", "s11"]


def test_confusion_change_hurt_order_and_absent_class():
    a = _emb([0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1])
    b = _emb([0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 0, 1])  # c0 -0.5, c1 -0.75
    ch = confusion_change(a, b)
    assert [(r["name"], r["delta"]) for r in ch["hurt"]] == [("c1", -0.75), ("c0", -0.5)]
    last = ch["per_class"][-2:]  # c2, c3 have no samples: delta None, listed last
    assert [(r["name"], r["a"], r["b"], r["delta"]) for r in last] == [("c2", None, None, None),
                                                                      ("c3", None, None, None)]
    assert ch["fixed"] == [] and ch["broken"] == ["s00", "s02", "s03", "s04"]


def test_confusion_change_errors():
    a = _emb([0, 1, 2], [0, 1, 2])
    with pytest.raises(ConfigError, match="different samples"):
        confusion_change(a, _emb([0, 1, 2], [0, 1, 2], names=["s00", "s01", "x"]))
    with pytest.raises(ConfigError, match="different samples"):
        confusion_change(a, _emb([0, 1], [0, 1]))
    with pytest.raises(ConfigError, match="different classes"):
        confusion_change(a, _emb([0, 1, 2], [0, 1, 2], classes=["c0", "c1", "c2", "other"]))
    with pytest.raises(ConfigError, match="repeat sample names"):
        confusion_change(a, _emb([0, 1, 2], [0, 1, 2], names=["s00", "s00", "s01"]))
    with pytest.raises(ConfigError, match="true class"):
        confusion_change(a, _emb([0, 1, 1], [0, 1, 2]))


@pytest.fixture(scope="module")
def bundled_pair(tmp_path_factory):
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STDCL_CACHE", str(tmp_path_factory.mktemp("cache")))
        refs = {r.label: load_model(r) for r in bundled_models()}
        base, stdcl = refs["synthetic_hcn_baseline"], refs["synthetic_hcn_stdcl"]
        data = open_analysis_data(stdcl, "test")
        # whole classes where the demo models differ: the class of a sample STD-CL fixes and of one it
        # breaks (read from the models, so a retrained demo pair keeps the test meaningful)
        a, b = extract_embeddings(base, data), extract_embeddings(stdcl, data)
        fixed, broken = np.flatnonzero(~a.correct & b.correct), np.flatnonzero(a.correct & ~b.correct)
        assert fixed.size and broken.size, "the demo pair should differ both ways somewhere in the test split"
        classes = sorted({int(a.labels[fixed[0]]), int(a.labels[broken[0]])})
        ids = np.flatnonzero(np.isin(data.labels, classes))
        return extract_embeddings(base, data, ids), extract_embeddings(stdcl, data, ids), classes


def test_bundled_baseline_vs_stdcl(bundled_pair):
    a, b, classes = bundled_pair
    n = len(a)
    for e in (a, b):
        c = confusion(e)
        assert c["matrix"].sum() == n
        np.testing.assert_array_equal(c["matrix"].sum(1), np.bincount(e.labels, minlength=13))
        assert c["top1"] == pytest.approx(e.accuracy)
        assert np.trace(c["matrix"]) == e.correct.sum()
        off = sum(r["count"] for r in most_confused(e, top=1000))
        assert off == n - np.trace(c["matrix"])
    perm = np.random.default_rng(1).permutation(n)
    ch = confusion_change(a, b.subset(perm))
    assert ch["fixed"] and ch["broken"] and most_confused(a)  # the demo models differ here
    assert all(type(r[k]) is int for r in most_confused(a) for k in ("true", "predicted", "count"))
    ok_a = dict(zip(a.names, a.correct))
    ok_b = dict(zip(b.names, b.correct))
    assert set(ch["fixed"]) == {k for k in ok_a if not ok_a[k] and ok_b[k]}
    assert set(ch["broken"]) == {k for k in ok_a if ok_a[k] and not ok_b[k]}
    assert len(ch["fixed"]) - len(ch["broken"]) == b.correct.sum() - a.correct.sum()
    assert ch["top1"]["a"] == pytest.approx(a.accuracy) and ch["top1"]["b"] == pytest.approx(b.accuracy)
    np.testing.assert_array_equal(ch["matrix_delta"].sum(1), 0)  # same samples per true class
    np.testing.assert_array_equal(ch["matrix_delta"], confusion(b)["matrix"] - confusion(a)["matrix"])
    support = np.bincount(a.labels, minlength=13)
    for r in ch["per_class"]:
        if support[r["class"]] == 0:  # the other classes: no samples, no accuracy
            assert r["delta"] is None and r["a"] is None and r["b"] is None
            continue
        gained = ch["matrix_delta"][r["class"], r["class"]]
        assert r["delta"] == pytest.approx(gained / support[r["class"]])
    deltas = [r["delta"] for r in ch["per_class"]]
    k = len(classes)
    assert deltas[:k] == sorted(deltas[:k], reverse=True) and deltas[k:] == [None] * (13 - k)
    assert {r["name"] for r in ch["helped"] + ch["hurt"]} <= {a.class_names[c] for c in classes}
