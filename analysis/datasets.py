"""The data an analysis runs on: a model's own dataset split by default, or one the user names.

:func:`open_analysis_data` returns an :class:`AnalysisData` with the evaluation-transformed
dataset, names, labels, class names and metadata, and an ``identity`` that keys the caches.
:func:`check_compatible` says in one line why a checkpoint cannot read a dataset.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from analysis.models import LoadedModel
from stdcl.data.layouts import Layout
from stdcl.data.subsets import stratified_subset  # noqa: F401  (re-exported: the analysis budget)
from stdcl.errors import ConfigError
from stdcl.train.config import load_config
from stdcl.train.data import build_eval_dataset


@dataclass
class AnalysisData:
    """A split ready for inference: items ``(x, label, index)`` in evaluation form."""

    dataset: Dataset
    names: list[str]
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    class_meta: list[dict] | None
    layout: Layout
    identity: dict[str, Any]  # what the data is, for cache keys and display

    def __len__(self) -> int:
        return len(self.names)

    def describe(self) -> str:
        i = self.identity
        return f"{i['dataset']} {i['split']} ({i['modality']}, {len(self)} samples, {len(self.class_names)} classes)"


def _path_stamp(path: str | None) -> Any:
    """Size and modification time of a data path (files, or the files directly inside a folder)."""
    if not path:
        return None
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file())
        return [str(p.resolve()), len(files), sum(q.stat().st_size for q in files),
                max((q.stat().st_mtime_ns for q in files), default=0)]
    return [str(p), None]


def analysis_config(model: LoadedModel, dataset: str | None = None, path: str | os.PathLike | None = None,
                    modality: str | None = None, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config whose data section describes what to analyse (the model's own unless overridden)."""
    cfg = copy.deepcopy(model.config) if model.config else None
    if cfg is None or (dataset and dataset != cfg["data"]["dataset"]):
        protocol = dataset or model.meta.get("protocol") or model.meta.get("dataset")
        if not protocol:
            raise ConfigError(f"{model.label}: records no dataset; choose one")
        try:
            cfg = load_config(protocol, encoder=model.encoder.name,
                              modality=modality or model.meta.get("modality") or "joint")
        except ConfigError:
            cfg = load_config("custom", encoder=model.encoder.name,
                              modality=modality or model.meta.get("modality") or "joint")
            cfg["data"]["dataset"] = protocol
    d = cfg["data"]
    if path is not None:
        d["path"] = str(Path(path).expanduser())
    if modality is not None:
        d["modality"] = modality
    if source is not None:
        d["source"] = dict(source)
    d["window"] = model.encoder.window
    d["num_workers"] = 0
    return cfg


def open_analysis_data(model: LoadedModel, split: str = "test", dataset: str | None = None,
                       path: str | os.PathLike | None = None, modality: str | None = None,
                       source: dict[str, Any] | None = None) -> AnalysisData:
    """The ``split`` (``test`` or ``val``) of the model's dataset, or of ``dataset`` at ``path``."""
    cfg = analysis_config(model, dataset, path, modality, source)
    ds, names, class_names = build_eval_dataset(cfg, split)
    base = getattr(ds, "base", ds)
    ids = getattr(ds, "ids", None)
    labels = np.asarray(base.labels if ids is None else np.asarray(base.labels)[ids], dtype=np.int64)
    d = cfg["data"]
    identity = {"dataset": d["dataset"], "path": _path_stamp(d["path"]), "split": split, "modality": d["modality"],
                "window": d["window"], "source": d.get("source"), "transform": d.get("test_transform"),
                "val": [d.get("val_fraction"), d.get("val_by_subject"), d.get("val_seed")] if split == "val" else None}
    data = AnalysisData(ds, list(names), labels, list(class_names), getattr(base, "class_meta", None),
                        base.layout, identity)
    check_compatible(model, data)
    return data


def check_compatible(model: LoadedModel, data: AnalysisData) -> None:
    """One-line ConfigError when ``model`` cannot be evaluated on ``data`` (layout, classes, persons)."""
    enc = model.encoder
    where = f"{model.label} on {data.identity['dataset']}"
    if enc.layout.num_joints != data.layout.num_joints:
        raise ConfigError(f"{where}: the checkpoint uses layout {enc.layout.name!r} ({enc.layout.num_joints} joints), "
                          f"the data {data.layout.name!r} ({data.layout.num_joints} joints)")
    if enc.num_classes != len(data.class_names):
        raise ConfigError(f"{where}: the checkpoint has {enc.num_classes} classes, the data {len(data.class_names)}")
    if len(data):
        x = data.dataset[0][0]
        if x.shape[0] != enc.in_channels or x.shape[-1] != enc.num_person:
            raise ConfigError(f"{where}: the data gives {x.shape[0]} channels and {x.shape[-1]} persons, "
                              f"the checkpoint expects {enc.in_channels} and {enc.num_person}")
    names = model.meta.get("class_names")
    if names and list(names) != list(data.class_names):
        raise ConfigError(f"{where}: the class names differ from the checkpoint's "
                          f"(first difference: {next(f'{a!r} vs {b!r}' for a, b in zip(names, data.class_names) if a != b)})")
