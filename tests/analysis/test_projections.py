"""2-D projections: shapes, determinism, PCA against an explicit SVD, the cache, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import projections as P
from analysis.embeddings import Embeddings
from stdcl.errors import ConfigError


def _blobs(n_per=20, k=4, d=10, seed=0, spread=8.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    centres = rng.normal(size=(k, d)) * spread
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def _knn2d_accuracy(Y, y, k=5):
    d = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float(np.mean([np.bincount(y[r]).argmax() == t for r, t in zip(nn, y)]))


def test_warm_up_is_idempotent():
    first = P.warm_up_umap()
    assert first >= 0
    assert P.warm_up_umap() < 0.05


@pytest.mark.parametrize("method", P.METHODS)
def test_shapes_dtype_and_cluster_structure(method):
    X, y = _blobs()
    Y = P.project(X, method, seed=0)
    assert Y.shape == (len(X), 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    assert _knn2d_accuracy(Y, y) > 0.95  # well-separated blobs stay separated in 2-D


def test_umap_seeded_is_reproducible_and_high_dim_is_reduced():
    X, y = _blobs(n_per=15, d=120)  # wider than PCA_DIMS: reduced to 50 components first
    a = P.project(X, "umap", seed=3, n_epochs=60)
    b = P.project(X, "umap", seed=3, n_epochs=60)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, P.project(X, "umap", seed=4, n_epochs=60))
    assert _knn2d_accuracy(a, y) > 0.95


def test_tsne_seeded_is_reproducible():
    X, _ = _blobs(n_per=10)
    np.testing.assert_array_equal(P.project(X, "tsne", seed=1), P.project(X, "tsne", seed=1))


def _svd_reference(X):
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ vt[:2].T


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_pca_equals_explicit_svd_up_to_sign(metric):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(70, 9)) * np.linspace(3, 0.5, 9)  # distinct singular values
    Xr = X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X
    ref = _svd_reference(Xr)
    got = P.project(X, "pca", metric=metric).astype(np.float64)
    for j in range(2):
        sign = np.sign(got[:, j] @ ref[:, j])
        np.testing.assert_allclose(sign * got[:, j], ref[:, j], atol=1e-4 * np.abs(ref).max())


def test_constant_and_tiny_inputs():
    const = np.tile(np.arange(1, 6, dtype=np.float32), (10, 1))
    for m in P.METHODS:
        np.testing.assert_array_equal(P.project(const, m), np.zeros((10, 2), np.float32))
    # rows that are positive multiples of each other are one point under cosine
    np.testing.assert_array_equal(P.project(const * np.arange(1, 11)[:, None], "pca"), np.zeros((10, 2)))
    np.testing.assert_array_equal(P.project(np.ones((1, 3)), "pca"), np.zeros((1, 2)))
    Y = P.project(np.random.default_rng(0).normal(size=(2, 3)), "pca")
    assert Y.shape == (2, 2) and Y[0, 0] == pytest.approx(-Y[1, 0]) and np.all(Y[:, 1] == 0)
    small, _ = _blobs(n_per=3, k=2)  # 6 points: n_neighbors and perplexity are capped
    for m in ("umap", "tsne"):
        out = P.project(small, m, seed=0, n_epochs=30)
        assert out.shape == (6, 2) and np.isfinite(out).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"X": np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, np.inf], [1.0, 1.0]])}, r"2 row\(s\) with NaN.*first: row 1"),
    ({"X": np.ones(5)}, "must be a 2-D array"),
    ({"X": np.ones((5, 2)), "method": "mds"}, "unknown projection method 'mds'"),
    ({"X": np.ones((5, 2)), "metric": "manhattan"}, "unknown projection metric"),
    ({"X": np.eye(3)}, "umap needs at least 4 samples, got 3; use method 'pca'"),
    ({"X": np.zeros((0, 3)), "method": "pca"}, "pca needs at least 1 samples, got 0"),
    ({"X": np.eye(5), "n_neighbors": 1}, "n_neighbors=1"),
])
def test_bad_input_is_one_line_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match) as e:
        P.project(**kwargs)
    assert "\n" not in str(e.value)


def _embeddings():
    X, y = _blobs(n_per=10, k=3, d=12)
    rng = np.random.default_rng(1)
    spaces = {"global": X, "spatial": X[:, ::-1].copy(), "temporal": rng.normal(size=X.shape).astype(np.float32)}
    return Embeddings(spaces, np.zeros((len(y), 3), np.float32), y, [f"s{i}" for i in range(len(y))],
                      np.arange(len(y)), ["a", "b", "c"], None, "pooled", "fake-key")


def test_project_embeddings_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path))
    emb = _embeddings()
    calls = []
    real = P.project

    def counting(X, method="umap", **kw):
        calls.append((method, kw))
        return real(X, method, **kw)

    monkeypatch.setattr(P, "project", counting)
    first = P.project_embeddings(emb, "spatial", "pca", seed=0)
    np.testing.assert_array_equal(first, real(emb.spaces["spatial"], "pca", seed=0))
    again = P.project_embeddings(emb, "spatial", "pca", seed=0, n_epochs=10)  # n_epochs does not affect PCA
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.float32 and len(calls) == 1
    P.project_embeddings(emb, "temporal", "pca", seed=0)  # another space: computed
    P.project_embeddings(emb, "spatial", "pca", metric="euclidean")  # another parameter: computed
    P.project_embeddings(emb, "spatial", "pca", use_cache=False)  # bypassed
    assert len(calls) == 4
    assert len(list((tmp_path / "projections").glob("*.npz"))) == 3
    with pytest.raises(ConfigError, match="unknown projection parameter"):
        P.project_embeddings(emb, "spatial", "pca", neighbours=5)
    with pytest.raises(ConfigError, match="no embedding space 'spatial_pooled'"):
        P.project_embeddings(emb, "spatial_pooled", "pca")


def test_the_shipped_demo_projections_are_current_and_used(tmp_path, monkeypatch):
    """checkpoints/cache holds a UMAP of every demo space under the key this code computes (regenerate with
    `python -m analysis.bundled` when this fails), and project_embeddings returns it from an empty cache."""
    from analysis.bundled import BUNDLED_CACHE, DEMO_PAIR, DEMO_SPACES, demo_projection_keys
    from analysis.cache import entry_path, load_arrays
    from analysis.datasets import open_analysis_data
    from analysis.embeddings import extract_embeddings
    from analysis.models import bundled_models, load_model
    from analysis.projections import project_embeddings

    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "cache"))
    keys = demo_projection_keys()
    assert set(keys) == {(m, s) for m in DEMO_PAIR for s in DEMO_SPACES}
    stale = [k for k, key in keys.items() if not entry_path("projections", key, BUNDLED_CACHE).is_file()]
    assert not stale, f"stale demo projections {stale}: run `python -m analysis.bundled`"
    model = load_model({r.label: r for r in bundled_models()}[DEMO_PAIR[0]])
    emb = extract_embeddings(model, open_analysis_data(model, "test"))
    shipped = load_arrays("projections", keys[(DEMO_PAIR[0], "spatial")], BUNDLED_CACHE)["coords"]
    assert shipped.shape == (len(emb), 2) and np.isfinite(shipped).all()
    np.testing.assert_array_equal(project_embeddings(emb, "spatial", "umap"), shipped)
    assert not (tmp_path / "cache" / "projections").exists()  # read from the shipped copy, nothing computed


def test_umap_reports_its_stages_and_every_layout_epoch():
    X, _ = _blobs(n_per=15, d=80)  # wider than PCA_DIMS: the reduction is a stage too
    seen = []
    P.project(X, "umap", seed=0, n_epochs=30, progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and seen[-1] == (1.0, "done")
    stages = [s for _, s in seen]
    assert stages[0].startswith("reducing 80 dimensions to 50") and any("nearest neighbours" in s for s in stages)
    epochs = [s for s in stages if s.startswith("optimising the layout: epoch")]
    assert epochs[-1] == "optimising the layout: epoch 30/30"
    assert all(P.UMAP_LAYOUT_START <= f <= 1.0 for f, s in seen if s.startswith("optimising"))
