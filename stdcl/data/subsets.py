"""Seeded, class-stratified subsets of a split (analysis sample budgets, training-time probes)."""

from __future__ import annotations

import numpy as np


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about ``n`` items drawn per class in proportion (all items if ``n >= len``)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.round(counts * n / len(labels)).astype(int))
    for c, q in zip(classes, quota):
        ids = np.flatnonzero(labels == c)
        picked.append(rng.choice(ids, size=min(q, len(ids)), replace=False))
    return np.sort(np.concatenate(picked))


__all__ = ["stratified_subset"]
