"""pyskl / mmaction2 skeleton annotation pickles.

``{"split": {name: [frame_dir, ...]}, "annotations": [{frame_dir, label, total_frames,
keypoint (M, T, V, C)[, keypoint_score (M, T, V)]}, ...]}``. Any split name inside may be
used (``xsub_train``, ``xview_val``, ...); samples keep the annotation order, as pyskl
does. 2D keypoints with scores become C = 3 (x, y, score), as pyskl's GCN pipelines use.
The pickle is read with a restricted unpickler (containers and numpy arrays only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource, names_to_subjects
from stdcl.data.classes import ntu_classes, numbered_classes
from stdcl.data.layouts import Layout, get_layout
from stdcl.data.safe_pickle import load_data_pickle
from stdcl.errors import DataError

_LAYOUT_BY_JOINTS = {25: "ntu25", 20: "ucla20", 17: "coco17"}


class PysklSource(SampleSource):
    """One split of a pyskl annotation pickle."""

    format = "pyskl"

    def __init__(self, path: str | Path, split: str, layout: str | Layout | None = None,
                 class_names: list[str] | None = None):
        path = Path(path)
        data = load_data_pickle(path)
        if not isinstance(data, dict) or "split" not in data or "annotations" not in data:
            raise DataError(path, "a pyskl pickle is a dict with 'split' and 'annotations'; "
                            f"found {sorted(data) if isinstance(data, dict) else type(data).__name__}")
        splits = data["split"]
        if split not in splits:
            raise DataError(path, f"no split {split!r} (has: {', '.join(map(str, splits))})", where="key 'split'")
        anns = data["annotations"]
        if not anns:
            raise DataError(path, "no annotations")
        ident = "filename" if "filename" in anns[0] else "frame_dir"
        wanted = set(splits[split])
        self._anns = [a for a in anns if a.get(ident) in wanted]
        if not self._anns:
            raise DataError(path, f"split {split!r} names no annotated sample")
        self.path, self.split = path, split
        for k, a in enumerate(self._anns):
            for key in ("keypoint", "label"):
                if key not in a:
                    raise DataError(path, f"annotation {k} ({a.get(ident)}) has no {key!r}", where=f"key {key!r}")
            kp = a["keypoint"]
            if not isinstance(kp, np.ndarray) or kp.ndim != 4:
                raise DataError(path, f"annotation {k}: keypoint must be an (M, T, V, C) array, "
                                f"got {getattr(kp, 'shape', type(kp).__name__)}", where="key 'keypoint'")
        self.names = [str(a[ident]) for a in self._anns]
        self.labels = np.asarray([int(a["label"]) for a in self._anns], dtype=np.int64)
        all_labels = [int(a["label"]) for a in anns]
        num_classes = max(all_labels) + 1
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
        kp = np.asarray(a["keypoint"], dtype=np.float32)  # (M, T, V, C)
        if "keypoint_score" in a and kp.shape[-1] == 2:
            kp = np.concatenate([kp, np.asarray(a["keypoint_score"], np.float32)[..., None]], axis=-1)
        if not np.isfinite(kp).all():
            raise DataError(self.path, f"sample {self.names[i]!r} has NaN or infinite coordinates")
        return np.ascontiguousarray(kp.transpose(3, 1, 2, 0))
