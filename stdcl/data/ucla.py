"""NW-UCLA in CTR-GCN's json layout: ``all_sqe/aXX_sYY_eZZ_vWW.json``.

Each file holds ``{"file_name", "skeletons": T x 20 x 3 (metres), "label": 1..10}``.
Cross-view protocol: views 1 and 2 train (1020 files), view 3 test (464 files). Sample
order follows CTR-GCN's ``feeder_ucla.py`` lists (shipped as name lists in
``resources/``; the test list equals ``val_label.pkl``), which matters for index-keyed
memory banks; files missing from those lists follow in sorted order.

Labels come from the action code in the file name (a01..a06, a08, a09, a11, a12 ->
0..9) and are checked against the json's 1-based ``label`` when a file is read.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stdcl.data.base import SampleSource, as_path
from stdcl.data.classes import UCLA_CLASSES
from stdcl.data.layouts import UCLA20
from stdcl.data.validate import require_file, shown
from stdcl.errors import ConfigError, DataError
from stdcl.io import read_json

CLASS_NAMES = UCLA_CLASSES
#: NW-UCLA action code -> 0-based class (codes 7 and 10 do not exist).
ACTION_TO_LABEL = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 8: 6, 9: 7, 11: 8, 12: 9}
SPLIT_VIEWS = {"train": (1, 2), "test": (3,), "all": (1, 2, 3)}
NAME_RE = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})")
_RESOURCES = Path(__file__).resolve().parent / "resources"


def reference_order(split: str) -> list[str]:
    """CTR-GCN's sample order for ``split`` ("train" or "test"), file names without ``.json``."""
    fname = {"train": "ucla_train_order.txt", "test": "ucla_val_order.txt"}[split]
    lines = (_RESOURCES / fname).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def parse_name(name: str, path: str | os.PathLike | None = None) -> tuple[int, int, int, int]:
    """``(action, subject, episode, view)`` of an ``aXX_sYY_eZZ_vWW`` name."""
    m = NAME_RE.fullmatch(name)
    if m is None:
        raise DataError(path or name, "file name does not match aXX_sYY_eZZ_vWW(.json)")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def _load_json(path: Path) -> Any:
    """The file's JSON via :func:`stdcl.io.read_json` (a syntax error is located by its line)."""
    require_file(path, "an NW-UCLA json file")
    return read_json(path)


def _parse_json(path: Path, dtype: type = np.float32) -> tuple[np.ndarray, int | None]:
    """(skeletons as ``dtype`` (T, V, 3), 1-based label or None) of one json file."""
    obj = _load_json(path)
    if not isinstance(obj, dict) or "skeletons" not in obj:
        raise DataError(path, "no 'skeletons' key (expected an object with file_name, skeletons, label)")
    name = obj.get("file_name")
    if name is not None and not isinstance(name, str):
        raise DataError(path, f"'file_name' must be a string, got {shown(name)}")
    label = obj.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)
                              or not 1 <= label <= len(CLASS_NAMES)):
        raise DataError(path, f"'label' must be an integer 1..{len(CLASS_NAMES)}, got {shown(label)}")
    return _skeletons(obj["skeletons"], path, dtype), label


def _skeletons(sk: Any, path: Path, dtype: type) -> np.ndarray:
    """``skeletons`` (a T x 20 x 3 nested list of numbers) as a finite ``dtype`` array."""
    where = "key 'skeletons'"
    try:
        arr = np.array(sk)
    except (ValueError, TypeError):
        raise DataError(path, "'skeletons' is not a regular T x 20 x 3 nested list", where=where) from None
    if arr.dtype.kind not in "iuf" and arr.size:
        raise DataError(path, "'skeletons' holds non-numeric values", where=where)
    if arr.ndim != 3 or arr.shape[0] == 0:
        problem = "has no frames" if arr.size == 0 else f"has shape {tuple(arr.shape)}, expected (T, 20, 3)"
        raise DataError(path, f"'skeletons' {problem}", where=where)
    if arr.shape[1:] != (UCLA20.num_joints, 3):
        raise DataError(path, f"'skeletons' has {arr.shape[1]} joints x {arr.shape[2]} coordinates per frame, "
                        f"expected {UCLA20.num_joints} x 3", where=where)
    if any(isinstance(v, bool) for frame in sk for joint in frame for v in joint):  # numpy reads true as 1
        raise DataError(path, "'skeletons' holds non-numeric values (true/false)", where=where)
    with np.errstate(over="ignore"):
        arr = arr.astype(dtype)
    bad = ~np.isfinite(arr)
    if bad.any():
        t, j, _ = np.argwhere(bad)[0]
        raise DataError(path, f"non-finite coordinate at frame {t}, joint {j} ({int(bad.sum())} such values)",
                        where=where)
    return arr


def read_ucla_json(path: str | os.PathLike, dtype: type = np.float32) -> np.ndarray:
    """One NW-UCLA json file as (3, T, 20, 1) raw metres (float32 by default)."""
    arr, _ = _parse_json(Path(path), dtype)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[..., None])


class UclaSource(SampleSource):
    """NW-UCLA json sequences of one split, read lazily (with an LRU cache).

    Args:
        path: the ``all_sqe`` folder, the folder holding it, or one of its ``.json`` files.
        split: ``train`` (views 1, 2), ``test`` (view 3) or ``all``.
        views: override the split's views (1-based camera ids).
        cache_size: how many parsed sequences to keep (0 disables; the full set is ~14 MB).
        dtype: ``float32`` (default) or ``float64``; float64 keeps the json's doubles, so the
            NW-UCLA transform reproduces the reference bit for bit (float32 input: ~1e-6).
    """

    format = "ucla"

    def __init__(self, path: str | os.PathLike, split: str = "train", views: Sequence[int] | None = None,
                 cache_size: int = 2048, dtype: str | type = "float32"):
        if split not in SPLIT_VIEWS:
            raise ConfigError(f"NW-UCLA: unknown split {split!r}; choose from {', '.join(SPLIT_VIEWS)}")
        root = as_path(path, "NW-UCLA data")
        folder = root / "all_sqe" if (root / "all_sqe").is_dir() else root
        if folder.is_file() and folder.suffix == ".json":  # one sequence
            files = {folder.stem: folder}
        elif not folder.is_dir():
            raise DataError(folder, "expected the NW-UCLA 'all_sqe' folder of json files, or one of them")
        else:
            files = {p.stem: p for p in folder.iterdir() if p.suffix == ".json"}
        if not files:
            raise DataError(folder, "no NW-UCLA json files (aXX_sYY_eZZ_vWW.json) in this folder")
        meta = {name: parse_name(name, p) for name, p in files.items()}
        for name, (action, *_rest) in meta.items():
            if action not in ACTION_TO_LABEL:
                raise DataError(files[name], f"unknown action code a{action:02d} (NW-UCLA has "
                                f"{', '.join(f'a{a:02d}' for a in ACTION_TO_LABEL)})")
        want = tuple(views) if views is not None else SPLIT_VIEWS[split]
        chosen = {n for n, m in meta.items() if m[3] in want}
        if not chosen:
            raise DataError(folder, f"no json files of view(s) {', '.join(map(str, want))} for split {split!r}")
        ref = [n for s in (("train", "test") if split == "all" else (split,)) for n in reference_order(s)]
        ref_set = set(ref)
        self.names = [n for n in ref if n in chosen] + sorted(chosen - ref_set)
        self.path = folder
        self.split = split
        self.files = [files[n] for n in self.names]
        self.labels = np.asarray([ACTION_TO_LABEL[meta[n][0]] for n in self.names], dtype=np.int64)
        self.subjects = np.asarray([meta[n][1] for n in self.names], dtype=np.int64)
        self.views = np.asarray([meta[n][3] for n in self.names], dtype=np.int64)
        self.class_names = list(CLASS_NAMES)
        self.layout = UCLA20
        self.cache_size = int(cache_size)
        self.dtype = np.dtype(dtype).type
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"NW-UCLA: dtype must be float32 or float64, got {dtype!r}")
        self._make_cache()

    def _make_cache(self) -> None:
        self._load = (lru_cache(maxsize=self.cache_size)(self._load_uncached) if self.cache_size > 0
                      else self._load_uncached)

    def _load_uncached(self, i: int) -> np.ndarray:
        arr, label = _parse_json(self.files[i], self.dtype)
        if label is not None and label - 1 != self.labels[i]:
            raise DataError(self.files[i], f"'label' {label} disagrees with the file name's action code "
                            f"(expected {int(self.labels[i]) + 1})")
        return np.ascontiguousarray(arr.transpose(2, 0, 1)[..., None])

    def read(self, i: int) -> np.ndarray:
        """Sample ``i`` as (3, T, 20, 1) raw metres (a fresh copy)."""
        return self._load(int(i)).copy()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_load", None)  # the cache is per process (DataLoader workers rebuild it)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_cache()
