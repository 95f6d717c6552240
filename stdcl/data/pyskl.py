"""pyskl / mmaction2 skeleton annotation pickles.

``{"split": {name: [frame_dir, ...]}, "annotations": [{frame_dir, label, total_frames,
keypoint (M, T, V, C)[, keypoint_score (M, T, V)]}, ...]}``. Any split name inside may be
used (``xsub_train``, ``xview_val``, ...); samples keep the annotation order, as pyskl
does. 2D keypoints with scores become C = 3 (x, y, score), as pyskl's GCN pipelines use.
The pickle is read with a restricted unpickler (containers and numpy arrays only) and every
field is checked (:func:`read_annotations`) before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stdcl.data.base import SampleSource, names_to_subjects
from stdcl.data.classes import ntu_classes, numbered_classes
from stdcl.data.layouts import Layout, get_layout
from stdcl.data.safe_pickle import load_data_pickle
from stdcl.data.validate import MAX_CLASSES, float32, numeric_array, require_finite, shown, shown_list, type_name
from stdcl.errors import DataError

_LAYOUT_BY_JOINTS = {25: "ntu25", 20: "ucla20", 17: "coco17"}


def read_annotations(path: str | Path) -> tuple[dict[str, list[str]], list[dict[str, Any]], str]:
    """``(splits, annotations, name key)`` of a pyskl pickle, every field checked.

    The name key is ``frame_dir`` or ``filename`` (whichever the first annotation has); names are
    unique; every annotation has an integer ``label`` >= 0, an ``(M, T, V, C)`` numeric ``keypoint``
    (V and the channels, with ``keypoint_score``, the same in all), a matching ``keypoint_score``
    and ``total_frames`` when present.
    """
    path = Path(path)
    data = load_data_pickle(path)
    if not isinstance(data, dict) or "split" not in data or "annotations" not in data:
        raise DataError(path, "a pyskl pickle is a dict with 'split' and 'annotations'; "
                        f"found {sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__}")
    splits, anns = data["split"], data["annotations"]
    if not isinstance(splits, dict) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v)
            for k, v in splits.items()):
        raise DataError(path, "'split' must map split names to lists of sample names", where="key 'split'")
    if not isinstance(anns, (list, tuple)):
        raise DataError(path, f"'annotations' must be a list of dicts, got {type_name(anns)}",
                        where="key 'annotations'")
    if not anns:
        raise DataError(path, "no annotations")
    ident = "filename" if isinstance(anns[0], dict) and "filename" in anns[0] else "frame_dir"
    seen: set[str] = set()
    shape = None  # (V, channels) of the first annotation
    for k, a in enumerate(anns):
        where = f"annotation {k}"
        if not isinstance(a, dict):
            raise DataError(path, f"must be a dict, got {type_name(a)}", where=where)
        name = a.get(ident)
        if not isinstance(name, str):
            raise DataError(path, f"{ident!r} must be a string, got {type_name(name)}", where=where)
        where += f" {shown(name)}"
        if name in seen:
            raise DataError(path, f"{ident} {shown(name)} appears twice", where=where)
        seen.add(name)
        this = _check_annotation(a, path, where)
        if shape is not None and this != shape:
            raise DataError(path, f"keypoints have V={this[0]} joints and {this[1]} channels, annotation 0 has "
                            f"V={shape[0]} and {shape[1]}", where=where)
        shape = this
    return {k: list(v) for k, v in splits.items()}, list(anns), ident


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_annotation(a: dict[str, Any], path: Path, where: str) -> tuple[int, int]:
    """(V, channels as read) of one annotation after checking its fields."""
    for key in ("keypoint", "label"):
        if key not in a:
            raise DataError(path, f"has no {key!r}", where=where)
    label = a["label"]
    if not _is_int(label) or not 0 <= label < MAX_CLASSES:
        raise DataError(path, f"'label' must be an integer in 0..{MAX_CLASSES - 1}, got {shown(label)} "
                        f"({type(label).__name__})", where=where)
    kp = a["keypoint"]
    if not isinstance(kp, np.ndarray) or kp.ndim != 4 or 0 in kp.shape or kp.dtype.kind not in "iuf":
        raise DataError(path, f"'keypoint' must be a numeric (M, T, V, C) array, got {type_name(kp)}", where=where)
    m, t, v, c = kp.shape
    if "keypoint_score" in a:
        score = a["keypoint_score"]
        if not isinstance(score, np.ndarray) or score.shape != (m, t, v):
            raise DataError(path, f"'keypoint_score' must be an (M, T, V) = {(m, t, v)} array, got "
                            f"{type_name(score)}", where=where)
        numeric_array(score, path, None)
    total = a.get("total_frames", t)
    if not _is_int(total) or total != t:
        raise DataError(path, f"'total_frames' is {shown(total)} but 'keypoint' has {t} frames", where=where)
    return v, c + 1 if c == 2 and "keypoint_score" in a else c


class PysklSource(SampleSource):
    """One split of a pyskl annotation pickle."""

    format = "pyskl"

    def __init__(self, path: str | Path, split: str, layout: str | Layout | None = None,
                 class_names: list[str] | None = None):
        path = Path(path)
        splits, anns, ident = read_annotations(path)
        if split not in splits:
            raise DataError(path, f"no split {split!r} (has: {shown_list(splits)})", where="key 'split'")
        known = {a[ident] for a in anns}
        missing = [n for n in splits[split] if n not in known]
        if missing:
            raise DataError(path, f"split {split!r} names {len(missing)} samples without an annotation "
                            f"(first: {shown(missing[0])})", where="key 'split'")
        wanted = set(splits[split])
        self._anns = [a for a in anns if a[ident] in wanted]
        if not self._anns:
            raise DataError(path, f"split {split!r} names no annotated sample")
        self.path, self.split = path, split
        self.names = [a[ident] for a in self._anns]
        self.labels = np.asarray([int(a["label"]) for a in self._anns], dtype=np.int64)
        num_classes = max(int(a["label"]) for a in anns) + 1
        v = self._anns[0]["keypoint"].shape[2]
        if layout is None:
            if v not in _LAYOUT_BY_JOINTS:
                raise DataError(path, f"keypoints have V={v} joints; pass a layout for this skeleton")
            layout = _LAYOUT_BY_JOINTS[v]
        self.layout = get_layout(layout)
        if self.layout.num_joints != v:
            raise DataError(path, f"layout {self.layout.name!r} has {self.layout.num_joints} joints, keypoints have {v}")
        if class_names is None:
            class_names = ntu_classes(num_classes) if v == 25 and num_classes in (60, 120) \
                else numbered_classes(num_classes)
        self.class_names = list(class_names)
        self.subjects = names_to_subjects(self.names)
        self.check_labels()

    def read(self, i: int) -> np.ndarray:
        a = self._anns[i]
        kp = float32(a["keypoint"])  # (M, T, V, C)
        if "keypoint_score" in a and kp.shape[-1] == 2:
            kp = np.concatenate([kp, float32(a["keypoint_score"])[..., None]], axis=-1)
        require_finite(kp, self.path, f"sample {shown(self.names[i])}")
        return np.ascontiguousarray(kp.transpose(3, 1, 2, 0))
