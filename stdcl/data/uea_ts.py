"""Reader of the sktime / UEA ``.ts`` multivariate time-series format (e.g. UEA NATOPS).

A file is ``#`` comment lines, ``@key value`` header lines ending with ``@data``, then one
case per line: ``D`` dimensions separated by ``:``, each a comma-separated series, and the
class label as the last ``:`` field. Only what skeleton data needs is accepted: equal-length
cases, class labels declared in ``@classLabel true ...``, no timestamps. Missing values
(``?``) are refused unless ``missing="nan"``. Every problem is a one-line
:class:`~stdcl.errors.DataError` naming the file and the line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stdcl.errors import DataError

_BOOL = {"true": True, "false": False}


@dataclass
class TsData:
    """The cases of one ``.ts`` file: ``x`` float32 ``(N, D, T)``, labels as written, the header."""

    x: np.ndarray
    labels: list[str]
    class_labels: list[str]
    header: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def y(self) -> np.ndarray:
        """0-based label ids in the order of ``@classLabel``."""
        index = {c: i for i, c in enumerate(self.class_labels)}
        return np.asarray([index[lab] for lab in self.labels], dtype=np.int64)


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # header comments of some archive files; the data is ASCII


def read_ts(path: str | os.PathLike, missing: str = "error") -> TsData:
    """Read a classification ``.ts`` file (``missing``: ``"error"`` or ``"nan"`` for ``?`` values)."""
    if missing not in ("error", "nan"):
        raise ValueError(f"missing must be 'error' or 'nan', got {missing!r}")
    path = Path(path)
    try:
        text = _decode(path)
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    header: dict[str, str] = {}
    comments: list[str] = []
    lines = text.splitlines()
    start = None
    for no, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            comments.append(s[1:])
            continue
        if not s.startswith("@"):
            raise DataError(path, f"expected a '@' header line or '#' comment before @data, got {s[:40]!r}", no)
        key, _, value = s[1:].partition(" ")
        key = key.lower()
        if key == "data":
            start = no
            break
        if key in header:
            raise DataError(path, f"header @{key} given twice", no)
        header[key] = value.strip()
    if start is None:
        raise DataError(path, "no @data line (not a .ts file?)")
    dims, length, classes = _check_header(path, header)
    xs: list[np.ndarray] = []
    labels: list[str] = []
    for no in range(start + 1, len(lines) + 1):
        s = lines[no - 1].strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split(":")
        if len(fields) != dims + 1:
            raise DataError(path, f"expected {dims} dimensions and a class label, got {len(fields)} ':' fields", no)
        label = fields[-1].strip()
        if label not in classes:
            raise DataError(path, f"class label {label!r} is not one of @classLabel {' '.join(classes)}", no)
        case = np.empty((dims, length), dtype=np.float64)
        for d, series in enumerate(fields[:-1]):
            values = series.split(",")
            if len(values) != length:
                raise DataError(path, f"dimension {d + 1} has {len(values)} values, @seriesLength is {length}", no)
            for t, v in enumerate(values):
                case[d, t] = _number(path, no, d, t, v.strip(), missing)
        xs.append(case)
        labels.append(label)
    if not xs:
        raise DataError(path, "no cases after @data")
    return TsData(np.stack(xs).astype(np.float32), labels, classes, header, comments)


def _check_header(path: Path, header: dict[str, str]) -> tuple[int, int, list[str]]:
    def flag(key: str, default: bool) -> bool:
        if key not in header:
            return default
        v = header[key].lower()
        if v not in _BOOL:
            raise DataError(path, f"header @{key} must be true or false, got {header[key]!r}")
        return _BOOL[v]

    def positive(key: str) -> int:
        if key not in header:
            raise DataError(path, f"header @{key} is missing")
        try:
            n = int(header[key])
        except ValueError:
            n = 0
        if n < 1:
            raise DataError(path, f"header @{key} must be a positive integer, got {header[key]!r}")
        return n

    if flag("timestamps", False):
        raise DataError(path, "@timeStamps true is not supported (skeleton frames are evenly spaced)")
    if not flag("equallength", True):
        raise DataError(path, "@equalLength false is not supported: skeleton cases need one length")
    dims = 1 if flag("univariate", False) else positive("dimensions")
    length = positive("serieslength")
    parts = header.get("classlabel", "").split()
    if not parts or parts[0].lower() != "true" or len(parts) < 2:
        raise DataError(path, "header @classLabel must be 'true' followed by the class labels")
    classes = parts[1:]
    if len(set(classes)) != len(classes):
        raise DataError(path, "header @classLabel lists a label twice")
    return dims, length, classes


def _number(path: Path, no: int, d: int, t: int, v: str, missing: str) -> float:
    if v == "?":
        if missing == "nan":
            return math.nan
        raise DataError(path, f"missing value '?' in dimension {d + 1} at step {t + 1} (missing='nan' keeps it)", no)
    try:
        f = float(v)
    except ValueError:
        raise DataError(path, f"dimension {d + 1} step {t + 1}: {v[:20]!r} is not a number", no) from None
    if not math.isfinite(f):
        raise DataError(path, f"dimension {d + 1} step {t + 1}: {v[:20]!r} is not finite", no)
    return f


def comment_class_names(data: TsData) -> list[str] | None:
    """Class names from header comments of the form ``N: name`` (N = 1-based position in
    ``@classLabel``), e.g. NATOPS's ``#1: I have command``; None unless every class has one."""
    found: dict[int, str] = {}
    for c in data.comments:
        num, sep, name = c.strip().partition(":")
        if sep and num.strip().isdigit() and name.strip():
            found.setdefault(int(num) - 1, name.strip())
    names = [found.get(i) for i in range(len(data.class_labels))]
    return None if any(n is None for n in names) else names  # type: ignore[return-value]


def to_skeleton(data: TsData, path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """``(N, D, T)`` -> ``(N, C, T, V, 1)`` with the dimensions point-major (point 1 x, y, z,
    point 2 x, y, z, ...), as NATOPS orders them."""
    n, d, t = data.x.shape
    if channels < 1 or d % channels:
        raise DataError(path, f"{d} dimensions do not split into points of {channels} coordinates")
    return np.ascontiguousarray(data.x.reshape(n, d // channels, channels, t).transpose(0, 2, 3, 1)[..., None])


def convert_ts(train: str | os.PathLike, test: str | os.PathLike, out: str | os.PathLike, layout: object,
               class_names: list[str] | None = None, channels: int = 3, force: bool = False) -> Path:
    """Write a train/test pair of ``.ts`` files as one plain-numpy ``.npz`` (:mod:`stdcl.data.numpy_source`).

    ``layout``: a layout name, YAML file or mapping whose joints are the ``.ts`` points in file
    order; it is stored in the file (``layout`` member, JSON). Class names: ``class_names``, else the
    header comments' ``N: name`` lines, else the labels as written. Written to a temporary name
    and renamed; an existing ``out`` is refused unless ``force``.
    """
    import json

    from stdcl.data.layouts import get_layout
    from stdcl.io import atomic_path

    out = Path(out)
    if out.suffix != ".npz":
        raise DataError(out, "the output must be a .npz file")
    if out.exists() and not force:
        raise DataError(out, "exists; pass --force to overwrite")
    lay = get_layout(layout)  # type: ignore[arg-type]
    parts = {"train": read_ts(train), "test": read_ts(test)}
    tr, te = parts["train"], parts["test"]
    if te.class_labels != tr.class_labels:
        raise DataError(test, f"@classLabel {' '.join(te.class_labels)} differs from {train}'s "
                              f"{' '.join(tr.class_labels)}")
    xs = {k: to_skeleton(v, train if k == "train" else test, channels) for k, v in parts.items()}
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(test, f"cases of shape {xs['test'].shape[1:]} differ from {train}'s {xs['train'].shape[1:]}")
    v = xs["train"].shape[3]
    if v != lay.num_joints:
        raise DataError(train, f"{v} points per frame but layout {lay.name!r} has {lay.num_joints} joints")
    names = class_names or comment_class_names(tr) or list(tr.class_labels)
    if len(names) != len(tr.class_labels):
        raise DataError(train, f"{len(names)} class names for {len(tr.class_labels)} classes")
    n_tr, n_te = len(tr.labels), len(te.labels)
    arrays = {
        "x": np.concatenate([xs["train"], xs["test"]]).astype(np.float32),
        "y": np.concatenate([tr.y, te.y]),
        "names": np.asarray([f"{Path(train).stem}_{i:04d}" for i in range(n_tr)]
                            + [f"{Path(test).stem}_{i:04d}" for i in range(n_te)]),
        "class_names": np.asarray(names),
        "layout": np.asarray(json.dumps(lay.to_mapping())),
        "split_train": np.arange(n_tr, dtype=np.int64),
        "split_test": np.arange(n_tr, n_tr + n_te, dtype=np.int64),
    }
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return out


__all__ = ["TsData", "comment_class_names", "convert_ts", "read_ts", "to_skeleton"]
