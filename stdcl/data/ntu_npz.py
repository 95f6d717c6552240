"""NTU RGB+D prepared data in CTR-GCN's ``.npz`` format, read lazily.

Keys ``x_train``, ``y_train``, ``x_test``, ``y_test``; x is ``(N, 300, 150)`` float32 (two
actors x 25 joints x xyz per frame), y one-hot. The x member is memory-mapped
(:mod:`stdcl.data.npz_members`), so opening a 7 GB split costs nothing and reading a
sample touches only its 180 KB. Names come from the ``<stem>.names.json`` sidecar that
``stdcl data prepare`` writes; without it samples are named ``train_0`` ... as CTR-GCN does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource, names_to_subjects, one_hot_to_labels
from stdcl.data.classes import ntu_classes
from stdcl.data.layouts import NTU25
from stdcl.data.npz_members import member_names, open_member
from stdcl.errors import DataError

SPLITS = ("train", "test")


class NtuNpzSource(SampleSource):
    """One split of a CTR-GCN-format NTU ``.npz``."""

    format = "ntu-npz"

    def __init__(self, path: str | Path, split: str = "train", cache_dir: str | Path | None = None):
        path = Path(path)
        if split not in SPLITS:
            raise DataError(path, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        keys = member_names(path)
        for k in (f"x_{split}", f"y_{split}"):
            if k not in keys:
                raise DataError(path, f"missing array {k!r}; a CTR-GCN NTU file has x_train, y_train, "
                                f"x_test, y_test (found: {', '.join(keys) or 'none'})", where=f"key {k!r}")
        self.path, self.split = path, split
        x = open_member(path, f"x_{split}", cache_dir)
        if x.ndim != 3 or x.shape[2] % 3 != 0 or x.shape[2] // 3 not in (25, 50):
            raise DataError(path, f"expected shape (N, T, 150) or (N, T, 75), got {tuple(x.shape)}",
                            where=f"key 'x_{split}'")
        y = np.asarray(open_member(path, f"y_{split}"))
        if y.ndim == 1:
            labels = y.astype(np.int64)
            num_classes = int(labels.max()) + 1 if labels.size else 0
        else:
            labels = one_hot_to_labels(y, path, f"y_{split}")
            num_classes = y.shape[1]
        if len(labels) != len(x):
            raise DataError(path, f"x_{split} has {len(x)} samples but y_{split} has {len(labels)}",
                            where=f"key 'y_{split}'")
        self._x = x
        self.num_person = x.shape[2] // 75
        self.labels = labels
        self.class_names = ntu_classes(120)[:num_classes] if num_classes <= 120 else \
            [f"A{k + 1:03d}" for k in range(num_classes)]
        self.layout = NTU25
        self.names = self._load_names(len(x))
        self.subjects = names_to_subjects(self.names)
        self.check_labels(where=f"key 'y_{split}'")

    def _load_names(self, n: int) -> list[str]:
        sidecar = self.path.with_name(self.path.stem + ".names.json")
        if sidecar.exists():
            try:
                names = json.loads(sidecar.read_text())[self.split]
            except (ValueError, KeyError) as e:
                raise DataError(sidecar, f"not a names sidecar ({e})") from None
            if len(names) != n:
                raise DataError(sidecar, f"{len(names)} {self.split} names for {n} samples in {self.path.name}")
            return list(names)
        return [f"{self.split}_{i}" for i in range(n)]

    def read(self, i: int) -> np.ndarray:
        """(3, T, 25, M) float32, M = 2 for the usual 150-wide files."""
        a = np.asarray(self._x[i], dtype=np.float32)  # (T, M*75)
        t = a.shape[0]
        return np.ascontiguousarray(a.reshape(t, self.num_person, 25, 3).transpose(3, 0, 2, 1))
