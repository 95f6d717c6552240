"""Datasets: one description each (reader, published transform and window, training protocol,
class names, file sniffing for ``stdcl data inspect``), and ``open_dataset`` behind one call.

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

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stdcl.data.base import SampleSource, SkeletonDataset, Transform, as_path
from stdcl.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetSpec:
    """How to open one named dataset, its data defaults and what else the project needs to know."""

    open_source: Callable[..., SampleSource]
    transform: str  # transform kind for stdcl.data.transforms.build_transform
    window: int
    train_repeat: int = 1
    doc: str = ""
    #: the packaged training protocol (``stdcl/configs/<protocol>.yaml``), None if there is none
    protocol: str | None = None
    #: the benchmark's class names for a model with ``num_classes`` outputs (None: it has none of its own)
    class_names: Callable[[int], list[str] | None] | None = None
    #: ``sniff(path)`` -> the splits ``inspect`` reads when ``path`` holds this dataset's format, else None
    sniff: Callable[[Path], list[str] | None] | None = None


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
    if path is not None:  # a set written by `stdcl data synth`: its generation options are fixed in the file
        from stdcl.data.numpy_source import NumpySource

        reader = inspect.signature(NumpySource.__init__).parameters
        return _numpy(path, split, **{k: v for k, v in opts.items() if k in reader})
    from stdcl.data.synthetic import SyntheticSource

    return SyntheticSource(split=split, **opts)


def _ntu_names(num_classes: int) -> list[str] | None:
    from stdcl.data.classes import ntu_classes

    return ntu_classes(num_classes) if 0 < num_classes <= 120 else None


def _ucla_names(num_classes: int) -> list[str] | None:
    from stdcl.data.classes import UCLA_CLASSES

    return list(UCLA_CLASSES) if num_classes == len(UCLA_CLASSES) else None


def _natops_names(num_classes: int) -> list[str] | None:
    from stdcl.data.uea_ts import NATOPS_CLASSES

    return list(NATOPS_CLASSES) if num_classes == len(NATOPS_CLASSES) else None


def _sniff_ucla(p: Path) -> list[str] | None:
    if p.is_dir():
        found = (p / "all_sqe").is_dir() or p.name == "all_sqe" or any(p.glob("a*_s*_e*_v*.json"))
        return ["train", "test"] if found else None
    return ["all"] if p.suffix == ".json" else None


def _sniff_natops(p: Path) -> list[str] | None:
    return ["train", "test"] if (p / "NATOPS_TRAIN.ts").is_file() or p.suffix == ".ts" else None


def _npz_keys(p: Path) -> list[str] | None:
    from stdcl.data.npz_members import member_names

    return member_names(p) if p.is_file() and p.suffix == ".npz" else None


def _sniff_ntu_npz(p: Path) -> list[str] | None:
    keys = _npz_keys(p)
    splits = [s for s in ("train", "test") if f"x_{s}" in (keys or ())]
    return splits or None


def _sniff_numpy(p: Path) -> list[str] | None:
    keys = _npz_keys(p)
    return None if keys is None else [k[6:] for k in keys if k.startswith("split_")] or ["all"]


def _sniff_pyskl(p: Path) -> list[str] | None:
    if p.suffix not in (".pkl", ".pickle"):
        return None
    from stdcl.data.pyskl import read_annotations

    return list(read_annotations(p)[0])


DATASETS: dict[str, DatasetSpec] = {
    "ntu60-xsub": DatasetSpec(_ntu("NTU60_CS.npz"), "ntu", 64, doc="NTU RGB+D 60 cross-subject",
                              protocol="ntu60-xsub", class_names=_ntu_names),
    "ntu60-xview": DatasetSpec(_ntu("NTU60_CV.npz"), "ntu", 64, doc="NTU RGB+D 60 cross-view",
                               protocol="ntu60-xview", class_names=_ntu_names),
    "ntu120-xsub": DatasetSpec(_ntu("NTU120_CSub.npz"), "ntu", 64, doc="NTU RGB+D 120 cross-subject",
                               protocol="ntu120-xsub", class_names=_ntu_names),
    "ntu120-xset": DatasetSpec(_ntu("NTU120_CSet.npz"), "ntu", 64, doc="NTU RGB+D 120 cross-setup",
                               protocol="ntu120-xset", class_names=_ntu_names),
    "ntu-npz": DatasetSpec(_ntu_npz, "ntu", 64, doc="any CTR-GCN-format NTU .npz", class_names=_ntu_names,
                           sniff=_sniff_ntu_npz),
    "ucla": DatasetSpec(_ucla, "ucla", 52, train_repeat=5, doc="NW-UCLA, views 1-2 train, view 3 test",
                        protocol="ucla", class_names=_ucla_names, sniff=_sniff_ucla),
    "natops": DatasetSpec(_natops, "ntu", 52, doc="UEA NATOPS (natops8 layout), 180 train / 180 test .ts cases",
                          protocol="natops", class_names=_natops_names, sniff=_sniff_natops),
    "pyskl": DatasetSpec(_pyskl, "ntu", 64, doc="pyskl / mmaction2 annotation pickle", sniff=_sniff_pyskl),
    "numpy": DatasetSpec(_numpy, "ntu", 64, doc="plain numpy arrays", sniff=_sniff_numpy),
    "synthetic": DatasetSpec(_synthetic, "ntu", 64, doc="procedural teaching set (ntu25 layout)",
                             protocol="synthetic"),
}


def available_datasets() -> list[str]:
    """Names of the datasets :func:`open_dataset` opens."""
    return list(DATASETS)


def protocols() -> list[str]:
    """The packaged training protocols, one per dataset that has one."""
    return [s.protocol for s in DATASETS.values() if s.protocol]


def dataset_class_names(name: str | None, num_classes: int) -> list[str] | None:
    """Dataset ``name``'s class names for ``num_classes`` outputs (NTU's first K for K <= 120;
    NW-UCLA's and NATOPS's own lists), or None when the dataset has none or ``name`` is unknown."""
    spec = DATASETS.get(name or "")
    if spec is None or spec.class_names is None:
        return None
    return spec.class_names(int(num_classes))


def sniff_splits(path: Path) -> tuple[str, list[str]] | None:
    """``(dataset, splits)`` of the first dataset whose format ``path`` holds, or None."""
    for name, spec in DATASETS.items():
        if spec.sniff is not None:
            splits = spec.sniff(path)
            if splits:
                return name, splits
    return None


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
