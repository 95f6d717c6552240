"""analysis.neighbours: cosine nearest neighbours against a brute-force reference."""

import numpy as np
import pytest
import torch

from analysis.datasets import open_analysis_data, stratified_subset
from analysis.embeddings import Embeddings, extract_embeddings
from analysis.models import bundled_models, load_model
from analysis.neighbours import (
    cosine_to_row,
    nearest_neighbours,
    neighbour_records,
    neighbours_by_space,
    top_classes,
)
from stdcl.errors import ConfigError


def _emb(spaces: dict[str, np.ndarray], labels: np.ndarray, k: int = 3) -> Embeddings:
    n = len(labels)
    logits = np.zeros((n, k), np.float32)
    logits[np.arange(n), (labels + np.arange(n) % 2) % k] = 1.0  # every other sample predicted wrong
    return Embeddings(spaces, logits, labels.astype(np.int64), [f"s{i:03d}" for i in range(n)], np.arange(n) * 2,
                      [f"c{i}" for i in range(k)], None, "pooled", "test")


def _brute(x: np.ndarray, row: int, k: int) -> tuple[list[int], list[float]]:
    """Python loops over rows: cosine (0 for zero vectors), most similar first, lower row first on ties."""
    q = x[row].astype(np.float64)
    scored = []
    for i in range(len(x)):
        if i == row:
            continue
        v = x[i].astype(np.float64)
        den = np.sqrt((q * q).sum()) * np.sqrt((v * v).sum())
        scored.append((-(float((q * v).sum()) / den if den > 0 else 0.0), i))
    scored.sort()
    return [i for _, i in scored[:k]], [-s for s, _ in scored[:k]]


def test_matches_brute_force_on_random_spaces():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    x[7] = 0.0  # a zero vector: similarity 0 to everything
    emb = _emb({"global": x, "spatial": x[:, :5] * 3.0}, rng.integers(0, 3, 120))
    for space in ("global", "spatial"):
        xs = emb.space(space)
        for row in (0, 7, 55, 119):
            for k in (1, 5, 20):
                nb = nearest_neighbours(emb, row, space, k)
                ref_rows, ref_sims = _brute(xs, row, k)
                assert nb.rows.tolist() == ref_rows
                np.testing.assert_allclose(nb.sims, ref_sims, rtol=1e-6, atol=1e-9)
                assert row not in nb.rows.tolist()
    assert np.all(nearest_neighbours(emb, 7, "global", 10).sims == 0.0)


def test_ties_take_lower_rows_and_k_is_capped():
    x = np.array([[1, 0], [2, 0], [0, 1], [3, 0], [5, 0], [-1, 0]], np.float32)
    emb = _emb({"global": x}, np.array([0, 1, 2, 0, 1, 2]))
    nb = nearest_neighbours(emb, 0, "global", 2)
    assert nb.rows.tolist() == [1, 3]  # rows 1, 3 and 4 all have cosine 1: the lowest two
    np.testing.assert_allclose(nb.sims, [1.0, 1.0])
    full = nearest_neighbours(emb, 0, "global", 50)
    assert full.rows.tolist() == [1, 3, 4, 2, 5]
    np.testing.assert_allclose(full.sims, [1, 1, 1, 0, -1], atol=1e-12)
    np.testing.assert_allclose(cosine_to_row(emb, 0, "global"), [1, 1, 0, 1, 1, -1], atol=1e-12)
    single = _emb({"global": x[:1]}, np.array([0]))
    assert nearest_neighbours(single, 0, "global", 3).rows.size == 0


def test_records_name_classes_and_bad_input_is_one_line():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    emb = _emb({"global": x, "spatial": x + 1, "temporal": x - 1}, rng.integers(0, 3, 30))
    recs = neighbour_records(emb, 4, "spatial", 3)
    nb = nearest_neighbours(emb, 4, "spatial", 3)
    assert [r["row"] for r in recs] == nb.rows.tolist() and [r["rank"] for r in recs] == [1, 2, 3]
    for r in recs:
        assert r["name"] == f"s{r['row']:03d}" and r["class"] == f"c{emb.labels[r['row']]}"
        assert r["predicted_class"] == f"c{emb.predictions[r['row']]}"
        assert r["same_class"] == (emb.labels[r["row"]] == emb.labels[4])
    by = neighbours_by_space(emb, 4, 2)
    assert list(by) == ["global", "spatial", "temporal"]
    assert [r["row"] for r in by["temporal"]] == nearest_neighbours(emb, 4, "temporal", 2).rows.tolist()
    with pytest.raises(ConfigError, match="outside 0..29"):
        nearest_neighbours(emb, 30, "global")
    with pytest.raises(ConfigError, match="no embedding space 'spatial_pooled'"):
        nearest_neighbours(emb, 0, "spatial_pooled")
    with pytest.raises(ConfigError, match="at least 1"):
        nearest_neighbours(emb, 0, "global", 0)


def test_real_embeddings_every_space(tmp_path, monkeypatch):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path))
    torch.set_num_threads(1)
    ref = {r.label: r for r in bundled_models()}["synthetic_hcn_stdcl"]
    model = load_model(ref)
    data = open_analysis_data(model, "test")
    emb = extract_embeddings(model, data, stratified_subset(data.labels, 130), use_cache=False)
    assert set(emb.spaces) >= {"global", "spatial", "temporal", "spatial_pooled", "temporal_pooled"}
    for space in emb.spaces:
        nb = nearest_neighbours(emb, 11, space, 5)
        ref_rows, ref_sims = _brute(emb.space(space), 11, 5)
        assert nb.rows.tolist() == ref_rows, space
        np.testing.assert_allclose(nb.sims, ref_sims, rtol=1e-5, atol=1e-6)
    # a trained space puts most of a sample's neighbours in its class
    same = np.mean([r["same_class"] for row in range(0, 130, 13)
                    for r in neighbour_records(emb, row, "global", 5)])
    assert same > 0.5


def test_top_classes_are_softmax_ranked():
    logits = np.array([[0.0, 2.0, 1.0, 2.0], [5.0, -1.0, 0.0, 0.5]], np.float32)
    emb = Embeddings({"global": np.eye(2, dtype=np.float32)}, logits, np.array([2, 0]), ["a", "b"], np.arange(2),
                     ["w", "x", "y", "z"], None, "pooled", "t")
    top = top_classes(emb, 0, 3)
    p = np.exp(logits[0].astype(np.float64)) / np.exp(logits[0].astype(np.float64)).sum()
    assert [t["class"] for t in top] == [1, 3, 2]  # tie between 1 and 3: lower id first
    np.testing.assert_allclose([t["probability"] for t in top], p[[1, 3, 2]], rtol=1e-12)
    assert [t["true"] for t in top] == [False, False, True] and top[0]["name"] == "x"
    assert sum(t["probability"] for t in top_classes(emb, 1, 10)) == pytest.approx(1.0)
    assert len(top_classes(emb, 1, 10)) == 4
    with pytest.raises(ConfigError, match="outside"):
        top_classes(emb, 2)
