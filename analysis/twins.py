"""Twin pairs (classes that differ only spatially or only temporally, ``class_meta[k]["twin"]``):
how well each embedding space tells the two classes of a pair apart, from their samples alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.embeddings import SPACES
from analysis.metrics import (TWIN_METRICS, _class_stats, _num, centroid_cosines, fisher_ratio, knn_predictions,
                              silhouette_values, unit_rows)
from stdcl.errors import ConfigError


def twin_pairs(class_meta: Sequence[dict] | None) -> list[tuple[int, int, str | None]]:
    """``(a, b, twin_type)`` for every unordered twin pair in ``class_meta`` (a < b), in class order."""
    pairs = []
    for a, m in enumerate(class_meta or []):
        b = (m or {}).get("twin")
        if b is None or not 0 <= int(b) < len(class_meta) or int(b) <= a:
            continue
        pairs.append((a, int(b), m.get("twin_type")))
    return pairs


def twin_separation(emb: Any, spaces: Sequence[str] = SPACES, k: int = 5) -> list[dict[str, Any]]:
    """One row per twin pair of ``emb.class_meta``: how well each space tells the two classes apart
    using only their samples (binary leave-one-out ``k``-NN accuracy, two-class silhouette, pairwise
    Fisher ratio, cosine of the two class centroids; None where a class has no sample). [] without twins."""
    missing = [s for s in spaces if s not in emb.spaces]
    if missing:
        raise ConfigError(f"no embedding space {missing[0]!r}; have {', '.join(emb.spaces)}")
    names = list(emb.class_names)
    labels = np.asarray(emb.labels)
    rows = []
    for a, b, kind in twin_pairs(emb.class_meta):
        sel = np.flatnonzero((labels == a) | (labels == b))
        y = (labels[sel] == b).astype(np.int64)
        per_space = {}
        for s in spaces:
            Xn = unit_rows(np.asarray(emb.space(s))[sel].astype(np.float64))
            per_space[s] = _pair_summary(Xn, y, k)
        rows.append({"pair": f"{names[a]} vs {names[b]}", "type": kind, "classes": [a, b],
                     "n": [int((y == 0).sum()), int((y == 1).sum())], "spaces": per_space})
    return rows


def _pair_summary(Xn: np.ndarray, y: np.ndarray, k: int) -> dict[str, float | None]:
    st = _class_stats(Xn, y, 2)
    if (st.counts == 0).any():
        return dict.fromkeys(TWIN_METRICS)
    pred = knn_predictions(Xn, y, 2, k) if len(y) >= 2 else None
    _, pair_f = fisher_ratio(st, y)
    sim, _ = centroid_cosines(st, y)
    return {"knn_accuracy": _num(np.mean(pred == y)) if pred is not None else None,
            "silhouette": _num(silhouette_values(st, y).mean()) if len(y) >= 3 else None,
            "fisher": _num(pair_f[0, 1]), "centroid_cosine": _num(sim[0, 1])}
