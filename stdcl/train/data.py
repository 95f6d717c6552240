"""Datasets of a training config: training items, the carved validation split and the test split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from stdcl.data.base import SkeletonDataset
from stdcl.data.layouts import Layout
from stdcl.errors import ConfigError
from stdcl.train.splits import Reindexed, carve_validation, training_items


def default_window(cfg: dict[str, Any]) -> int:
    from stdcl.data.registry import DATASETS

    name = cfg["data"]["dataset"]
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return int(cfg["data"]["window"] or DATASETS[name].window)


def open_split(cfg: dict[str, Any], split: str, train: bool, seed: int = 0,
               repeat: int | None = None) -> SkeletonDataset:
    """``open_dataset`` with the config's data settings (train or test transform)."""
    from stdcl.data.registry import open_dataset

    d = cfg["data"]
    opts = d.get("transform") if train else d.get("test_transform")
    if repeat is None:
        repeat = d["repeat"] if train else 1
    return open_dataset(d["dataset"], d["path"], split, train=train, modality=d["modality"],
                        window=default_window(cfg), repeat=repeat,
                        seed=seed, transform_options=dict(opts or {}), source_options=d.get("source"))


def validation_samples(cfg: dict[str, Any], train: SkeletonDataset) -> np.ndarray:
    """Sample ids of the training split held out for validation (deterministic in the config)."""
    d = cfg["data"]
    return carve_validation(train.num_samples, float(d["val_fraction"]), int(d["val_seed"]), train.subjects,
                            bool(d.get("val_by_subject", True)))


@dataclass
class TrainData:
    train: Reindexed  # training items, indices 0..n-1 (bank slots)
    base: SkeletonDataset  # the training split with the train transform (owns the RNG)
    val: Reindexed | None
    test: SkeletonDataset
    class_names: list[str]
    layout: Layout
    in_channels: int
    num_person: int
    window: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_train_data(cfg: dict[str, Any], data_seed: int) -> TrainData:
    d = cfg["data"]
    base = open_split(cfg, d["train_split"], True, seed=data_seed)
    val_samples = validation_samples(cfg, base)
    train = Reindexed(base, training_items(base, val_samples))
    val = None
    if len(val_samples):
        val_base = open_split(cfg, d["train_split"], False, repeat=1)
        val = Reindexed(val_base, val_samples)
    test = open_split(cfg, d["test_split"], False, repeat=1)
    raw = base.raw(0)
    if test.num_classes != base.num_classes or list(test.class_names) != list(base.class_names):
        raise ConfigError(f"train split has {base.num_classes} classes, test split {test.num_classes}: "
                          "they must share one class list")
    return TrainData(train, base, val, test, list(base.class_names), base.layout, int(raw.shape[0]),
                     int(raw.shape[3]), default_window(cfg))


def build_eval_dataset(cfg: dict[str, Any], split: str) -> tuple[Dataset, list[str], list[str]]:
    """``(dataset, sample names, class names)`` for ``split`` = ``"test"`` or ``"val"``."""
    d = cfg["data"]
    if split == "test":
        ds = open_split(cfg, d["test_split"], False, repeat=1)
        return ds, list(ds.names), list(ds.class_names)
    base = open_split(cfg, d["train_split"], False, repeat=1)
    val_samples = validation_samples(cfg, base)
    if not len(val_samples):
        raise ConfigError("this run has no validation split (data.val_fraction is 0)")
    val = Reindexed(base, val_samples)
    return val, val.names, list(base.class_names)
