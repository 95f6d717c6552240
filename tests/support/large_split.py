"""A large analysed split for the large-N app tests, cheap to make: the synthetic set written as plain
numpy with nearly every subject held out (so its test split holds ~97 % of the samples), and stand-in
embeddings with class structure made at once instead of running the encoder over thousands of samples.

``standin_embeddings`` has :func:`analysis.embeddings.compute_embeddings`'s signature and key: patched in
for it, :func:`~analysis.embeddings.extract_embeddings` stores its result in the on-disk cache under the
key the app looks up, so a separate app server reads it like embeddings it computed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analysis.datasets import AnalysisData
from analysis.embeddings import Embeddings, embeddings_key
from analysis.models import LoadedModel
from stdcl.data.synthetic import write_synthetic

#: Held-out subjects: all but subject 1 (the synthetic set draws 40).
TEST_SUBJECTS = list(range(2, 41))
#: Dimensions of the stand-in spaces.
DIMS = {"global": 64, "spatial": 32, "temporal": 32, "spatial_pooled": 48, "temporal_pooled": 48}


def write_split(folder: Path, n_test: int, seed: int = 0) -> Path:
    """``folder/synthetic.npz`` whose test split holds at least ``n_test`` samples (short clips: fast to write)."""
    total = math.ceil(n_test / 0.95) + 20
    return write_synthetic(folder, total, seed, test_subjects=TEST_SUBJECTS, min_frames=20, max_frames=40)


def standin_embeddings(model: LoadedModel, data: AnalysisData, indices: np.ndarray | None = None,
                       batch_size: int | None = None, device=None, progress=None) -> Embeddings:
    """Embeddings of ``data`` (or its items ``indices``) with one cluster per class in every space and ~10 %
    of the predictions wrong; deterministic, and keyed as the model's own embeddings would be."""
    ids = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = data.labels[ids]
    k, n = len(data.class_names), len(ids)
    rng = np.random.default_rng(7)
    spaces = {}
    for name, dim in DIMS.items():
        centres = rng.normal(size=(k, dim)) * 2.5
        spaces[name] = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), np.where(rng.random(n) < 0.9, labels, (labels + 1) % k)] += 6.0
    if progress is not None:
        progress(n, n)
    return Embeddings(spaces, logits, labels, [data.names[i] for i in ids], ids, list(data.class_names),
                      data.class_meta, "head", embeddings_key(model, data, indices),
                      {"model": model.label, "data": data.describe()})
