"""Confusion analysis of one model's predictions, and what changes between two models.

Matrices are ``K x K`` int64 with rows the true class and columns the predicted class (the
convention of :func:`stdcl.train.evaluate.accuracy_metrics`, which computes them). A sample's
confidence is the softmax probability of its predicted class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import softmax

from analysis.embeddings import Embeddings
from stdcl.errors import ConfigError
from stdcl.train.evaluate import accuracy_metrics


def confusion(emb: Embeddings) -> dict[str, Any]:
    """``matrix`` (K, K) int64, ``per_class`` (name -> accuracy, None without samples), ``support``
    (name -> count), ``top1``, ``top5``, ``n`` and ``class_names``."""
    m = accuracy_metrics(np.asarray(emb.logits), np.asarray(emb.labels, dtype=np.int64), emb.class_names)
    return {"matrix": m["confusion"], "per_class": m["per_class"], "support": m["support"], "top1": m["top1"],
            "top5": m["top5"], "n": m["n"], "class_names": list(emb.class_names)}


def confidences(emb: Embeddings) -> np.ndarray:
    """``(N,)`` softmax probability of each sample's predicted class."""
    if not len(emb):
        return np.zeros(0)
    return softmax(np.asarray(emb.logits, dtype=np.float64), axis=1).max(1)


def _check_class(emb: Embeddings, c: int, what: str) -> int:
    k = len(emb.class_names)
    if not 0 <= int(c) < k:
        raise ConfigError(f"{what} class must lie in 0..{k - 1}, got {c}")
    return int(c)


def cell_samples(emb: Embeddings, true_class: int, predicted_class: int) -> list[dict[str, Any]]:
    """The samples of one cell, most confident first: ``row`` (position in ``emb``), ``name``,
    ``index`` (item index in the split) and ``confidence``; ties keep row order."""
    t = _check_class(emb, true_class, "true")
    p = _check_class(emb, predicted_class, "predicted")
    rows = np.flatnonzero((np.asarray(emb.labels) == t) & (emb.predictions == p))
    conf = confidences(emb)[rows]
    order = np.argsort(-conf, kind="stable")
    return [{"row": int(rows[i]), "name": emb.names[rows[i]], "index": int(emb.indices[rows[i]]),
             "confidence": float(conf[i])} for i in order]


def most_confused(emb: Embeddings, top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` off-diagonal cells by count (ties: higher rate, then lower true, then lower predicted id).

    Each: ``true``, ``predicted``, ``true_name``, ``predicted_name``, ``count``, ``rate`` (count over the
    true class's support) and ``samples`` (names, most confident first).
    """
    mat = confusion(emb)["matrix"]
    support = mat.sum(1)
    cells = [(int(mat[i, j]), float(mat[i, j] / support[i]), int(i), int(j))
             for i, j in zip(*np.nonzero(mat)) if i != j]
    cells.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    names = emb.class_names
    return [{"true": i, "predicted": j, "true_name": names[i], "predicted_name": names[j], "count": n, "rate": r,
             "samples": [s["name"] for s in cell_samples(emb, i, j)]} for n, r, i, j in cells[:max(0, int(top))]]


def align(a: Embeddings, b: Embeddings) -> np.ndarray:
    """Rows of ``b`` in the order of ``a``'s sample names; ConfigError unless both cover the same
    samples (unique names) with the same classes and the same true labels."""
    if list(a.class_names) != list(b.class_names):
        raise ConfigError(f"the two predictions use different classes ({len(a.class_names)} vs "
                          f"{len(b.class_names)} classes, or different names)")
    for e, which in ((a, "first"), (b, "second")):
        if len(set(e.names)) != len(e.names):
            raise ConfigError(f"the {which} predictions repeat sample names; cannot align them by name")
    pos = {n: i for i, n in enumerate(b.names)}
    missing = [n for n in a.names if n not in pos]
    if missing or len(a.names) != len(b.names):
        extra = sorted(set(b.names) - set(a.names))
        raise ConfigError(f"the two predictions cover different samples ({len(a)} vs {len(b)}; "
                          f"{len(missing)} only in the first, {len(extra)} only in the second, "
                          f"e.g. {(missing or extra)[0]!r})")
    rows = np.asarray([pos[n] for n in a.names], dtype=np.int64)
    diff = np.flatnonzero(np.asarray(a.labels) != np.asarray(b.labels)[rows])
    if diff.size:
        raise ConfigError(f"the two predictions disagree on the true class of {diff.size} samples, "
                          f"e.g. {a.names[diff[0]]!r}")
    return rows


def confusion_change(a: Embeddings, b: Embeddings) -> dict[str, Any]:
    """What ``b`` changes relative to ``a`` on the same samples (aligned by name).

    ``matrix_delta`` (b - a), ``per_class`` rows ``{class, name, support, a, b, delta}`` sorted by delta
    (largest gain first; classes without samples last, delta None), ``helped`` (delta > 0, largest first),
    ``hurt`` (delta < 0, largest loss first), ``fixed`` (names wrong in a, right in b), ``broken`` (right in
    a, wrong in b), both in ``a``'s order, and ``top1`` ``{a, b, delta}``.
    """
    b = b.subset(align(a, b))
    ca, cb = confusion(a), confusion(b)
    rows = []
    for i, name in enumerate(a.class_names):
        acc_a, acc_b = ca["per_class"][name], cb["per_class"][name]
        delta = None if acc_a is None else acc_b - acc_a
        rows.append({"class": i, "name": name, "support": ca["support"][name], "a": acc_a, "b": acc_b, "delta": delta})
    rows.sort(key=lambda r: (r["delta"] is None, -(r["delta"] or 0.0), r["class"]))
    ok_a, ok_b = a.correct, b.correct
    return {
        "matrix_delta": cb["matrix"] - ca["matrix"],
        "per_class": rows,
        "helped": [r for r in rows if r["delta"] is not None and r["delta"] > 0],
        "hurt": sorted((r for r in rows if r["delta"] is not None and r["delta"] < 0),
                       key=lambda r: (r["delta"], r["class"])),
        "fixed": [a.names[i] for i in np.flatnonzero(~ok_a & ok_b)],
        "broken": [a.names[i] for i in np.flatnonzero(ok_a & ~ok_b)],
        "top1": {"a": ca["top1"], "b": cb["top1"], "delta": cb["top1"] - ca["top1"]},
        "n": len(a),
        "class_names": list(a.class_names),
    }
