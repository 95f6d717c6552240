"""NTU RGB+D prepared data in CTR-GCN's ``.npz`` format, read lazily.

Keys ``x_train``, ``y_train``, ``x_test``, ``y_test``; x is ``(N, 300, 150)`` float32 (two
actors x 25 joints x xyz per frame), y one-hot. The x member is memory-mapped
(:mod:`stdcl.data.npz_members`), so opening a 7 GB split costs nothing and reading a
sample touches only its 180 KB. Names come from the ``<stem>.names.json`` sidecar that
``stdcl data prepare`` writes; without it samples are named ``train_0`` ... as CTR-GCN does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource, names_to_subjects
from stdcl.data.classes import ntu_classes
from stdcl.data.layouts import NTU25
from stdcl.data.npz_members import member_names, open_member, read_member
from stdcl.data.validate import float32, label_array, num_classes_of, numeric_array, require_finite, shown, shown_list
from stdcl.errors import DataError
from stdcl.io import read_json

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
                                f"x_test, y_test (found: {shown_list(keys)})", where=f"key {k!r}")
        self.path, self.split = path, split
        x = numeric_array(open_member(path, f"x_{split}", cache_dir), path, f"x_{split}")
        if x.ndim != 3 or x.shape[1] == 0 or x.shape[2] not in (75, 150):
            raise DataError(path, f"expected shape (N, T, 150) or (N, T, 75) with T > 0, got {tuple(x.shape)}",
                            where=f"key 'x_{split}'")
        y = read_member(path, f"y_{split}")
        labels = label_array(y, path, f"y_{split}")
        num_classes = y.shape[1] if y.ndim == 2 else num_classes_of(labels, path, f"y_{split}")
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
        if not sidecar.exists():
            return [f"{self.split}_{i}" for i in range(n)]
        data = read_json(sidecar, "names sidecar")
        names = data.get(self.split) if isinstance(data, dict) else None
        if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
            raise DataError(sidecar, f"a names sidecar maps 'train' and 'test' to lists of sample names; "
                            f"no list of names for {self.split!r}")
        if len(names) != n:
            raise DataError(sidecar, f"{len(names)} {self.split} names for {n} samples in {self.path.name}")
        return names

    def read(self, i: int) -> np.ndarray:
        """(3, T, 25, M) float32, M = 2 for the usual 150-wide files."""
        a = float32(self._x[i])  # (T, M*75)
        require_finite(a, self.path, f"sample {shown(self.names[i])} (row {i})", where=f"key 'x_{self.split}'")
        t = a.shape[0]
        return np.ascontiguousarray(a.reshape(t, self.num_person, 25, 3).transpose(3, 0, 2, 1))
