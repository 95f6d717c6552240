"""Separation metrics: every number against an independent naive computation, plus the twin table on
the bundled checkpoints' real embeddings."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_samples,
    silhouette_score,
)

from analysis import metrics as M
from analysis import twins as T
from analysis.embeddings import Embeddings
from stdcl.errors import ConfigError

K = 6  # class 4 is absent from the data below


def _unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(K, 6)) * 1.2
    y = np.repeat([0, 1, 2, 3, 5], [20, 25, 15, 18, 12])
    X = centres[y] + rng.normal(size=(len(y), 6))
    return X.astype(np.float64), y


@pytest.fixture(scope="module")
def result(blobs):
    X, y = blobs
    return M.separation_metrics(X, y, K, max_samples=5000, k=5, seed=0)


def test_silhouette_matches_sklearn(blobs, result):
    X, y = blobs
    assert result["overall"]["silhouette"] == pytest.approx(silhouette_score(X, y, metric="cosine"), abs=1e-10)
    s = silhouette_samples(X, y, metric="cosine")
    per = result["per_class"]["silhouette"]
    for c in range(K):
        assert (per[c] is None) if c == 4 else per[c] == pytest.approx(s[y == c].mean(), abs=1e-10)


def test_pair_silhouette_matches_sklearn_on_two_classes(blobs, result):
    X, y = blobs
    ps = result["pair_silhouette"]
    for a, b in itertools.permutations(range(K), 2):
        if 4 in (a, b):
            assert ps[a][b] is None
            continue
        sel = (y == a) | (y == b)
        assert ps[a][b] == pytest.approx(silhouette_score(X[sel], y[sel], metric="cosine"), abs=1e-10)
    assert all(ps[c][c] is None for c in range(K))


def _brute_knn(X, y, k):
    """Leave-one-out kNN by explicit loops: cosine, majority vote, a tie to the class nearest first."""
    Xn = _unit(X)
    preds = []
    for i in range(len(y)):
        sims = np.array([Xn[i] @ Xn[j] if j != i else -np.inf for j in range(len(y))])
        order = sorted(range(len(y)), key=lambda j: -sims[j])[:k]
        votes = {}
        for rank, j in enumerate(order):
            c = int(y[j])
            n, first = votes.get(c, (0, rank))
            votes[c] = (n + 1, first)
        best = max(votes.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
        preds.append(best)
    return np.array(preds)


@pytest.mark.parametrize("k", [1, 4, 5])
def test_knn_matches_brute_force(blobs, k):
    X, y = blobs
    ref = _brute_knn(X, y, k)
    got = M.knn_predictions(_unit(X), y, K, k)
    np.testing.assert_array_equal(got, ref)
    res = M.separation_metrics(X, y, K, k=k)
    assert res["overall"]["knn_accuracy"] == pytest.approx(np.mean(ref == y))
    for c in (0, 1, 2, 3, 5):
        assert res["per_class"]["knn_accuracy"][c] == pytest.approx(np.mean(ref[y == c] == c))


def test_knn_tie_goes_to_nearest_class():
    # point 0's two neighbours: class 1 at cos 0.99 and class 2 at cos 0.9 -> 1-1 tie, class 1 is nearer
    X = np.array([[1.0, 0.0], [0.99, math.sqrt(1 - 0.99**2)], [0.9, -math.sqrt(1 - 0.81)], [-1.0, 0.0]])
    y = np.array([0, 1, 2, 2])
    assert M.knn_predictions(_unit(X), y, 3, k=2)[0] == 1


def test_db_ch_match_sklearn_on_unit_rows(blobs, result):
    X, y = blobs
    Xn = _unit(X)
    assert result["overall"]["davies_bouldin"] == pytest.approx(davies_bouldin_score(Xn, y), rel=1e-9)
    assert result["overall"]["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(Xn, y), rel=1e-9)


def _fisher_loops(Xn, y):
    mu = Xn.mean(0)
    sb = sw = 0.0
    for c in np.unique(y):
        xc = Xn[y == c]
        mc = xc.mean(0)
        sb += len(xc) * float(np.trace(np.outer(mc - mu, mc - mu)))
        sw += sum(float(np.trace(np.outer(x - mc, x - mc))) for x in xc)
    return sb / sw


def test_fisher_matches_explicit_scatter(blobs, result):
    X, y = blobs
    Xn = _unit(X)
    assert result["overall"]["fisher"] == pytest.approx(_fisher_loops(Xn, y), rel=1e-9)
    n, k = len(y), len(np.unique(y))  # CH = fisher * (N - K) / (K - 1)
    assert result["overall"]["calinski_harabasz"] == pytest.approx(result["overall"]["fisher"] * (n - k) / (k - 1))
    pf = result["pair_fisher"]
    for a, b in itertools.combinations([0, 1, 2, 3, 5], 2):
        sel = (y == a) | (y == b)
        ref = _fisher_loops(Xn[sel], y[sel])
        assert pf[a][b] == pytest.approx(ref, rel=1e-9) and pf[b][a] == pytest.approx(ref, rel=1e-9)
    assert pf[4][0] is None and pf[0][4] is None and pf[1][1] is None


def test_alignment_uniformity_match_pair_loops(blobs, result):
    X, y = blobs
    Xn = _unit(X)
    same = [np.sum((Xn[i] - Xn[j]) ** 2) for i, j in itertools.combinations(range(len(y)), 2) if y[i] == y[j]]
    assert result["overall"]["alignment"] == pytest.approx(np.mean(same), rel=1e-9)
    for c in (0, 5):
        idx = np.flatnonzero(y == c)
        ref = np.mean([np.sum((Xn[i] - Xn[j]) ** 2) for i, j in itertools.combinations(idx, 2)])
        assert result["per_class"]["alignment"][c] == pytest.approx(ref, rel=1e-9)
    assert result["per_class"]["alignment"][4] is None
    allp = [math.exp(-2 * np.sum((Xn[i] - Xn[j]) ** 2)) for i, j in itertools.combinations(range(len(y)), 2)]
    assert result["overall"]["uniformity"] == pytest.approx(math.log(np.mean(allp)), abs=1e-5)  # float32 blocks
    # pair-sampled path (max_samples < N) estimates the same quantity, reproducibly per seed
    sampled = [M.uniformity(Xn, max_samples=60, seed=s) for s in (0, 0, 1)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]
    assert sampled[0] == pytest.approx(math.log(np.mean(allp)), abs=0.15)


def test_centroid_margin_and_similarity_match_loops(blobs, result):
    X, y = blobs
    Xn = _unit(X)
    present = [0, 1, 2, 3, 5]
    cent = {c: Xn[y == c].mean(0) for c in present}
    cos = lambda u, v: float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    margins = np.array([cos(Xn[i], cent[y[i]]) - max(cos(Xn[i], cent[c]) for c in present if c != y[i])
                        for i in range(len(y))])
    assert result["overall"]["centroid_margin"] == pytest.approx(margins.mean(), abs=1e-12)
    assert result["per_class"]["centroid_margin"][2] == pytest.approx(margins[y == 2].mean(), abs=1e-12)
    sim = result["centroid_similarity"]
    for a, b in itertools.product(present, present):
        assert sim[a][b] == pytest.approx(cos(cent[a], cent[b]), abs=1e-12)
    assert sim[4] == [None] * K and all(row[4] is None for row in sim)


def test_result_is_plain_json(result):
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert result["overall"]["n"] == 90 and result["overall"]["classes"] == 5
    assert result["per_class"]["n"] == [20, 25, 15, 18, 0, 12]
    assert np.array(result["centroid_similarity"], dtype=float).shape == (K, K)


def test_well_separated_vs_mixed():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    sep = np.eye(4, 16)[y] * 10 + rng.normal(size=(120, 16)) * 0.3
    mixed = rng.normal(size=(120, 16))
    a = M.separation_metrics(sep, y, 4)["overall"]
    b = M.separation_metrics(mixed, y, 4)["overall"]
    assert a["knn_accuracy"] == 1.0 and a["silhouette"] > 0.8 and a["davies_bouldin"] < 0.3
    assert a["centroid_margin"] > 0.8 and a["alignment"] < 0.1
    assert b["knn_accuracy"] < 0.5 and abs(b["silhouette"]) < 0.1 and b["davies_bouldin"] > 3
    assert a["fisher"] > 50 * b["fisher"]


def test_float32_input_and_undefined_cases():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    y = np.repeat([0, 1], 20)
    r64 = M.separation_metrics(X, y, 2)["overall"]
    r32 = M.separation_metrics(X.astype(np.float32), y, 2)["overall"]
    for key in ("silhouette", "knn_accuracy", "fisher", "alignment", "centroid_margin"):
        assert r32[key] == pytest.approx(r64[key], abs=1e-5)
    one = M.separation_metrics(X, np.zeros(40, int), 3)
    assert one["overall"]["silhouette"] is None and one["overall"]["davies_bouldin"] is None
    assert one["overall"]["fisher"] is None and one["overall"]["centroid_margin"] is None
    assert one["overall"]["knn_accuracy"] == 1.0 and one["overall"]["alignment"] is not None
    assert one["per_class"]["silhouette"] == [None] * 3


@pytest.mark.parametrize("X, y, match", [
    (np.array([[0.0, 1.0], [np.nan, 1.0], [1.0, 0.0]]), [0, 1, 1], "1 row.*NaN.*row 1"),
    (np.ones((3, 2)), [0, 1], "one per embedding row"),
    (np.ones((3, 2)), [0, 1, 7], "labels must lie in 0..2"),
    (np.ones(3), [0, 1, 1], "2-D"),
])
def test_bad_input_is_one_line_config_error(X, y, match):
    with pytest.raises(ConfigError, match=match) as e:
        M.separation_metrics(X, np.asarray(y), 3)
    assert "\n" not in str(e.value)


def test_compare_metrics_directions():
    a = {"spatial": {"overall": {"n": 10, "silhouette": 0.2, "davies_bouldin": 2.0, "uniformity": -1.0,
                                 "alignment": 0.5, "knn_accuracy": None, "fisher": 3.0}}}
    b = {"spatial": {"overall": {"n": 10, "silhouette": 0.5, "davies_bouldin": 3.0, "uniformity": -2.0,
                                 "alignment": 0.5, "knn_accuracy": 0.9, "fisher": 3.0}}, "global": {"overall": {}}}
    rows = {r["metric"]: r for r in M.compare_metrics(a, b)}
    assert set(rows) == {"silhouette", "davies_bouldin", "uniformity", "alignment", "knn_accuracy", "fisher"}
    assert rows["silhouette"]["better"] == "b" and rows["silhouette"]["delta"] == pytest.approx(0.3)
    assert rows["davies_bouldin"]["better"] == "a" and rows["uniformity"]["better"] == "b"
    assert rows["alignment"]["better"] == "=" and rows["fisher"]["better"] == "="
    assert rows["knn_accuracy"]["better"] is None and rows["knn_accuracy"]["delta"] is None
    assert all(r["space"] == "spatial" for r in rows.values())
    single = M.compare_metrics(a["spatial"], b["spatial"])
    assert [r["metric"] for r in single] == [r["metric"] for r in M.compare_metrics(a, b)]
    assert all(v.better in ("higher", "lower") and v.description for v in M.METRIC_INFO.values())


def _fake_embeddings(class_meta=None, n_per=12, seed=0):
    rng = np.random.default_rng(seed)
    k = 4
    y = np.repeat(np.arange(k), n_per)
    spaces = {s: (np.eye(k, 8)[y] * (3 if s == "spatial" else 0.2) + rng.normal(size=(len(y), 8))).astype(np.float32)
              for s in ("global", "spatial", "temporal")}
    return Embeddings(spaces, rng.normal(size=(len(y), k)).astype(np.float32), y, [f"s{i}" for i in range(len(y))],
                      np.arange(len(y)), [f"c{i}" for i in range(k)], class_meta, "head", f"fake{seed}")


def test_space_metrics_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path))
    emb = _fake_embeddings()
    first = M.space_metrics(emb, spaces=("global", "spatial"), k=3)
    assert set(first) == {"global", "spatial"}
    assert first["spatial"] == M.separation_metrics(emb.spaces["spatial"], emb.labels, 4, k=3)
    assert len(list((tmp_path / "metrics").glob("*.npz"))) == 2

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(M, "separation_metrics", boom)
    assert M.space_metrics(emb, spaces=("global", "spatial"), k=3) == first
    with pytest.raises(AssertionError, match="recomputed"):
        M.space_metrics(emb, spaces=("global",), k=4)  # other parameters: another entry
    with pytest.raises(ConfigError, match="no embedding space 'nope'"):
        M.space_metrics(emb, spaces=("nope",))


def test_twin_separation_without_twins_and_on_fake_twins():
    assert T.twin_separation(_fake_embeddings(None)) == []
    assert T.twin_separation(_fake_embeddings([{"name": f"c{i}", "twin": None} for i in range(4)])) == []
    meta = [{"twin": 1, "twin_type": "spatial"}, {"twin": 0, "twin_type": "spatial"},
            {"twin": 3, "twin_type": "temporal"}, {"twin": 2, "twin_type": "temporal"}]
    rows = T.twin_separation(_fake_embeddings(meta))
    assert [(r["pair"], r["type"], r["classes"]) for r in rows] == [("c0 vs c1", "spatial", [0, 1]),
                                                                   ("c2 vs c3", "temporal", [2, 3])]
    emb = _fake_embeddings(meta)
    sel = emb.labels < 2
    X, y = emb.spaces["spatial"][sel], emb.labels[sel]
    got = rows[0]["spaces"]["spatial"]
    assert got["silhouette"] == pytest.approx(silhouette_score(X, y, metric="cosine"), abs=1e-6)
    assert got["knn_accuracy"] == pytest.approx(np.mean(_brute_knn(X, y, 5) == y))
    assert got["fisher"] == pytest.approx(_fisher_loops(_unit(X), y), rel=1e-6)
    ca, cb = _unit(X)[y == 0].mean(0), _unit(X)[y == 1].mean(0)
    assert got["centroid_cosine"] == pytest.approx(ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb), abs=1e-9)


@pytest.fixture(scope="module")
def bundled_embeddings():
    import torch

    from analysis.datasets import open_analysis_data, stratified_subset
    from analysis.embeddings import extract_embeddings
    from analysis.models import bundled_models, load_model

    torch.set_num_threads(1)
    refs = {r.label: r for r in bundled_models()}
    models = [load_model(refs[n]) for n in ("synthetic_hcn_baseline", "synthetic_hcn_stdcl")]
    data = open_analysis_data(models[0], "test")
    rows = stratified_subset(data.labels, 260, seed=0)
    return [extract_embeddings(m, data, rows, use_cache=False, progress=lambda d, t: None) for m in models]


def test_twin_separation_on_bundled_checkpoints(bundled_embeddings):
    base, stdcl = bundled_embeddings
    rows = T.twin_separation(stdcl)
    assert len(rows) == 6
    assert [r["type"] for r in rows] == ["spatial"] * 3 + ["temporal"] * 3
    assert rows[0]["pair"] == "wave left hand vs wave right hand" and rows[0]["classes"] == [0, 1]
    for r in rows:
        a, b = r["classes"]
        assert stdcl.class_meta[a]["twin"] == b and r["n"] == [20, 20]
        for s in ("global", "spatial", "temporal"):
            v = r["spaces"][s]
            assert set(v) == set(M.TWIN_METRICS)
            assert 0 <= v["knn_accuracy"] <= 1 and -1 <= v["silhouette"] <= 1
            assert v["fisher"] >= 0 and -1 <= v["centroid_cosine"] <= 1
        assert r["spaces"]["global"]["knn_accuracy"] >= 0.9  # the classifier's space tells every twin pair apart

    def mean(kind, space):
        return np.mean([r["spaces"][space]["silhouette"] for r in rows if r["type"] == kind])

    # the decoupling: the spatial branch separates the mirrored twins, the temporal branch the time twins
    assert mean("spatial", "spatial") > mean("spatial", "temporal") + 0.5
    assert mean("temporal", "temporal") > mean("temporal", "spatial") + 0.3
    assert len(T.twin_separation(base)) == 6


def test_space_metrics_stdcl_beats_baseline_on_branch_spaces(bundled_embeddings, monkeypatch, tmp_path):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path))
    base, stdcl = (M.space_metrics(e) for e in bundled_embeddings)
    rows = {(r["space"], r["metric"]): r for r in M.compare_metrics(base, stdcl)}
    for s in ("spatial", "temporal"):
        assert rows[(s, "fisher")]["better"] == "b" and rows[(s, "silhouette")]["better"] == "b"
    assert stdcl["global"]["overall"]["knn_accuracy"] > 0.9
