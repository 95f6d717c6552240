"""Checks of the fields readers take from data files.

Each check returns the value it accepted (converted where said) or raises a one-line
:class:`~stdcl.errors.DataError` naming the file and the key, e.g.
``data/x.npz: key 'lengths': 5 lengths for 7 samples``. Light: no torch import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from stdcl.errors import DataError
from stdcl.io import parse_json

PathLike = str | os.PathLike | None


def key_of(key: str | None) -> str | None:
    """The ``where`` of an error about array/dict key ``key`` (None stays None)."""
    return None if key is None else f"key {key!r}"


def type_name(value: Any) -> str:
    """A short description of a value's type for messages (``float64 array of shape (3,)``, ``str``)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    return type(value).__name__


def shown(value: Any, limit: int = 60) -> str:
    """A value from a data file as a short, one-line text for messages (repr, cut to ``limit``)."""
    if isinstance(value, np.ndarray):
        return type_name(value)
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown_list(values: Any) -> str:
    """``'a', 'b'``: names from a data file for messages (``none`` when empty)."""
    return ", ".join(map(shown, values)) or "none"


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, if it is an existing, non-empty file (``what``: e.g. ``"a .npz archive"``)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(p, f"is a folder, not {what}")
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DataError(p, "no such file") from None
    except OSError as e:
        raise DataError(p, f"cannot read it ({e.strerror or e})") from None
    if size == 0:
        raise DataError(p, f"is empty (0 bytes), not {what}")
    return p


def numeric_array(a: Any, path: PathLike, key: str | None, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``a`` if it is an array of integers or floats (not bool, str, object, complex or records) with
    ``ndim`` dimensions (one of them, for a tuple)."""
    if not isinstance(a, np.ndarray):
        raise DataError(path, f"must be an array, got {type_name(a)}", where=key_of(key))
    if a.dtype.kind not in "iuf":
        raise DataError(path, f"must hold numbers, got dtype {a.dtype}", where=key_of(key))
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if ndims is not None and a.ndim not in ndims:
        raise DataError(path, f"must have {' or '.join(map(str, ndims))} dimensions, got shape {tuple(a.shape)}",
                        where=key_of(key))
    return a


def int_array(a: Any, path: PathLike, key: str | None, length: int | None = None,
              what: str = "values") -> np.ndarray:
    """``a`` as int64, if it is a 1-D array of an integer dtype (floats are refused, not truncated)
    holding ``length`` entries (``what`` names them in the message)."""
    a = numeric_array(a, path, key, ndim=1)
    if a.dtype.kind == "f":
        raise DataError(path, f"{what} must be integers, got dtype {a.dtype}", where=key_of(key))
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise DataError(path, f"{what} must fit in int64, got {int(a.max())}", where=key_of(key))
    if length is not None and len(a) != length:
        raise DataError(path, f"{len(a)} {what} for {length} samples", where=key_of(key))
    return a.astype(np.int64)


def index_array(a: Any, n: int, path: PathLike, key: str) -> np.ndarray:
    """Sample indices into ``n`` samples: 1-D integers in ``0..n-1``, each at most once."""
    idx = int_array(a, path, key, what="indices")
    bad = np.flatnonzero((idx < 0) | (idx >= n))
    if bad.size:
        raise DataError(path, f"index {int(idx[bad[0]])} is outside 0..{n - 1} ({bad.size} such indices)",
                        where=key_of(key))
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise DataError(path, f"index {int(uniq[counts > 1][0])} appears {int(counts.max())} times "
                        f"({int((counts > 1).sum())} repeated indices)", where=key_of(key))
    return idx


def lengths_array(a: Any, n: int, frames: int, path: PathLike, key: str = "lengths") -> np.ndarray:
    """Valid frames per sample: ``n`` integers in ``0..frames``."""
    lengths = int_array(a, path, key, n, what="lengths")
    bad = np.flatnonzero((lengths < 0) | (lengths > frames))
    if bad.size:
        raise DataError(path, f"length {int(lengths[bad[0]])} of sample {int(bad[0])} is outside 0..{frames} "
                        f"(T = {frames}; {bad.size} such lengths)", where=key_of(key))
    return lengths


def one_hot_to_labels(y: np.ndarray, path: PathLike, key: str | None) -> np.ndarray:
    """0-based labels from a one-hot (N, K) array, checking each row has exactly one 1."""
    y = numeric_array(y, path, key, ndim=2)
    if y.shape[1] == 0:
        raise DataError(path, f"one-hot labels have no classes (shape {tuple(y.shape)})", where=key_of(key))
    hot = y > 0
    counts = hot.sum(1)
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        raise DataError(path, f"row {int(bad[0])} is not one-hot ({int(counts[bad[0]])} non-zero entries)",
                        where=key_of(key))
    return hot.argmax(1).astype(np.int64)


def label_array(y: Any, path: PathLike, key: str | None) -> np.ndarray:
    """0-based int64 labels from ``(N,)`` integers (floats only when integral) or ``(N, K)`` one-hot rows."""
    y = numeric_array(y, path, key, ndim=(1, 2))
    if y.ndim == 2:
        return one_hot_to_labels(y, path, key)
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore", over="ignore"):
            bad = np.flatnonzero(~np.isfinite(y) | (np.mod(y, 1) != 0) | (np.abs(y.astype(np.float64)) > 2**53))
        if bad.size:
            raise DataError(path, f"label {float(y[bad[0]]):g} of sample {int(bad[0])} is not an integer "
                            f"({bad.size} such labels)", where=key_of(key))
    return int_array(y.astype(np.int64) if y.dtype.kind == "f" else y, path, key, what="labels")


#: more classes than this, implied by the largest label, means the labels are garbage
MAX_CLASSES = 100_000


def num_classes_of(labels: np.ndarray, path: PathLike, key: str | None) -> int:
    """The class count implied by 0-based labels (largest + 1; 0 without labels), at most ``MAX_CLASSES``."""
    k = int(labels.max()) + 1 if labels.size else 0
    if k > MAX_CLASSES:
        i = int(labels.argmax())
        raise DataError(path, f"label {k - 1} of sample {i} implies {k} classes (at most {MAX_CLASSES})",
                        where=key_of(key))
    return max(k, 0)


def text_value(a: Any, path: PathLike, key: str) -> str:
    """The string held by a 0-d (or one-element) string array, e.g. ``np.array("ntu25")``."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "US" or a.size != 1:
        raise DataError(path, f"must be one string, got {type_name(a)}", where=key_of(key))
    value = a.reshape(()).item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(path, "is not UTF-8 text", where=key_of(key)) from None
    return value


def str_list(a: Any, path: PathLike, key: str, length: int | None = None, what: str = "names") -> list[str]:
    """A 1-D string array as a list of str, with ``length`` entries when given."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "US" or a.ndim != 1:
        raise DataError(path, f"{what} must be a 1-D array of strings, got {type_name(a)}", where=key_of(key))
    if length is not None and len(a) != length:
        raise DataError(path, f"{len(a)} {what} for {length} samples", where=key_of(key))
    if a.dtype.kind == "S":
        try:
            return [s.decode("utf-8") for s in a.tolist()]
        except UnicodeDecodeError:
            raise DataError(path, f"{what} are not UTF-8 text", where=key_of(key)) from None
    return [str(s) for s in a.tolist()]


def json_value(text: str, path: PathLike, key: str, what: str = "JSON") -> Any:
    """``text`` (the content of member ``key``) parsed with :func:`stdcl.io.parse_json`."""
    try:
        return parse_json(text, path, what)
    except DataError as e:
        raise DataError(path, e.problem, where=key_of(key)) from None


def float32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32; values beyond its range become inf (for :func:`require_finite` to refuse)."""
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float32)


def require_finite(a: np.ndarray, path: PathLike, what: str, where: str | None = None) -> np.ndarray:
    """``a`` if all its values are finite; else ``"<what> has NaN or infinite values"``."""
    if not np.isfinite(a).all():
        raise DataError(path, f"{what} has NaN or infinite values ({int((~np.isfinite(a)).sum())} such values)",
                        where=where)
    return a
