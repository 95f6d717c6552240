"""How well an embedding space separates the classes: separation metrics on the embeddings
themselves (never on 2-D projections), overall, per class and per class pair.

Every metric reads the **L2-normalised** embeddings (the geometry of the contrastive loss and of
cosine similarity; a zero row stays zero), so the numbers compare across spaces of any width and
scale. Cosine distance on unit rows is linear in the rows (``1 - x·y``), so the silhouette's
per-class mean distances come exactly from class sums in ``O(N·K·d)``: the silhouette is exact on
every sample, never sampled. Results are plain JSON (floats, lists, ``None`` where undefined).

=====================  ======================================================================
silhouette             mean silhouette coefficient, cosine distance (scikit-learn's definition:
                       ``(b - a) / max(a, b)``, 0 for a sample alone in its class)
knn_accuracy           leave-one-out k-NN accuracy, cosine (exact neighbours; the sample itself
                       never votes; a tied vote goes to the tied class whose member is nearest)
davies_bouldin         scikit-learn's Davies-Bouldin index
calinski_harabasz      scikit-learn's Calinski-Harabasz index (= fisher · (N - K) / (K - 1))
fisher                 trace of the between-class scatter / trace of the within-class scatter
alignment              Wang & Isola (2020), alpha = 2: mean squared distance of same-class pairs
uniformity             Wang & Isola (2020), t = 2: log mean exp(-2 · squared distance) over all
                       distinct pairs (of ``max_samples`` rows drawn with ``seed`` when N is larger)
centroid_margin        per sample: cosine to its class centroid minus the largest cosine to another
                       class's centroid (centroids = class means of the unit rows, the sample included)
=====================  ======================================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from analysis.cache import array_json, json_array, load_arrays, make_key, save_arrays
from analysis.embeddings import SPACES
from stdcl.errors import ConfigError
from stdcl.vectors import unit_rows

METRICS_VERSION = 1  # part of the cache key: bump when a definition changes


class MetricInfo(NamedTuple):
    description: str
    better: str  # "higher" or "lower"


METRIC_INFO: dict[str, MetricInfo] = {
    "silhouette": MetricInfo("mean silhouette coefficient with cosine distance (-1 to 1)", "higher"),
    "knn_accuracy": MetricInfo("leave-one-out k-nearest-neighbour accuracy, cosine similarity", "higher"),
    "davies_bouldin": MetricInfo("Davies-Bouldin index: class spread relative to centroid distances", "lower"),
    "calinski_harabasz": MetricInfo("Calinski-Harabasz index: between- / within-class dispersion, "
                                    "scaled by degrees of freedom", "higher"),
    "fisher": MetricInfo("Fisher ratio: trace of between-class scatter / trace of within-class scatter", "higher"),
    "alignment": MetricInfo("alignment (Wang & Isola 2020): mean squared distance between same-class pairs "
                            "of unit embeddings (0 to 4)", "lower"),
    "uniformity": MetricInfo("uniformity (Wang & Isola 2020): log mean exp(-2 x squared distance) over all "
                             "pairs of unit embeddings (-4 to 0)", "lower"),
    "centroid_margin": MetricInfo("cosine to the own class centroid minus the highest cosine to another "
                                  "class centroid", "higher"),
}
TWIN_METRICS = ("knn_accuracy", "silhouette", "fisher", "centroid_cosine")
#: How the metrics (overall, per class, per pair, twin) are named on screen.
METRIC_NAMES = {"silhouette": "silhouette", "knn_accuracy": "k-NN accuracy", "davies_bouldin": "Davies-Bouldin",
                "calinski_harabasz": "Calinski-Harabasz", "fisher": "Fisher ratio", "alignment": "alignment",
                "uniformity": "uniformity", "centroid_margin": "centroid margin", "centroid_cosine": "centroid cosine",
                "centroid_similarity": "centroid similarity", "pair_fisher": "pairwise Fisher ratio",
                "pair_silhouette": "two-class silhouette", "n": "samples"}


def metric_name(key: str) -> str:
    """The on-screen name of a metric key (``knn_accuracy`` -> ``k-NN accuracy``)."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


# ----------------------------------------------------------------------------------------- helpers


def _num(v: Any) -> float | None:
    """A finite float, else None (JSON has no NaN / inf)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _nums(a: np.ndarray) -> list:
    """An array as nested lists of floats, None where not finite."""
    return [_nums(r) for r in a] if np.ndim(a) > 1 else [_num(v) for v in a]


def _check(X: np.ndarray, labels: np.ndarray, num_classes: int, k: int,
           max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ConfigError(f"embeddings must be a 2-D real array (samples x features), got {X.dtype} {X.shape}")
    y = np.asarray(labels)
    if y.shape != (len(X),):
        raise ConfigError(f"labels must be one per embedding row: {y.shape} labels for {len(X)} rows")
    integral = np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))
    if len(y) and not integral:
        raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")
    if int(k) < 1:
        raise ConfigError(f"k (neighbours) must be at least 1, got {k}")
    if int(max_samples) < 2:
        raise ConfigError(f"max_samples must be at least 2, got {max_samples}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ConfigError(f"embeddings have {rows.size} row(s) with NaN or infinite values (first: row {int(rows[0])})")
    return X, y


# ------------------------------------------------------------------------------------- primitives


def cosine_neighbours(Xn: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` rows of the ``k`` most cosine-similar other rows of the unit rows ``Xn``, most similar
    first (exact: blocked float32 Gram matrix and top-k; a row is never its own neighbour; a zero row
    has similarity 0 to all; rows at exactly equal similarity come in ``torch.topk``'s order)."""
    import torch

    n = len(Xn)
    T = torch.from_numpy(np.ascontiguousarray(Xn, dtype=np.float32))
    out = np.empty((n, k), np.int64)
    block = max(1, min(n, (1 << 24) // max(n, 1)))  # ~64 MB of similarities at a time
    with torch.no_grad():
        for s in range(0, n, block):
            G = T[s:s + block] @ T.T
            r = torch.arange(G.shape[0])
            G[r, r + s] = -torch.inf
            out[s:s + block] = G.topk(k, dim=1).indices.numpy()
    return out


def knn_predictions(Xn: np.ndarray, y: np.ndarray, num_classes: int, k: int = 5) -> np.ndarray:
    """Leave-one-out ``k``-NN class votes by cosine similarity of the unit rows ``Xn``
    (:func:`cosine_neighbours`; ``k`` capped at ``N - 1``). A tied vote goes to the tied class that
    has the nearest neighbour."""
    n = len(y)
    k = min(int(k), n - 1)
    if k < 1:
        return np.full(n, -1, np.int64)
    nl = y[cosine_neighbours(Xn, k)]  # (N, k) neighbour labels, nearest first
    rows = np.arange(n)
    counts = np.zeros((n, num_classes), np.int64)
    first = np.full((n, num_classes), k, np.int64)  # rank of the nearest neighbour of each class
    for r in range(k - 1, -1, -1):  # loop over ranks, not samples
        np.add.at(counts, (rows, nl[:, r]), 1)
        first[rows, nl[:, r]] = r
    return np.argmax(counts * (k + 1) + (k - first), axis=1)


class _ClassStats(NamedTuple):
    counts: np.ndarray  # (K,) samples per class
    sums: np.ndarray  # (K, d) sum of unit rows per class
    sq: np.ndarray  # (N,) squared norms of the unit rows (1, or 0 for a zero row)
    dots: np.ndarray  # (N, K) x_i . sums_c


def _class_stats(Xn: np.ndarray, y: np.ndarray, num_classes: int) -> _ClassStats:
    counts = np.bincount(y, minlength=num_classes)
    sums = np.zeros((num_classes, Xn.shape[1]))
    np.add.at(sums, y, Xn)
    return _ClassStats(counts, sums, np.einsum("ij,ij->i", Xn, Xn), Xn @ sums.T)


def _silhouette_parts(st: _ClassStats, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` (N,): mean cosine distance to the own class (self excluded); ``mean_to`` (N, K): mean
    cosine distance to each class (inf for absent classes)."""
    n = len(y)
    sumdist = st.counts[None, :] - st.dots  # sum over j in c of (1 - x_i . x_j)
    own = sumdist[np.arange(n), y] - (1.0 - st.sq)  # drop the self term (distance to itself is 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(st.counts[y] > 1, own / (st.counts[y] - 1), 0.0)
        mean_to = np.where(st.counts[None, :] > 0, sumdist / st.counts[None, :], np.inf)
    return np.maximum(a, 0.0), np.maximum(mean_to, 0.0)


def _sil(a: np.ndarray, b: np.ndarray, alone: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    return np.where(alone | ~np.isfinite(s), 0.0, s)


def silhouette_values(st: _ClassStats, y: np.ndarray) -> np.ndarray:
    """Per-sample silhouette with cosine distance (scikit-learn's definition), exact."""
    a, mean_to = _silhouette_parts(st, y)
    mean_to = mean_to.copy()
    mean_to[np.arange(len(y)), y] = np.inf
    return _sil(a, mean_to.min(axis=1), st.counts[y] <= 1)


def pair_silhouette(st: _ClassStats, y: np.ndarray) -> np.ndarray:
    """(K, K): silhouette of the samples of classes a and b with only those two classes (NaN on the
    diagonal and where the pair has an absent class or fewer than 3 samples)."""
    K = len(st.counts)
    a, mean_to = _silhouette_parts(st, y)
    s = _sil(a[:, None], mean_to, (st.counts[y] <= 1)[:, None])  # (N, K): s_i against class c alone
    sums = np.zeros((K, K))
    np.add.at(sums, y, s)  # sums[a, b] = sum over i in a of s_i(b)
    n_pair = st.counts[:, None] + st.counts[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (sums + sums.T) / n_pair
    ok = (st.counts[:, None] > 0) & (st.counts[None, :] > 0) & (n_pair >= 3) & ~np.eye(K, dtype=bool)
    return np.where(ok, out, np.nan)


def _within(st: _ClassStats, y: np.ndarray, means: np.ndarray) -> np.ndarray:
    sq_sum = np.bincount(y, weights=st.sq, minlength=len(st.counts))
    return np.maximum(sq_sum - st.counts * np.einsum("kd,kd->k", means, means), 0.0)


def fisher_ratio(st: _ClassStats, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Overall Fisher ratio tr(S_B) / tr(S_W) and the (K, K) pairwise one (classes a and b alone)."""
    K = len(st.counts)
    present = st.counts > 0
    means = np.where(present[:, None], st.sums / np.maximum(st.counts, 1)[:, None], 0.0)
    within = _within(st, y, means)
    mu = st.sums.sum(0) / max(int(st.counts.sum()), 1)
    between = float(np.sum(st.counts * np.sum((means - mu) ** 2, axis=1)))
    total_within = float(within.sum())
    overall = between / total_within if present.sum() >= 2 and total_within > 0 else math.nan
    d2 = np.sum((means[:, None, :] - means[None, :, :]) ** 2, axis=2)
    na, nb = st.counts[:, None].astype(float), st.counts[None, :].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pair = (na * nb / (na + nb)) * d2 / (within[:, None] + within[None, :])
    ok = present[:, None] & present[None, :] & ~np.eye(K, dtype=bool)
    return overall, np.where(ok & np.isfinite(pair), pair, np.nan)


def alignment_values(st: _ClassStats, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Wang & Isola alignment (alpha=2): overall mean over all same-class pairs, and per class."""
    sq_sum = np.bincount(y, weights=st.sq, minlength=len(st.counts))
    pair_sums = np.maximum(st.counts * sq_sum - np.einsum("kd,kd->k", st.sums, st.sums), 0.0)  # sum_{i<j} |xi-xj|^2
    pairs = st.counts * (st.counts - 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(pairs > 0, pair_sums / pairs, np.nan)
    total = pairs.sum()
    return (float(pair_sums.sum() / total) if total > 0 else math.nan), per


def uniformity(Xn: np.ndarray, max_samples: int = 5000, seed: int = 0, t: float = 2.0,
               block: int = 1024) -> float:
    """Wang & Isola uniformity: log mean exp(-t |x_i - x_j|^2) over distinct pairs of the unit rows
    (of ``max_samples`` rows drawn with ``seed`` when there are more). Blocked upper triangle."""
    n = len(Xn)
    if n < 2:
        return math.nan
    if n > max_samples:
        Xn = Xn[np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))]
        n = max_samples
    X = Xn.astype(np.float32)
    sq = np.einsum("ij,ij->i", X, X)
    total = 0.0
    for s in range(0, n, block):
        e = min(s + block, n)
        # the diagonal block's upper triangle, then every column to its right (j > i throughout)
        d2 = sq[s:e, None] + sq[None, s:e] - 2.0 * (X[s:e] @ X[s:e].T)
        total += float(np.exp(-t * np.maximum(d2[np.triu_indices(e - s, 1)], 0.0)).sum(dtype=np.float64))
        if e < n:
            d2 = sq[s:e, None] + sq[None, e:] - 2.0 * (X[s:e] @ X[e:].T)
            total += float(np.exp(-t * np.maximum(d2, 0.0, out=d2), out=d2).sum(dtype=np.float64))
    return math.log(total / (n * (n - 1) / 2.0)) if total > 0 else -math.inf


def centroid_cosines(st: _ClassStats, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, K)`` cosine similarity of the class centroids (NaN for absent classes) and the per-sample
    margin: cosine to the own centroid minus the largest cosine to another present class's centroid."""
    present = st.counts > 0
    norms = np.linalg.norm(st.sums, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms[None, :] > 0, st.dots / norms[None, :], 0.0)  # cos(x_i, centroid_c); x_i is unit
        unit = np.where(norms[:, None] > 0, st.sums / np.where(norms > 0, norms, 1.0)[:, None], 0.0)
    sim = unit @ unit.T
    sim[~present, :] = np.nan
    sim[:, ~present] = np.nan
    n = len(y)
    if present.sum() < 2:
        return sim, np.full(n, np.nan)
    own = cos[np.arange(n), y]
    other = np.where(present[None, :], cos, -np.inf)
    other[np.arange(n), y] = -np.inf
    return sim, own - other.max(axis=1)


def _class_means(values: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes)
    sums = np.bincount(y, weights=values, minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


# ------------------------------------------------------------------------------------------ public


def separation_metrics(X: np.ndarray, labels: np.ndarray, num_classes: int, *, max_samples: int = 5000,
                       k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Separation of the ``num_classes`` classes ``labels`` in the embeddings ``X`` (N, d).

    Returns ``overall`` (each metric of :data:`METRIC_INFO` plus ``n`` and ``classes``, the number of
    classes present), ``per_class`` (``n``, ``silhouette``, ``knn_accuracy`` (recall),
    ``centroid_margin``, ``alignment``: lists of length K, None where a class is absent),
    ``centroid_similarity``, ``pair_fisher`` and ``pair_silhouette`` (K x K, None on the diagonal and for
    absent classes; pairwise silhouette is exact and cheap, see the module docstring). Metrics that
    need two classes are None with fewer. ``max_samples`` bounds only the uniformity's pair sample.
    """
    X, y = _check(X, labels, num_classes, k, max_samples)
    K = int(num_classes)
    n = len(y)
    Xn = unit_rows(X.astype(np.float64))
    st = _class_stats(Xn, y, K)
    n_present = int((st.counts > 0).sum())
    two = n_present >= 2
    sil_ok = 2 <= n_present <= n - 1  # scikit-learn's condition for silhouette / DB / CH

    sil = silhouette_values(st, y) if n else np.zeros(0)
    pred = knn_predictions(Xn, y, K, k) if n >= 2 else np.full(n, -1)
    hit = (pred == y).astype(float)
    fisher, pair_fisher = fisher_ratio(st, y)
    align, align_per = alignment_values(st, y)
    sim, margin = centroid_cosines(st, y)
    db = ch = None
    if sil_ok:
        from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

        db, ch = davies_bouldin_score(Xn, y), calinski_harabasz_score(Xn, y)

    overall = {
        "n": n, "classes": n_present,
        "silhouette": _num(sil.mean()) if sil_ok else None,
        "knn_accuracy": _num(hit.mean()) if n >= 2 else None,
        "davies_bouldin": _num(db), "calinski_harabasz": _num(ch),
        "fisher": _num(fisher),
        "alignment": _num(align),
        "uniformity": _num(uniformity(Xn, max_samples, seed)),
        "centroid_margin": _num(margin.mean()) if two else None,
    }
    per_class = {
        "n": [int(c) for c in st.counts],
        "silhouette": _nums(_class_means(sil, y, K)) if sil_ok else [None] * K,
        "knn_accuracy": _nums(_class_means(hit, y, K)) if n >= 2 else [None] * K,
        "centroid_margin": _nums(_class_means(margin, y, K)) if two else [None] * K,
        "alignment": _nums(align_per),
    }
    return {"overall": overall, "per_class": per_class, "centroid_similarity": _nums(sim),
            "pair_fisher": _nums(pair_fisher), "pair_silhouette": _nums(pair_silhouette(st, y))}


def space_metrics(emb: Any, spaces: Sequence[str] = SPACES, *, max_samples: int = 5000, k: int = 5, seed: int = 0,
                  use_cache: bool = True, cache_root: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """:func:`separation_metrics` of each of ``spaces`` of ``emb`` (an :class:`~analysis.embeddings.Embeddings`),
    each cached on disk (kind ``metrics``, keyed by ``emb.key``, the space and the parameters)."""
    missing = [s for s in spaces if s not in emb.spaces]
    if missing:
        raise ConfigError(f"no embedding space {missing[0]!r}; have {', '.join(emb.spaces)}")
    params = {"max_samples": int(max_samples), "k": int(k), "seed": int(seed)}
    out = {}
    for s in spaces:
        key = make_key("metrics", METRICS_VERSION, emb.key, s, params)
        hit = load_arrays("metrics", key, cache_root) if use_cache else None
        if hit is not None and "metrics" in hit:
            out[s] = array_json(hit["metrics"])
            continue
        out[s] = separation_metrics(emb.space(s), emb.labels, len(emb.class_names), **params)
        if use_cache:
            save_arrays("metrics", key, {"metrics": json_array(out[s])}, cache_root)
    return out


def compare_metrics(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"space", "metric", "a", "b", "delta" (b - a), "better"}`` for the overall metrics of two
    :func:`space_metrics` results (spaces of ``a`` also in ``b``; a single :func:`separation_metrics`
    result each works too, with space None). ``better``: ``"a"``, ``"b"``, ``"="`` (equal) or None when
    either value is undefined; the direction per metric is :data:`METRIC_INFO`'s."""
    if "overall" in a and "overall" in b:
        a, b = {None: a}, {None: b}
    rows = []
    for space, ma in a.items():
        if space not in b:
            continue
        oa, ob = ma.get("overall", {}), b[space].get("overall", {})
        for metric, info in METRIC_INFO.items():
            if metric not in oa or metric not in ob:
                continue
            va, vb = _num(oa[metric]), _num(ob[metric])
            if va is None or vb is None:
                rows.append({"space": space, "metric": metric, "a": va, "b": vb, "delta": None, "better": None})
                continue
            delta = vb - va
            if abs(delta) <= 1e-12 * max(1.0, abs(va), abs(vb)):
                better = "="
            else:
                better = "b" if (delta > 0) == (info.better == "higher") else "a"
            rows.append({"space": space, "metric": metric, "a": va, "b": vb, "delta": delta, "better": better})
    return rows
