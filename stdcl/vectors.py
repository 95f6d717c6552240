"""Row vectors in cosine geometry: the one L2 normalisation that embeddings, probes and metrics share."""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` (N, D) scaled to unit L2 norm, same dtype; a zero row stays zero. Norms are taken
    in float64, so float32 rows as large as float32 allows (~1e38) do not overflow to an infinite norm."""
    x = np.asarray(x)
    norms = np.linalg.norm(x.astype(np.float64, copy=False), axis=1, keepdims=True)
    out = np.divide(x, norms, out=np.zeros(x.shape, np.float64), where=norms > 0)
    return out.astype(x.dtype, copy=False) if np.issubdtype(x.dtype, np.floating) else out


__all__ = ["unit_rows"]
