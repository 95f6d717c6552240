"""Training evolution (analysis.evolution, stdcl analyze evolution): projections aligned across snapshots, the
per-snapshot metrics against scikit-learn on the stored probes, the report's outputs and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.stats import ortho_group

from analysis.evolution import aligned_projection, aligned_umap, load_evolution, procrustes_pca
from analysis.metrics import unit_rows
from stdcl.cli import main
from stdcl.errors import ConfigError
from stdcl.train.engine import train
from stdcl.train.probes import read_probes
from tests.support.training import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny STD-CL run and its baseline, 2 epochs each, with probes (snapshots at epochs 0, 1, 2)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evo")
    train(tiny_config("train.epochs=2"), root / "tiny_stdcl")
    train(tiny_config("train.epochs=2", stdcl="off"), root / "tiny_baseline")
    return root


def _pca2(x: np.ndarray) -> np.ndarray:
    """PCA of the unit rows to 2-D, scaled to unit RMS radius."""
    xc = unit_rows(x.astype(np.float64))
    xc = xc - xc.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    y = u[:, :2] * s[:2]
    return y / np.sqrt((y ** 2).sum(1).mean())


def test_procrustes_frames_are_each_scaled_pca_rotated_onto_the_previous_frame() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(60, 12)) + np.linspace(0, 3, 12) * t for t in range(4)]
    out = procrustes_pca(frames)
    assert out.shape == (4, 60, 2) and out.dtype == np.float32
    for t, x in enumerate(frames):
        raw = _pca2(x)
        d_raw = np.linalg.norm(raw[:, None] - raw[None], axis=-1)
        d_out = np.linalg.norm(out[t][:, None].astype(np.float64) - out[t][None], axis=-1)
        np.testing.assert_allclose(d_out, d_raw, atol=1e-4)  # distances within a frame: the PCA's, one scale
        if t:
            r, _ = orthogonal_procrustes(raw, out[t - 1].astype(np.float64))
            np.testing.assert_allclose(out[t], raw @ r, atol=1e-4)  # the best rotation onto the previous frame
            assert np.linalg.norm(out[t] - out[t - 1]) <= np.linalg.norm(raw - out[t - 1]) + 1e-6


def test_a_rotated_copy_of_a_snapshot_lands_on_the_same_coordinates() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 16)) * np.linspace(4, 0.5, 16)
    q = ortho_group.rvs(16, random_state=2)
    out = aligned_projection([x, x @ q], "procrustes")
    np.testing.assert_allclose(out[1], out[0], atol=1e-4)


def test_aligned_umap_keeps_identical_snapshots_in_place() -> None:
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 10)) * 3
    x = np.concatenate([c + rng.normal(size=(15, 10)) for c in centers])
    out = aligned_umap([x, x, x + 0.01 * rng.normal(size=x.shape)], seed=0, n_neighbors=10, n_epochs=100)
    assert out.shape == (3, 60, 2) and np.isfinite(out).all()
    spread = np.linalg.norm(out[0] - out[0].mean(0), axis=1).mean()
    assert np.linalg.norm(out[1] - out[0], axis=1).mean() < 0.2 * spread
    with pytest.raises(ConfigError, match="unknown alignment method"):
        aligned_projection([x], "tsne")


def _vote(neighbour_labels: np.ndarray) -> int:
    """Majority vote of the neighbours (nearest first); a tie goes to the tied class whose member is nearest."""
    counts = np.bincount(neighbour_labels)
    tied = set(np.flatnonzero(counts == counts.max()))
    return int(next(c for c in neighbour_labels if c in tied))


def test_metrics_of_every_snapshot_equal_scikit_learn_on_the_stored_probes(runs) -> None:
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
    from sklearn.neighbors import NearestNeighbors

    evo = load_evolution(runs / "tiny_stdcl", "procrustes", use_cache=False)
    s = read_probes(runs / "tiny_stdcl")
    y = s.labels
    assert evo.epochs == [0.0, 1.0, 2.0] and evo.spaces == s.spaces
    for i, snap in enumerate(s.snapshots):
        for space in evo.spaces:
            xn = unit_rows(snap.spaces[space].astype(np.float64))
            m = evo.metrics[i][space]
            assert m["silhouette"] == pytest.approx(silhouette_score(xn, y, metric="cosine"), abs=1e-9)
            assert m["davies_bouldin"] == pytest.approx(davies_bouldin_score(xn, y), rel=1e-9)
            assert m["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(xn, y), rel=1e-9)
            nn = NearestNeighbors(n_neighbors=6, metric="cosine").fit(xn)
            _, idx = nn.kneighbors(xn)
            hits = np.mean([_vote(y[[j for j in row if j != r][:5]]) == y[r] for r, row in enumerate(idx)])
            assert abs(m["knn_accuracy"] - hits) <= 2 / len(y)  # neighbours at equal distance may swap
            pairs = [(a, b) for a, meta in enumerate(s.class_meta) if (b := meta.get("twin")) is not None and a < b]
            for kind in ("spatial", "temporal"):
                d = []
                for a, b in pairs:
                    if s.class_meta[a]["twin_type"] != kind:
                        continue
                    ca, cb = xn[y == a].mean(0), xn[y == b].mean(0)
                    d.append(1 - ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb))
                assert m[f"{kind}_twin_distance"] == pytest.approx(np.mean(d), abs=1e-9)
        assert evo.accuracy[i] == pytest.approx(np.mean(snap.pred == y))


def test_evolution_is_cached_by_probe_content(runs, tmp_path) -> None:
    a = load_evolution(runs / "tiny_stdcl", "procrustes", cache_root=tmp_path)
    assert len(list((tmp_path / "evolution").glob("*.npz"))) == 1
    b = load_evolution(runs / "tiny_stdcl", "procrustes", cache_root=tmp_path)
    assert all(np.array_equal(a.coords[s], b.coords[s]) for s in a.spaces) and a.metrics == b.metrics
    snap = runs / "tiny_stdcl" / "probes" / "step-00000016.npz"
    c = load_evolution(runs / "tiny_stdcl", "procrustes", spaces=["spatial"], cache_root=tmp_path)
    assert c.spaces == ["spatial"] and snap.is_file()
    assert len(list((tmp_path / "evolution").glob("*.npz"))) == 2
    with pytest.raises(ConfigError, match="no space 'spatial'"):
        load_evolution(runs / "tiny_baseline", "procrustes", spaces=["spatial"], cache_root=tmp_path)


def test_stdcl_analyze_evolution_writes_the_report_of_a_pair(runs, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "evo"
    args = ["-q", "analyze", "evolution", str(runs / "tiny_stdcl"), str(runs / "tiny_baseline"), "--out", str(out),
            "--method", "procrustes", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"index.html", "evolution.json", "metrics.png", "projections.png",
                                               "twins.png"}
    doc = json.loads((out / "evolution.json").read_text())
    evo = load_evolution(runs / "tiny_stdcl", "procrustes", cache_root=tmp_path / "cache")
    run0 = doc["runs"][0]
    assert run0["label"] == "tiny_stdcl" and doc["runs"][1]["stdcl"] is False
    assert [x["epoch"] for x in run0["snapshots"]] == evo.epochs
    assert run0["snapshots"][-1]["metrics"]["spatial"]["silhouette"] == evo.metrics[-1]["spatial"]["silhouette"]
    html = (out / "index.html").read_text()
    assert 'content="stdcl analyze evolution"' in html and html.count("Plotly.addFrames") == 4 and "Play" in html
    assert main(args) == 0  # an existing report is replaced
    (tmp_path / "file").write_text("x")
    calls = []
    monkeypatch.setattr("analysis.evolution_report.load_evolution", lambda *a, **k: calls.append(a))
    assert main([*args[:5], "--out", str(tmp_path / "file")]) == 2  # AlignedUMAP (the default) would take minutes
    assert "exists and is not a folder" in capsys.readouterr().err and calls == []  # refused before any of it
    monkeypatch.undo()
    assert main(["-q", "analyze", "evolution", str(tmp_path / "file"), "--out", str(tmp_path / "e2")]) == 2
    assert "has no training probes" in capsys.readouterr().err
    assert not (tmp_path / "e2").exists()


def test_the_shipped_demo_evolutions_are_current_and_used(tmp_path, monkeypatch) -> None:
    """checkpoints/cache/evolution holds the demo pair's evolutions under the keys this code computes (regenerate
    with `python -m analysis.bundled` when this fails), and load_evolution reads them from an empty cache."""
    from analysis.bundled import BUNDLED_CACHE, DEMO_PAIR, demo_evolution_keys
    from analysis.cache import entry_path
    from stdcl.weights import bundled_path

    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "cache"))
    keys = demo_evolution_keys()
    stale = [k for k, key in keys.items() if not entry_path("evolution", key, BUNDLED_CACHE).is_file()]
    assert not stale, f"stale demo evolutions {stale}: run `python -m analysis.bundled`"
    evo = load_evolution(bundled_path(DEMO_PAIR[0]), "procrustes")
    assert not (tmp_path / "cache" / "evolution").exists()  # read from the shipped copy, nothing computed
    series = read_probes(bundled_path(DEMO_PAIR[0]))
    assert evo.epochs == series.epochs and evo.spaces == series.spaces
    first = procrustes_pca([s.spaces["spatial"] for s in series.snapshots])
    np.testing.assert_allclose(evo.coords["spatial"], first, atol=1e-5)
