"""Working with a chosen group of samples: finding samples by name, and the table (and CSV) of a
selection with each sample's name, true label and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.embeddings import Embeddings

#: Columns of :func:`selection_table` (and of the CSV export).
COLUMNS = ("row", "name", "label", "prediction", "correct")


def find_samples(names: Sequence[str], query: str, limit: int = 50) -> np.ndarray:
    """Rows of the samples whose name matches ``query`` (surrounding spaces ignored, case-insensitive):
    an exact match first, then the names that contain it, in row order; at most ``limit`` rows.
    An empty query matches nothing."""
    q = query.strip().lower()
    if not q:
        return np.zeros(0, np.int64)
    exact = [i for i, name in enumerate(names) if name.lower() == q]
    rest = [i for i, name in enumerate(names) if q in name.lower() and name.lower() != q]
    return np.asarray((exact + rest)[:max(int(limit), 0)], dtype=np.int64)


def selection_table(emb: Embeddings, rows: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """One line per row of ``rows`` (in that order): row, sample name, true label, prediction (class
    names) and whether the prediction is correct."""
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    names = np.asarray(emb.class_names, dtype=object)
    labels, preds = emb.labels[r], emb.predictions[r]
    return pd.DataFrame({"row": r, "name": np.asarray(emb.names, dtype=object)[r], "label": names[labels],
                         "prediction": names[preds], "correct": preds == labels}, columns=list(COLUMNS))


def selection_csv(emb: Embeddings, rows: Sequence[int] | np.ndarray) -> bytes:
    """:func:`selection_table` as UTF-8 CSV (a header line, then one line per sample)."""
    return selection_table(emb, rows).to_csv(index=False).encode("utf-8")
