"""What the sample inspector says about one sample: its most probable classes, and its nearest
neighbours in each embedding space by cosine similarity.

"Which samples does this space put next to this one, and are they of the same class?": one
matrix-vector product per query; a zero vector has similarity 0 to everything (cosine is undefined
there). The query row itself is never its own neighbour; ties are broken by the lower row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.special import softmax

from analysis.embeddings import SPACES, Embeddings
from stdcl.errors import ConfigError
from stdcl.vectors import unit_rows


class Neighbours(NamedTuple):
    """The ``k`` nearest rows (most similar first) and their cosine similarities to the query."""

    rows: np.ndarray  # (k,) int64 positions in the Embeddings
    sims: np.ndarray  # (k,) float64 cosine similarities, non-increasing


def cosine_to_row(emb: Embeddings, row: int, space: str) -> np.ndarray:
    """``(N,)`` cosine similarity of every sample to sample ``row`` in ``space`` (itself included)."""
    n = len(emb)
    if not 0 <= int(row) < n:
        raise ConfigError(f"sample row {row} outside 0..{n - 1}")
    if space not in emb.spaces:
        raise ConfigError(f"no embedding space {space!r}; have {', '.join(emb.spaces)}")
    x = unit_rows(np.asarray(emb.space(space), dtype=np.float64))
    return x @ x[int(row)]


def nearest_neighbours(emb: Embeddings, row: int, space: str, k: int = 5) -> Neighbours:
    """The ``k`` samples most cosine-similar to sample ``row`` in ``space`` (fewer if there are fewer)."""
    if int(k) < 1:
        raise ConfigError(f"number of neighbours must be at least 1, got {k}")
    sims = cosine_to_row(emb, row, space)
    others = np.delete(np.arange(len(sims)), int(row))
    k = min(int(k), others.size)
    if k == 0:
        return Neighbours(np.zeros(0, np.int64), np.zeros(0))
    rest = sims[others]
    cut = np.partition(rest, rest.size - k)[rest.size - k]  # the k-th largest similarity
    cand = others[rest >= cut]  # every row tied with the k-th too, so the lower-row tie-break is exact
    order = np.lexsort((cand, -sims[cand]))[:k]
    rows = cand[order].astype(np.int64)
    return Neighbours(rows, sims[rows])


def neighbour_records(emb: Embeddings, row: int, space: str, k: int = 5) -> list[dict[str, Any]]:
    """:func:`nearest_neighbours` as table rows: ``rank``, ``row``, ``name``, ``label`` / ``class``,
    ``predicted`` / ``predicted_class``, ``same_class`` (as the query's true class) and ``cosine``."""
    nb = nearest_neighbours(emb, row, space, k)
    names, preds, query_label = emb.class_names, emb.predictions, int(emb.labels[int(row)])
    return [{"rank": i + 1, "row": int(r), "name": emb.names[r], "label": int(emb.labels[r]),
             "class": names[int(emb.labels[r])], "predicted": int(preds[r]),
             "predicted_class": names[int(preds[r])], "same_class": bool(emb.labels[r] == query_label),
             "cosine": float(s)} for i, (r, s) in enumerate(zip(nb.rows, nb.sims))]


def neighbours_by_space(emb: Embeddings, row: int, k: int = 5,
                        spaces: Sequence[str] = SPACES) -> dict[str, list[dict[str, Any]]]:
    """:func:`neighbour_records` for each of ``spaces`` that ``emb`` has."""
    return {s: neighbour_records(emb, row, s, k) for s in spaces if s in emb.spaces}


def top_classes(emb: Embeddings, row: int, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of sample ``row`` (softmax of its logits): ``rank``, ``class``,
    ``name``, ``probability``, ``true`` (whether it is the sample's label); ties by lower class id."""
    n = len(emb)
    if not 0 <= int(row) < n:
        raise ConfigError(f"sample row {row} outside 0..{n - 1}")
    if int(k) < 1:
        raise ConfigError(f"number of classes must be at least 1, got {k}")
    p = softmax(np.asarray(emb.logits[int(row)], dtype=np.float64))
    order = np.lexsort((np.arange(p.size), -p))[:int(k)]
    label = int(emb.labels[int(row)])
    return [{"rank": i + 1, "class": int(c), "name": emb.class_names[c], "probability": float(p[c]),
             "true": int(c) == label} for i, c in enumerate(order)]
