"""Plain numpy skeleton data: the project's own format for users' skeletons.

One ``.npz`` with:

- ``x``: float32 ``(N, C, T, V, M)``, or ``(N, T, V, C)`` for one person;
- ``y``: int ``(N,)`` 0-based labels (integral floats and one-hot ``(N, K)`` rows accepted);
- optional ``names`` (N,) str, ``class_names`` (K,) str, ``layout`` (a registered layout
  name, or a JSON mapping of a custom layout, see :mod:`stdcl.data.layouts`),
  ``lengths`` (N,) int valid frames in ``0..T``, ``subjects`` (N,) int, ``split_<name>``
  integer index arrays (e.g. ``split_train``, ``split_test``; each index once),
  ``class_meta`` (a JSON list, one object per class).

Every member is checked when the file is opened (:mod:`stdcl.data.validate`); a problem is a
one-line :class:`DataError` naming the file and the key. Or a bare ``x.npy`` plus ``labels=``
(a ``.npy`` or a text file of ints). Save with ``np.savez`` (uncompressed) so ``x`` is
memory-mapped; a compressed ``x`` is converted once into the user cache folder
(:func:`stdcl.data.npz_members.cache_folder`). Split ``all`` (the default) is every sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stdcl.data.base import SampleSource, names_to_subjects
from stdcl.data.classes import numbered_classes
from stdcl.data.layouts import Layout, available_layouts, get_layout
from stdcl.data.npz_members import member_names, open_member, open_npy, read_member
from stdcl.data.validate import (float32, index_array, int_array, json_value, key_of, label_array, lengths_array,
                                 num_classes_of, numeric_array, require_file, require_finite, shown, shown_list,
                                 str_list, text_value)
from stdcl.errors import ConfigError, DataError, first_line


class NumpySource(SampleSource):
    """A split of a plain-numpy dataset; every member is checked when the file is opened."""

    format = "numpy"

    def __init__(self, path: str | Path, split: str = "all", labels: str | Path | np.ndarray | None = None,
                 layout: str | Layout | None = None, class_names: list[str] | None = None,
                 names: list[str] | None = None):
        path = Path(path)
        self.path, self.split = path, split
        if path.suffix == ".npy":
            x, arrays = open_npy(path), {}
            if labels is None:
                raise ConfigError(f"{path}: a bare .npy needs labels= (a .npy or text file of labels)")
        elif path.suffix == ".npz":
            keys = member_names(path)
            if "x" not in keys or ("y" not in keys and labels is None):
                raise DataError(path, f"a plain-numpy file needs arrays 'x' and 'y' (found: {shown_list(keys)})",
                                where="key 'x'" if "x" not in keys else "key 'y'")
            x = open_member(path, "x")
            arrays = {k: read_member(path, k) for k in keys if k != "x"}
        else:
            raise DataError(path, "expected a .npz or .npy file")
        numeric_array(x, path, "x")
        if x.ndim not in (4, 5) or 0 in x.shape[1:]:
            raise DataError(path, f"x must be (N, C, T, V, M) or (N, T, V, C) with no empty dimension, "
                            f"got shape {tuple(x.shape)}", where="key 'x'")
        self._x = x
        self._ntvc = x.ndim == 4
        n = x.shape[0]
        y = _labels(path, labels, arrays)
        if y.shape != (n,):
            raise DataError(path, f"labels have shape {tuple(y.shape)}, expected ({n},)", where="key 'y'")
        if split == "all":
            idx = np.arange(n)
        elif f"split_{split}" in arrays:
            idx = index_array(arrays[f"split_{split}"], n, path, f"split_{split}")
        else:
            have = [k[6:] for k in arrays if k.startswith("split_")]
            raise DataError(path, f"no split {split!r} (has: {shown_list(['all'] + have)})")
        self._idx = idx
        v = x.shape[2] if self._ntvc else x.shape[3]
        self.layout = _layout(path, layout, arrays, v)
        if self.layout.num_joints != v:
            raise DataError(path, f"layout {self.layout.name!r} has {self.layout.num_joints} joints, x has V={v}",
                            where="key 'x'")
        self.labels = y[idx]
        if class_names is None:
            class_names = str_list(arrays["class_names"], path, "class_names", what="class names") \
                if "class_names" in arrays else numbered_classes(num_classes_of(y, path, "y"))
        self.class_names = list(class_names)
        all_names = names if names is not None else \
            str_list(arrays["names"], path, "names", n) if "names" in arrays else [f"sample_{i}" for i in range(n)]
        if len(all_names) != n:
            raise DataError(path, f"{len(all_names)} names for {n} samples", where="key 'names'")
        self.names = [all_names[i] for i in idx]
        frames = x.shape[1] if self._ntvc else x.shape[2]
        self._lengths = lengths_array(arrays["lengths"], n, frames, path) if "lengths" in arrays else None
        self.subjects = int_array(arrays["subjects"], path, "subjects", n, what="subject ids")[idx] \
            if "subjects" in arrays else names_to_subjects(self.names)
        self.class_meta = _class_meta(path, arrays["class_meta"], len(self.class_names)) \
            if "class_meta" in arrays else None
        self.check_labels(where="key 'y'")

    def read(self, i: int) -> np.ndarray:
        j = int(self._idx[i])
        a = float32(self._x[j])
        a = a.transpose(2, 0, 1)[..., None] if self._ntvc else a
        if self._lengths is not None:
            a = a[:, : max(1, int(self._lengths[j]))]
        require_finite(a, self.path, f"sample {shown(self.names[i])} (row {j})", where="key 'x'")
        return np.ascontiguousarray(a)


def _labels(path: Path, labels: str | Path | np.ndarray | None, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The labels of every sample: member ``y``, an array, or a ``.npy`` / text file of labels."""
    if labels is None:
        return label_array(arrays["y"], path, "y")
    if isinstance(labels, np.ndarray):
        return label_array(labels, path, "y")
    lp = Path(labels)
    if lp.suffix == ".npy":
        return label_array(np.asarray(open_npy(lp)), lp, None)
    require_file(lp, "a labels file")
    try:
        y = np.loadtxt(lp, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as e:
        raise DataError(lp, f"cannot read labels ({first_line(e)})") from None
    return label_array(y, lp, None)


def _layout(path: Path, layout: str | Layout | None, arrays: dict[str, np.ndarray], v: int) -> Layout:
    """The ``layout=`` argument, else member ``layout`` (a registered name or a JSON mapping), else the
    shipped layout with ``v`` joints."""
    if layout is None and "layout" in arrays:
        spec = text_value(arrays["layout"], path, "layout")
        if spec.lstrip().startswith("{"):
            mapping = json_value(spec, path, "layout", "layout JSON")
            if not isinstance(mapping, dict):
                raise DataError(path, "layout JSON must be an object", where="key 'layout'")
            try:
                return get_layout(mapping)
            except ConfigError as e:
                raise DataError(path, str(e), where="key 'layout'") from None
        if spec not in available_layouts():
            raise DataError(path, f"{shown(spec)} is neither a layout name ({', '.join(available_layouts())}) "
                            "nor a JSON layout mapping", where="key 'layout'")
        layout = spec
    if layout is None:
        layout = {25: "ntu25", 20: "ucla20", 17: "coco17"}.get(v)
        if layout is None:
            raise ConfigError(f"{path}: V={v} joints matches no shipped layout; pass layout=")
    return get_layout(layout)


def _class_meta(path: Path, member: np.ndarray, num_classes: int) -> list[dict[str, Any]]:
    """Member ``class_meta``: a JSON list with one object per class."""
    meta = json_value(text_value(member, path, "class_meta"), path, "class_meta", "class_meta JSON")
    if not isinstance(meta, list) or not all(isinstance(m, dict) for m in meta):
        raise DataError(path, "class_meta must be a JSON list of objects, one per class", where=key_of("class_meta"))
    if len(meta) != num_classes:
        raise DataError(path, f"{len(meta)} class_meta entries for {num_classes} classes", where=key_of("class_meta"))
    return meta
