"""2-D projections of embedding spaces (UMAP, PCA, t-SNE) for the scatter plots, cached on disk.

Pipeline of :func:`project` for ``metric="cosine"`` (the default): rows are L2-normalised, so
Euclidean distance becomes a monotone function of cosine distance (``|a - b|^2 = 2 - 2 cos``);
inputs wider than :data:`PCA_DIMS` are then reduced to that many principal components (the
pooled spaces are up to ~6400-d; this keeps the neighbour search fast and loses little, PCA
keeping Euclidean distances as well as any linear map can); UMAP and t-SNE then run with the
Euclidean metric on the result. On unit rows Euclidean t-SNE equals cosine t-SNE exactly
(scikit-learn squares Euclidean distances and the perplexity search absorbs the factor 2).

UMAP (umap-learn) is given exact nearest neighbours computed with scikit-learn's brute-force
search, which for the sizes the app shows (up to tens of thousands of points) is faster than
NN-descent and skips pynndescent's long numba compilation. ``seed=int`` makes UMAP reproducible,
but umap-learn then runs its layout optimisation single-threaded (``random_state`` disables its
parallelism); ``seed=None`` lets it use every core and gives a different layout each run.

Long projections report progress: ``progress(fraction, stage)`` is called at each stage (PCA,
neighbours, graph, every layout epoch of UMAP); :mod:`analysis.projection_jobs` runs them in the
background with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import warnings
from typing import Any, Callable

import numpy as np

from analysis.bundled import BUNDLED_CACHE
from analysis.cache import load_arrays, make_key, save_arrays
from analysis.metrics import unit_rows
from stdcl.errors import ConfigError

METHODS = ("umap", "pca", "tsne")
METRICS = ("cosine", "euclidean")
PCA_DIMS = 50  # inputs wider than this are reduced by PCA before UMAP / t-SNE
EXACT_PCA_MAX_DIM = 512  # covariance eigendecomposition up to this width (10k x 256: 0.06 s vs 1.1 s randomized)
MIN_SAMPLES = {"umap": 4, "tsne": 4, "pca": 1}  # fewer samples: ConfigError (UMAP/t-SNE need a neighbourhood)
CONSTANT_TOL = 1e-6  # rows within this (relative) of the first are one point: all project to the origin
PROJECTION_VERSION = 1  # part of the cache key: bump when the pipeline changes

_warm_lock = threading.Lock()
_warm_done = False

#: ``progress(fraction done in [0, 1], what is computed now)``
Progress = Callable[[float, str], None]
UMAP_LAYOUT_START = 0.4  # share of a UMAP run spent before its layout epochs (reported progress)


def _no_progress(fraction: float, stage: str) -> None:
    return None


class _EpochReport:
    """A file for umap-learn's tqdm bar (its ``tqdm_kwds``) that turns "epoch/total" into ``progress`` calls."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def write(self, text: str) -> None:
        found = re.findall(r"(\d+)/(\d+)", text)
        if found:
            done, total = (int(v) for v in found[-1])
            if total:
                share = UMAP_LAYOUT_START + (1 - UMAP_LAYOUT_START) * done / total
                self.progress(min(share, 1.0), f"optimising the layout: epoch {done}/{total}")

    def flush(self) -> None:
        return None


def _check_input(X: np.ndarray, method: str, metric: str) -> np.ndarray:
    if method not in METHODS:
        raise ConfigError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    if metric not in METRICS:
        raise ConfigError(f"unknown projection metric {metric!r}; choose from {', '.join(METRICS)}")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ConfigError(f"projection input must be a 2-D array (samples x features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ConfigError(f"projection input must be real numbers, got dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ConfigError(f"projection input has {rows.size} row(s) with NaN or infinite values "
                          f"(first: row {int(rows[0])})")
    n = len(X)
    if n < MIN_SAMPLES[method]:
        hint = "; use method 'pca'" if method != "pca" else ""
        raise ConfigError(f"{method} needs at least {MIN_SAMPLES[method]} samples, got {n}{hint}")
    if X.shape[1] == 0:
        raise ConfigError("projection input has no features (0 columns)")
    return X


def _pca(X: np.ndarray, n_components: int, seed: int | None) -> np.ndarray:
    """scikit-learn PCA scores of ``X`` (``n_components`` <= min(N, d)): exact (eigenvectors of the
    d x d covariance) up to :data:`EXACT_PCA_MAX_DIM` features, randomized SVD (seeded) above."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    solver = "covariance_eigh" if X.shape[1] <= EXACT_PCA_MAX_DIM else "randomized"
    # one BLAS thread: these factorisations are many small calls, and on a busy machine two threads
    # waiting on each other made a 256 x 256 eigendecomposition take 1 s instead of 0.02 s
    with threadpool_limits(limits=1, user_api="blas"):
        return PCA(n_components=n_components, svd_solver=solver, random_state=seed).fit_transform(X).astype(np.float32)


def _reduce(X: np.ndarray, seed: int | None) -> np.ndarray:
    """``X`` reduced to :data:`PCA_DIMS` principal components when wider (see module docstring)."""
    n, d = X.shape
    if d <= PCA_DIMS:
        return X
    return _pca(X, min(PCA_DIMS, n), seed)


def _umap(X: np.ndarray, seed: int | None, n_epochs: int, n_neighbors: int, progress: Progress) -> np.ndarray:
    import umap
    from sklearn.neighbors import NearestNeighbors

    n = len(X)
    k = max(2, min(int(n_neighbors), n - 1))
    progress(0.1, f"finding the {k - 1} nearest neighbours of each of {n:,} points")
    # exact neighbours, the point itself included as umap-learn expects (its own NN search does the same)
    dist, idx = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(X).kneighbors(X)
    dist[idx == np.arange(n)[:, None]] = 0.0  # the GEMM-based search leaves ~1e-7; umap reads >0 as a neighbour
    seeded = seed is not None
    progress(0.25, "building the neighbour graph and the initial layout")
    epochs = {"disable": False, "file": _EpochReport(progress), "bar_format": "{n}/{total}", "mininterval": 0.5}
    reducer = umap.UMAP(n_components=2, n_neighbors=k, n_epochs=int(n_epochs), metric="euclidean",
                        random_state=seed if seeded else None, n_jobs=1 if seeded else -1,
                        precomputed_knn=(idx.astype(np.int32), dist.astype(np.float32)),
                        low_memory=True, transform_mode="embedding", verbose=False, tqdm_kwds=epochs)
    with warnings.catch_warnings():
        # "no search index: transform unavailable" (we never transform), spectral-init fallbacks on tiny data
        warnings.simplefilter("ignore")
        return reducer.fit_transform(X).astype(np.float32)


def _tsne(X: np.ndarray, seed: int | None, perplexity: float) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(X)
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))  # sklearn needs perplexity < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="euclidean", random_state=seed,
                n_jobs=1 if seed is not None else None)
    # seeded: one thread, like seeded UMAP. Barnes-Hut's ~1000 short OpenMP regions otherwise spin-wait;
    # on a busy machine that made a 300-point t-SNE ~15x slower (20 s of CPU instead of 1.1 s)
    limit = threadpool_limits(limits=1) if seed is not None else contextlib.nullcontext()
    with warnings.catch_warnings(), limit:
        warnings.simplefilter("ignore", FutureWarning)
        return tsne.fit_transform(X).astype(np.float32)


def project(X: np.ndarray, method: str = "umap", seed: int | None = 0, n_epochs: int = 200,
            n_neighbors: int = 15, metric: str = "cosine", perplexity: float = 30.0,
            progress: Progress | None = None) -> np.ndarray:
    """``(N, 2)`` float32 coordinates of the rows of ``X`` by ``method`` (``umap``, ``pca``, ``tsne``).

    ``metric="cosine"`` L2-normalises rows first (``euclidean`` leaves them); inputs wider than
    :data:`PCA_DIMS` are reduced to that many principal components before UMAP / t-SNE (see the
    module docstring). ``seed``: an int gives reproducible output (UMAP then runs single-threaded,
    umap-learn's ``random_state`` disabling its parallelism, and t-SNE on one thread too); ``None`` is
    unseeded and parallel.
    ``n_epochs``, ``n_neighbors`` apply to UMAP, ``perplexity`` to t-SNE; both are capped for small
    ``N`` (``n_neighbors <= N - 1``, ``perplexity <= (N - 1) / 3``). Rows that are all identical
    project to the origin. Raises :class:`ConfigError` on NaN / infinite rows, a non-2-D input,
    an unknown method or metric, or fewer than :data:`MIN_SAMPLES` rows.
    """
    X = _check_input(X, method, metric)
    if int(n_epochs) < 1 or int(n_neighbors) < 2 or not float(perplexity) > 0:
        raise ConfigError(f"projection parameters out of range: n_epochs={n_epochs} (>= 1), "
                          f"n_neighbors={n_neighbors} (>= 2), perplexity={perplexity} (> 0)")
    if metric == "cosine":
        X = unit_rows(X)
    n = len(X)
    if n == 1 or np.abs(X - X[0]).max() <= CONSTANT_TOL * max(1.0, float(np.abs(X).max())):
        return np.zeros((n, 2), np.float32)  # one point (up to rounding, e.g. positive multiples under cosine)
    progress = progress or _no_progress
    if method == "pca":
        k = min(2, n - 1, X.shape[1])  # centred data has rank <= N - 1: the rest stays 0
        out = np.zeros((n, 2), np.float32)
        out[:, :k] = _pca(X, k, seed)
    else:
        if X.shape[1] > PCA_DIMS:
            progress(0.0, f"reducing {X.shape[1]} dimensions to {PCA_DIMS} principal components")
        X = _reduce(X, seed)
        if method == "umap":
            out = _umap(X, seed, n_epochs, n_neighbors, progress)
        else:
            progress(0.1, f"t-SNE of {n:,} points (no finer progress)")
            out = _tsne(X, seed, perplexity)
    progress(1.0, "done")
    return out


def projection_params(method: str, seed: int | None = 0, n_epochs: int = 200, n_neighbors: int = 15,
                      metric: str = "cosine", perplexity: float = 30.0) -> dict[str, Any]:
    """The parameters that determine ``method``'s output (the cache key's part)."""
    params: dict[str, Any] = {"seed": seed, "metric": metric}
    if method == "umap":
        params.update(n_epochs=int(n_epochs), n_neighbors=int(n_neighbors))
    elif method == "tsne":
        params.update(perplexity=float(perplexity))
    return params


def projection_key(emb_key: str, space: str, method: str = "umap", **params: Any) -> str:
    """The cache key of a projection of ``space`` of the embeddings keyed ``emb_key``."""
    return make_key("projection", PROJECTION_VERSION, emb_key, space, method, projection_params(method, **params))


PARAMS = ("seed", "n_epochs", "n_neighbors", "metric", "perplexity")  # project()'s keyword arguments a key holds


def _check_request(emb: Any, space: str, method: str, params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ConfigError(f"unknown projection parameter(s) {', '.join(unknown)}; use {', '.join(sorted(PARAMS))}")
    if method not in METHODS:
        raise ConfigError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    if space not in emb.spaces:
        raise ConfigError(f"no embedding space {space!r}; have {', '.join(emb.spaces)}")


def cached_projection(emb: Any, space: str, method: str = "umap", *, cache_root: str | os.PathLike | None = None,
                      **params: Any) -> np.ndarray | None:
    """The cached result of :func:`project_embeddings` (the user's cache, then the demo's shipped
    projections unless ``cache_root`` is given), or None when it has not been computed."""
    _check_request(emb, space, method, params)
    key = projection_key(emb.key, space, method, **params)
    roots = [cache_root] if cache_root is not None else [None, BUNDLED_CACHE]
    for root in roots:
        hit = load_arrays("projections", key, root)
        if hit is not None and "coords" in hit and hit["coords"].shape == (len(emb), 2) and \
                np.issubdtype(hit["coords"].dtype, np.floating) and np.isfinite(hit["coords"]).all():
            return hit["coords"].astype(np.float32, copy=False)
    return None


def project_embeddings(emb: Any, space: str, method: str = "umap", *, use_cache: bool = True,
                       cache_root: str | os.PathLike | None = None, progress: Progress | None = None,
                       **params: Any) -> np.ndarray:
    """:func:`project` of ``emb.space(space)``, read from / written to the cache (kind ``projections``).

    ``params`` are :func:`project`'s keyword arguments (``seed``, ``n_epochs``, ``n_neighbors``,
    ``metric``, ``perplexity``); the key holds only those that affect ``method``. ``progress``
    hears the stages of a computation (nothing on a cache hit).
    """
    _check_request(emb, space, method, params)
    if use_cache:
        hit = cached_projection(emb, space, method, cache_root=cache_root, **params)
        if hit is not None:
            return hit
    coords = project(emb.space(space), method, progress=progress, **params)
    if use_cache:
        save_arrays("projections", projection_key(emb.key, space, method, **params), {"coords": coords}, cache_root)
    return coords


def umap_ready() -> bool:
    """Whether :func:`warm_up_umap` has compiled umap-learn's code in this process (a first UMAP waits for it)."""
    return _warm_done


def warm_up_umap() -> float:
    """Compile umap-learn's numba code once per process (a tiny fit of the same code path, seeded and
    unseeded); returns the seconds spent, ~0 on later calls. Thread-safe."""
    global _warm_done
    t0 = time.perf_counter()
    with _warm_lock:
        if _warm_done:
            return time.perf_counter() - t0
        # six far-apart clusters: a graph of more than 4 components, so umap-learn's multi-component
        # spectral initialisation (which real class clusters trigger) is compiled too
        rng = np.random.default_rng(0)
        X = (rng.normal(size=(60, 8)) + 20.0 * np.repeat(np.eye(6, 8), 10, axis=0)).astype(np.float32)
        for seed in (0, None):
            project(X, "umap", seed=seed, n_epochs=10, n_neighbors=5, metric="euclidean")
        _warm_done = True
    return time.perf_counter() - t0
