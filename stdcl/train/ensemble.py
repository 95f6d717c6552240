"""Score fusion of separately trained streams (joint, bone, joint-motion, bone-motion).

``fused = sum_i w_i * logits_i`` (raw logits, as the reference ensembles sum raw scores; or
softmax probabilities with ``softmax=True``). Weights are given, or tuned by grid search on
the *validation* scores only (the released ensemble tunes on the test set; this never reads
test scores to choose). Ties in validation accuracy go to the weights closest to uniform.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stdcl.errors import ConfigError, DataError

log = logging.getLogger("stdcl.train")


def _prepare(logits: np.ndarray, softmax: bool) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if softmax:
        x = np.exp(x - x.max(1, keepdims=True))
        x /= x.sum(1, keepdims=True)
    return x


def fuse(scores: Sequence[np.ndarray], weights: Sequence[float], softmax: bool = False) -> np.ndarray:
    """``sum_i weights[i] * scores[i]`` (each ``(N, K)``)."""
    if len(scores) != len(weights):
        raise ConfigError(f"{len(scores)} streams but {len(weights)} weights")
    return sum(float(w) * _prepare(s, softmax) for s, w in zip(scores, weights))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(scores).argmax(1) == np.asarray(labels)).mean()) if len(labels) else float("nan")


def tune_weights(val_scores: Sequence[np.ndarray], val_labels: np.ndarray, step: float = 0.1,
                 softmax: bool = False) -> tuple[list[float], float]:
    """Grid search of weights in ``{0, step, ..., 1}`` per stream maximising validation top-1.

    Returns ``(weights, validation accuracy)``. Ties (weights scaled alike fuse alike) go to the most balanced
    weights, then to the largest of those (the largest weight 1 when the grid has it). Only validation scores
    are read.
    """
    s = len(val_scores)
    if s == 0:
        raise ConfigError("no streams to fuse")
    levels = np.round(np.arange(0.0, 1.0 + 1e-9, step), 10)
    grid = np.asarray([w for w in itertools.product(levels, repeat=s) if any(w)], dtype=np.float64)
    stack = np.stack([_prepare(v, softmax) for v in val_scores])  # (S, N, K)
    labels = np.asarray(val_labels)
    n, k = stack.shape[1:]
    flat = stack.reshape(s, n * k)
    accs = np.empty(len(grid))
    chunk = max(1, int(2e7 // max(n * k, 1)))
    for i in range(0, len(grid), chunk):
        fused = (grid[i:i + chunk] @ flat).reshape(-1, n, k)
        accs[i:i + chunk] = (fused.argmax(2) == labels[None]).mean(1)
    best = accs.max()
    cand = np.flatnonzero(accs >= best - 1e-12)
    norm = grid[cand] / grid[cand].max(1, keepdims=True)
    dist = np.round(np.abs(norm - 1.0).sum(1), 9)  # distance from uniform weights (scale-free)
    pick = cand[np.lexsort((-grid[cand].max(1), dist))[0]]  # then the largest: (1, 1), not (0.1, 0.1)
    return [float(w) for w in grid[pick]], float(best)


def _stream_scores(run: str | os.PathLike, split: str, which: str, recompute: bool,
                   overrides: Sequence[str]) -> dict[str, Any]:
    from stdcl.train.evaluate import default_eval_dir, evaluate, read_scores
    from stdcl.train.run_dir import checkpoint_of

    p = Path(run)
    ckpt = checkpoint_of(p, which)
    path = default_eval_dir(p, ckpt, split) / "scores.npz"
    if recompute or not path.exists():
        evaluate(p, split=split, which=which, overrides=overrides)
    return read_scores(path)


def _aligned(streams: list[dict[str, Any]], runs: Sequence[str], split: str) -> tuple[list[np.ndarray], np.ndarray]:
    ref = streams[0]
    names = [str(n) for n in ref["names"]]
    pos = {n: i for i, n in enumerate(names)}
    out = []
    for st, run in zip(streams, runs):
        other = [str(n) for n in st["names"]]
        if sorted(other) != sorted(names):
            raise DataError(run, f"its {split} samples differ from {runs[0]}'s (same dataset and split needed)")
        if list(st["class_names"]) != list(ref["class_names"]):
            raise DataError(run, f"its classes differ from {runs[0]}'s")
        order = np.asarray([pos[n] for n in other])
        logits = np.empty_like(st["logits"])
        logits[order] = st["logits"]
        labels = np.empty_like(st["labels"])
        labels[order] = st["labels"]
        if not np.array_equal(labels, ref["labels"]):
            raise DataError(run, f"labels of its {split} samples differ from {runs[0]}'s")
        out.append(logits)
    return out, np.asarray(ref["labels"])


def ensemble(runs: Sequence[str | os.PathLike], weights: Sequence[float] | None = None, which: str = "best",
             step: float = 0.1, softmax: bool = False, recompute: bool = False,
             overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fuse the streams of ``runs``; weights given or tuned on validation. Returns every accuracy.
    Data ``overrides`` re-score every stream (stored scores may come from other data)."""
    runs = [str(r) for r in runs]
    recompute = recompute or bool(overrides)
    if weights is not None and len(weights) != len(runs):
        raise ConfigError(f"{len(runs)} runs but {len(weights)} weights")
    if weights is not None and not (all(np.isfinite(w) and w >= 0 for w in weights) and any(w > 0 for w in weights)):
        raise ConfigError(f"fusion weights must be finite numbers >= 0, not all 0; got {' '.join(map(str, weights))}")
    test, test_labels = _aligned([_stream_scores(r, "test", which, recompute, overrides) for r in runs], runs, "test")
    val, val_labels = None, None
    try:
        val, val_labels = _aligned([_stream_scores(r, "val", which, recompute, overrides) for r in runs], runs, "val")
    except ConfigError as e:
        if weights is None:
            raise ConfigError(f"cannot tune fusion weights without validation scores ({e}); give --weights") from None
    if weights is None:
        weights, _ = tune_weights(val, val_labels, step=step, softmax=softmax)
        source = "tuned on validation"
    else:
        weights = [float(w) for w in weights]
        source = "given"
    rows = []
    for r, t, i in zip(runs, test, range(len(runs))):
        rows.append({"run": r, "weight": weights[i], "test_top1": accuracy(t, test_labels),
                     "val_top1": accuracy(val[i], val_labels) if val is not None else None})
    result = {"weights": weights, "weights_source": source, "streams": rows, "softmax": softmax,
              "fused_test_top1": accuracy(fuse(test, weights, softmax), test_labels),
              "fused_val_top1": accuracy(fuse(val, weights, softmax), val_labels) if val is not None else None,
              "n_test": int(len(test_labels)), "n_val": int(len(val_labels)) if val_labels is not None else 0}
    return result
