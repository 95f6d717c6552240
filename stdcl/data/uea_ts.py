"""Reader of the sktime / UEA ``.ts`` multivariate time-series format (e.g. UEA NATOPS).

A file is ``#`` comment lines, ``@key value`` header lines ending with ``@data``, then one
case per line: ``D`` dimensions separated by ``:``, each a comma-separated series, and the
class label as the last ``:`` field. Only what skeleton data needs is accepted: equal-length
cases, class labels declared in ``@classLabel true ...``, no timestamps. Missing values
(``?``) are refused unless ``missing="nan"``. Every problem is a one-line
:class:`~stdcl.errors.DataError` naming the file and the line.

Two ways to train on a ``.ts`` pair: :class:`UeaTsSource` reads a ``<problem>_TRAIN.ts`` /
``<problem>_TEST.ts`` folder in place (the registered ``natops`` dataset, config ``natops``), and
:func:`convert_ts` writes the pair as one plain-numpy ``.npz`` (``stdcl data convert-ts``). Both
give the same ``(C, T, V, 1)`` arrays, labels and class names.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource
from stdcl.data.validate import require_file
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
    require_file(path, "a .ts file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # header comments of some archive files; the data is ASCII


def read_ts(path: str | os.PathLike, missing: str = "error") -> TsData:
    """Read a classification ``.ts`` file (``missing``: ``"error"`` or ``"nan"`` for ``?`` values)."""
    if missing not in ("error", "nan"):
        raise ValueError(f"missing must be 'error' or 'nan', got {missing!r}")
    path = Path(path)
    text = _decode(path)
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
        series = [f.split(",") for f in fields[:-1]]
        for d, values in enumerate(series):  # before allocating: @seriesLength may be absurd
            if len(values) != length:
                raise DataError(path, f"dimension {d + 1} has {len(values)} values, @seriesLength is {length}", no)
        xs.append(np.array([[_number(path, no, d, t, v.strip(), missing) for t, v in enumerate(values)]
                            for d, values in enumerate(series)], dtype=np.float64))
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



#: UEA NATOPS class names in ``@classLabel`` order (1.0 .. 6.0), as its header comments list them.
NATOPS_CLASSES = ["I have command", "All clear", "Not clear", "Spread wings", "Fold wings", "Lock wings"]
TS_SPLITS = {"train": ("TRAIN",), "test": ("TEST",), "all": ("TRAIN", "TEST")}


def find_ts_pair(path: str | os.PathLike, problem: str | None = None) -> tuple[str, Path, Path]:
    """``(problem, train file, test file)`` of a UEA folder holding ``<problem>_TRAIN.ts`` and
    ``<problem>_TEST.ts`` (``path`` may also be one of the two files)."""
    p = Path(path)
    if p.is_file():
        stem = p.name
        for tag in ("_TRAIN.ts", "_TEST.ts"):
            if stem.endswith(tag):
                problem, p = stem[: -len(tag)], p.parent
                break
        else:
            raise DataError(p, "expected a <problem>_TRAIN.ts / <problem>_TEST.ts file of the UEA archive")
    if not p.is_dir():
        raise DataError(p, "no such folder (expected one holding <problem>_TRAIN.ts and <problem>_TEST.ts)")
    if problem is None:
        found = sorted(f.name[: -len("_TRAIN.ts")] for f in p.glob("*_TRAIN.ts"))
        if len(found) != 1:
            raise DataError(p, f"expected exactly one <problem>_TRAIN.ts in the folder, found {len(found)}"
                               + (f" ({', '.join(found)}); pass problem=" if found else ""))
        problem = found[0]
    files = (p / f"{problem}_TRAIN.ts", p / f"{problem}_TEST.ts")
    for f in files:
        if not f.is_file():
            raise DataError(f, "not found (a UEA problem needs both its _TRAIN.ts and _TEST.ts files)")
    return problem, files[0], files[1]


class UeaTsSource(SampleSource):
    """One split of a UEA ``.ts`` train/test pair read as skeletons (the ``natops`` dataset).

    The ``D`` dimensions of a case are read point-major (x, y, z of point 1, then point 2, ...;
    :func:`to_skeleton`) into float32 ``(C, T, V, 1)`` with ``V = D / channels``; ``layout``'s
    joints are those points in file order (NATOPS: ``natops8``). Both files are parsed once,
    strictly (:func:`read_ts`, missing values refused) and kept in memory (NATOPS: 2 x 0.9 MB).

    Args:
        path: the folder holding ``<problem>_TRAIN.ts`` and ``<problem>_TEST.ts``, or one of them.
        split: ``train``, ``test`` or ``all`` (train cases, then test cases).
        problem: the file prefix (default: the folder's only ``*_TRAIN.ts``).
        layout: a layout name, YAML file or mapping with ``D / channels`` joints.
        channels: coordinates per point.
        class_names: in ``@classLabel`` order; default: the header comments' ``N: name`` lines,
            else :data:`NATOPS_CLASSES` for NATOPS, else the labels as written.

    Labels are 0-based positions in ``@classLabel`` (NATOPS ``1.0`` -> 0); both files must declare
    the same ``@classLabel`` list and case shape. Names are ``<file stem>_<row:04d>`` (as
    :func:`convert_ts` names them); there are no subject ids.
    """

    format = "uea-ts"

    def __init__(self, path: str | os.PathLike, split: str = "train", problem: str | None = None,
                 layout: object = "natops8", channels: int = 3, class_names: list[str] | None = None):
        from stdcl.data.layouts import get_layout
        from stdcl.errors import ConfigError

        if split not in TS_SPLITS:
            raise ConfigError(f"UEA .ts: unknown split {split!r}; choose from {', '.join(TS_SPLITS)}")
        problem, train_file, test_file = find_ts_pair(path, problem)
        files = {"TRAIN": train_file, "TEST": test_file}
        parts = [(files[tag], read_ts(files[tag])) for tag in TS_SPLITS[split]]
        first_file, first = parts[0]
        if split != "all":  # the other file must agree on the class list (train and test share one)
            other_file = files["TEST" if split == "train" else "TRAIN"]
            other_labels = _class_labels_only(other_file)
            if other_labels != first.class_labels:
                raise DataError(other_file, f"@classLabel {' '.join(other_labels)} differs from {first_file.name}'s "
                                            f"{' '.join(first.class_labels)}")
        xs = []
        for f, d in parts:
            if d.class_labels != first.class_labels:
                raise DataError(f, f"@classLabel {' '.join(d.class_labels)} differs from {first_file.name}'s "
                                   f"{' '.join(first.class_labels)}")
            x = to_skeleton(d, f, channels)[..., 0]  # (N, C, T, V)
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise DataError(f, f"cases of shape {x.shape[1:]} differ from {first_file.name}'s {xs[0].shape[1:]}")
            xs.append(x)
        self.layout = get_layout(layout)  # type: ignore[arg-type]
        v = xs[0].shape[3]
        if v != self.layout.num_joints:
            raise DataError(first_file, f"{v} points per frame ({xs[0].shape[1] * v} dimensions / {channels}) "
                                        f"but layout {self.layout.name!r} has {self.layout.num_joints} joints")
        names = class_names or comment_class_names(first) \
            or (list(NATOPS_CLASSES) if problem.upper() == "NATOPS" and len(first.class_labels) == 6 else None) \
            or list(first.class_labels)
        if len(names) != len(first.class_labels):
            raise ConfigError(f"UEA .ts: {len(names)} class names for {len(first.class_labels)} classes")
        self.path = Path(path)
        self.split = split
        self.problem = problem
        self.files = [f for f, _ in parts]
        self._x = np.concatenate(xs)
        self.labels = np.concatenate([d.y for _, d in parts]).astype(np.int64)
        self.names = [f"{f.stem}_{i:04d}" for f, d in parts for i in range(len(d.labels))]
        self.class_names = [str(n) for n in names]
        self.class_labels = list(first.class_labels)
        self.subjects = None
        self.check_labels()

    def read(self, i: int) -> np.ndarray:
        """Case ``i`` as float32 ``(C, T, V, 1)`` (a fresh copy)."""
        return np.array(self._x[int(i)][..., None], dtype=np.float32, order="C")  # a copy: callers may write


def _class_labels_only(path: Path) -> list[str]:
    """The ``@classLabel`` list of a ``.ts`` file, reading only its header (strictly)."""
    header: dict[str, str] = {}
    text = _decode(path)
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not s.startswith("@"):
            raise DataError(path, f"expected a '@' header line or '#' comment before @data, got {s[:40]!r}", no)
        key, _, value = s[1:].partition(" ")
        if key.lower() == "data":
            return _check_header(path, header)[2]
        header[key.lower()] = value.strip()
    raise DataError(path, "no @data line (not a .ts file?)")


__all__ = ["NATOPS_CLASSES", "TsData", "UeaTsSource", "comment_class_names", "convert_ts", "find_ts_pair",
           "read_ts", "to_skeleton"]
