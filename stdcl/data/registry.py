"""``open_dataset``: every supported source behind one call, with per-dataset defaults.

==============  =========================================  ==========  ======  ============
name            path                                       splits      window  train repeat
==============  =========================================  ==========  ======  ============
ntu60-xsub      folder with NTU60_CS.npz (or the file)     train/test  64      1
ntu60-xview     folder with NTU60_CV.npz (or the file)     train/test  64      1
ntu120-xsub     folder with NTU120_CSub.npz (or the file)  train/test  64      1
ntu120-xset     folder with NTU120_CSet.npz (or the file)  train/test  64      1
ntu-npz         any CTR-GCN-format .npz                    train/test  64      1
ucla            folder holding all_sqe/ (or all_sqe)       train/test  52      5
natops          folder with NATOPS_TRAIN/_TEST.ts          train/test  52      1
pyskl           annotation .pkl                            any inside  64      1
numpy           plain-numpy .npz / .npy                    all/any     64      1
synthetic       none (generated) or a folder from synth    train/test  64      1
==============  =========================================  ==========  ======  ============
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stdcl.data.base import SampleSource, SkeletonDataset, Transform, as_path
from stdcl.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetSpec:
    """How to open one named dataset and its default training recipe for data."""

    open_source: Callable[..., SampleSource]
    transform: str  # transform kind for stdcl.data.transforms.build_transform
    window: int
    train_repeat: int = 1
    doc: str = ""


def _npz_in(path: str | os.PathLike | None, filename: str) -> Path:
    p = as_path(path, f"dataset {filename}")
    if p.is_dir():
        p = p / filename
        if not p.exists():
            raise DataError(p, "not found; run `stdcl data prepare` to create it")
    return p


def _ntu(filename: str) -> Callable[..., SampleSource]:
    def open_source(path=None, split="train", **opts) -> SampleSource:
        from stdcl.data.ntu_npz import NtuNpzSource

        return NtuNpzSource(_npz_in(path, filename), split, **opts)

    return open_source


def _ntu_npz(path=None, split="train", **opts) -> SampleSource:
    from stdcl.data.ntu_npz import NtuNpzSource

    return NtuNpzSource(as_path(path, "ntu-npz"), split, **opts)


def _ucla(path=None, split="train", **opts) -> SampleSource:
    from stdcl.data.ucla import UclaSource

    return UclaSource(as_path(path, "ucla"), split, **opts)


def _natops(path=None, split="train", **opts) -> SampleSource:
    from stdcl.data.uea_ts import UeaTsSource

    opts.setdefault("problem", "NATOPS")
    return UeaTsSource(as_path(path, "natops"), split, **opts)


def _pyskl(path=None, split="xsub_train", **opts) -> SampleSource:
    from stdcl.data.pyskl import PysklSource

    return PysklSource(as_path(path, "pyskl"), split, **opts)


def _numpy(path=None, split="all", **opts) -> SampleSource:
    from stdcl.data.numpy_source import NumpySource

    p = as_path(path, "numpy")
    if p.is_dir():
        found = sorted(p.glob("*.npz"))
        if len(found) != 1:
            raise DataError(p, f"expected exactly one .npz in the folder, found {len(found)}")
        p = found[0]
    return NumpySource(p, split, **opts)


def _synthetic(path=None, split="train", **opts) -> SampleSource:
    if path is not None:
        return _numpy(path, split, **opts)
    from stdcl.data.synthetic import SyntheticSource

    return SyntheticSource(split=split, **opts)


DATASETS: dict[str, DatasetSpec] = {
    "ntu60-xsub": DatasetSpec(_ntu("NTU60_CS.npz"), "ntu", 64, doc="NTU RGB+D 60 cross-subject"),
    "ntu60-xview": DatasetSpec(_ntu("NTU60_CV.npz"), "ntu", 64, doc="NTU RGB+D 60 cross-view"),
    "ntu120-xsub": DatasetSpec(_ntu("NTU120_CSub.npz"), "ntu", 64, doc="NTU RGB+D 120 cross-subject"),
    "ntu120-xset": DatasetSpec(_ntu("NTU120_CSet.npz"), "ntu", 64, doc="NTU RGB+D 120 cross-setup"),
    "ntu-npz": DatasetSpec(_ntu_npz, "ntu", 64, doc="any CTR-GCN-format NTU .npz"),
    "ucla": DatasetSpec(_ucla, "ucla", 52, train_repeat=5, doc="NW-UCLA, views 1-2 train, view 3 test"),
    "natops": DatasetSpec(_natops, "ntu", 52, doc="UEA NATOPS (natops8 layout), 180 train / 180 test .ts cases"),
    "pyskl": DatasetSpec(_pyskl, "ntu", 64, doc="pyskl / mmaction2 annotation pickle"),
    "numpy": DatasetSpec(_numpy, "ntu", 64, doc="plain numpy arrays"),
    "synthetic": DatasetSpec(_synthetic, "ntu", 64, doc="procedural teaching set (ntu25 layout)"),
}


def available_datasets() -> list[str]:
    return list(DATASETS)


def open_source(name: str, path: str | os.PathLike | None = None, split: str | None = None,
                **options: Any) -> SampleSource:
    """The raw reader of a named dataset (no transform)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    kwargs = {"path": path} | ({"split": split} if split is not None else {})
    return DATASETS[name].open_source(**kwargs, **options)


def open_dataset(name: str, path: str | os.PathLike | None = None, split: str = "train", *,
                 train: bool | None = None, transform: str | Transform | None = "auto",
                 modality: str = "joint", window: int | None = None, repeat: int | None = None,
                 seed: int | None = 0, transform_options: dict[str, Any] | None = None,
                 source_options: dict[str, Any] | None = None, **more_source_options: Any) -> SkeletonDataset:
    """Open dataset ``name`` (see the module table) as ``(x, label, index)`` items.

    Args:
        name: a dataset name from :data:`DATASETS`.
        path: where its files are (not needed for ``synthetic``).
        split: ``train``/``test`` for the benchmarks; any split name for pyskl/numpy.
        train: use the training transform and repeat; default: ``split`` contains "train".
        transform: ``"auto"`` (the dataset's published transform), ``None``/``"none"`` (raw
            sequences), a kind name (``"ntu"``, ``"ucla"``), or a ``transform(x, rng)`` callable.
        modality: ``joint``, ``bone``, ``joint_motion`` or ``bone_motion``.
        window: output frames (default: the dataset's, 64 or 52).
        repeat: iterations of the samples per epoch (default: 5 for NW-UCLA train, else 1).
        seed: seed of the random transforms.
        transform_options: overrides of the transform's parameters.
        source_options: passed to the reader (e.g. ``{"num_samples": 500, "seed": 3}`` for
            synthetic); keyword arguments not listed above are added to them.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    source = open_source(name, path, split, **(dict(source_options or {}) | more_source_options))
    is_train = ("train" in split) if train is None else train
    if transform == "auto" or isinstance(transform, str):
        kind = spec.transform if transform == "auto" else transform
        if kind in ("none", ""):
            tf = None
        else:
            from stdcl.data.transforms import build_transform

            opts = dict(transform_options or {})
            opts.setdefault("window", window or spec.window)
            tf = build_transform(kind, is_train, **opts)
    else:
        tf = transform
    if repeat is None:
        repeat = spec.train_repeat if is_train else 1
    return SkeletonDataset(source, tf, modality=modality, repeat=repeat, seed=seed)
