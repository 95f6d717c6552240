"""Plain numpy skeleton data: the project's own format for users' skeletons.

One ``.npz`` with:

- ``x``: float32 ``(N, C, T, V, M)``, or ``(N, T, V, C)`` for one person;
- ``y``: int ``(N,)`` 0-based labels;
- optional ``names`` (N,) str, ``class_names`` (K,) str, ``layout`` (a registered layout
  name, or a JSON mapping of a custom layout, see :mod:`stdcl.data.layouts`),
  ``lengths`` (N,) valid frames, ``subjects`` (N,) int, ``split_<name>`` index arrays
  (e.g. ``split_train``, ``split_test``), ``class_meta`` (a JSON list, one dict per class).

Or a bare ``x.npy`` plus ``labels=`` (a ``.npy`` or a text file of ints). Save with
``np.savez`` (uncompressed) so ``x`` is memory-mapped; compressed files are converted once.
Split ``all`` (the default) is every sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource, names_to_subjects
from stdcl.data.classes import numbered_classes
from stdcl.data.layouts import Layout, get_layout
from stdcl.data.npz_members import member_names, open_member
from stdcl.errors import ConfigError, DataError


def _text(a: np.ndarray) -> str:
    return str(np.asarray(a).reshape(()).item()) if np.asarray(a).ndim == 0 else str(np.asarray(a)[0])


class NumpySource(SampleSource):
    """A split of a plain-numpy dataset."""

    format = "numpy"

    def __init__(self, path: str | Path, split: str = "all", labels: str | Path | np.ndarray | None = None,
                 layout: str | Layout | None = None, class_names: list[str] | None = None,
                 names: list[str] | None = None):
        path = Path(path)
        self.path, self.split = path, split
        if path.suffix == ".npy":
            x = np.load(path, mmap_mode="r")
            if x.dtype.hasobject:
                raise DataError(path, "holds Python objects; refusing to unpickle")
            arrays: dict[str, np.ndarray] = {}
            if labels is None:
                raise ConfigError(f"{path}: a bare .npy needs labels= (a .npy or text file of labels)")
        elif path.suffix == ".npz":
            keys = member_names(path)
            if "x" not in keys or ("y" not in keys and labels is None):
                raise DataError(path, f"a plain-numpy file needs arrays 'x' and 'y' (found: {', '.join(keys)})",
                                where="key 'x'" if "x" not in keys else "key 'y'")
            x = open_member(path, "x")
            arrays = {k: np.asarray(open_member(path, k)) for k in keys if k != "x"}
        else:
            raise DataError(path, "expected a .npz or .npy file")
        if x.ndim not in (4, 5):
            raise DataError(path, f"x must be (N, C, T, V, M) or (N, T, V, C), got shape {tuple(x.shape)}",
                            where="key 'x'")
        self._x = x
        self._ntvc = x.ndim == 4
        n = x.shape[0]
        y = self._labels(path, labels, arrays)
        if y.shape != (n,):
            raise DataError(path, f"labels have shape {tuple(y.shape)}, expected ({n},)", where="key 'y'")
        if split == "all":
            idx = np.arange(n)
        elif f"split_{split}" in arrays:
            idx = arrays[f"split_{split}"].astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DataError(path, f"split {split!r} indexes outside 0..{n - 1}", where=f"key 'split_{split}'")
        else:
            have = [k[6:] for k in arrays if k.startswith("split_")]
            raise DataError(path, f"no split {split!r} (has: {', '.join(['all'] + have)})")
        self._idx = idx
        v = x.shape[2] if self._ntvc else x.shape[3]
        if layout is None and "layout" in arrays:
            spec = _text(arrays["layout"])
            layout = json.loads(spec) if spec.lstrip().startswith("{") else spec
        if layout is None:
            layout = {25: "ntu25", 20: "ucla20", 17: "coco17"}.get(v)
            if layout is None:
                raise ConfigError(f"{path}: V={v} joints matches no shipped layout; pass layout=")
        self.layout = get_layout(layout)
        if self.layout.num_joints != v:
            raise DataError(path, f"layout {self.layout.name!r} has {self.layout.num_joints} joints, x has V={v}",
                            where="key 'x'")
        self.labels = y[idx].astype(np.int64)
        if class_names is None:
            class_names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays \
                else numbered_classes(int(y.max()) + 1 if y.size else 0)
        self.class_names = list(class_names)
        all_names = names if names is not None else \
            [str(s) for s in arrays["names"]] if "names" in arrays else [f"sample_{i}" for i in range(n)]
        if len(all_names) != n:
            raise DataError(path, f"{len(all_names)} names for {n} samples", where="key 'names'")
        self.names = [all_names[i] for i in idx]
        self._lengths = arrays["lengths"].astype(np.int64) if "lengths" in arrays else None
        self.subjects = arrays["subjects"].astype(np.int64)[idx] if "subjects" in arrays \
            else names_to_subjects(self.names)
        self.class_meta = json.loads(_text(arrays["class_meta"])) if "class_meta" in arrays else None
        self.check_labels(where="key 'y'")

    @staticmethod
    def _labels(path: Path, labels, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if labels is None:
            y = arrays["y"]
        elif isinstance(labels, np.ndarray):
            y = labels
        else:
            lp = Path(labels)
            try:
                y = np.load(lp) if lp.suffix == ".npy" else np.loadtxt(lp, dtype=np.int64, ndmin=1)
            except (OSError, ValueError) as e:
                raise DataError(lp, f"cannot read labels ({e})") from None
        if y.ndim == 2:  # one-hot
            y = y.argmax(1)
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise DataError(path, "labels must be integers", where="key 'y'")
        return np.asarray(y).astype(np.int64)

    def read(self, i: int) -> np.ndarray:
        j = int(self._idx[i])
        a = np.asarray(self._x[j], dtype=np.float32)
        a = a.transpose(2, 0, 1)[..., None] if self._ntvc else a
        if self._lengths is not None:
            a = a[:, : max(1, int(self._lengths[j]))]
        if not np.isfinite(a).all():
            raise DataError(self.path, f"sample {self.names[i]!r} (row {j}) has NaN or infinite values",
                            where="key 'x'")
        return np.ascontiguousarray(a)
