"""Finding samples by name and the table / CSV of a selection (analysis.selection)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from analysis.embeddings import Embeddings
from analysis.selection import COLUMNS, find_samples, selection_csv, selection_table

NAMES = ["S001A001R001", "S001A002R001", "s001a001", "S002A001R001", "S001A001"]


def test_find_samples_puts_the_exact_name_first_then_every_name_containing_it():
    np.testing.assert_array_equal(find_samples(NAMES, "S001A001"), [2, 4, 0])  # exact (any case), then contains
    np.testing.assert_array_equal(find_samples(NAMES, "  a002 "), [1])
    np.testing.assert_array_equal(find_samples(NAMES, "A001", limit=2), [0, 2])
    assert find_samples(NAMES, "").size == 0 and find_samples(NAMES, "   ").size == 0
    assert find_samples(NAMES, "zzz").size == 0 and find_samples([], "a").size == 0


def _emb() -> Embeddings:
    logits = np.zeros((4, 3), np.float32)
    logits[[0, 1, 2, 3], [0, 2, 2, 1]] = 1.0  # predictions 0, 2, 2, 1
    return Embeddings({}, logits, np.array([0, 1, 2, 1]), ["a,1", "b", "c", "d"], np.arange(4),
                      ["walk", "sit, then stand", "jump"], None, "pooled", "k")


def test_selection_table_and_csv_name_label_and_prediction():
    emb = _emb()
    table = selection_table(emb, [3, 1])
    assert list(table.columns) == list(COLUMNS)
    assert table.to_dict("list") == {"row": [3, 1], "name": ["d", "b"], "label": ["sit, then stand"] * 2,
                                     "prediction": ["sit, then stand", "jump"], "correct": [True, False]}
    back = pd.read_csv(io.BytesIO(selection_csv(emb, [0, 1])))  # commas in names and classes are quoted
    assert back.to_dict("list") == {"row": [0, 1], "name": ["a,1", "b"], "label": ["walk", "sit, then stand"],
                                    "prediction": ["walk", "jump"], "correct": [True, False]}
    empty = pd.read_csv(io.BytesIO(selection_csv(emb, [])))
    assert list(empty.columns) == list(COLUMNS) and len(empty) == 0
