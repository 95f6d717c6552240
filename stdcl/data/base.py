"""The one dataset interface every reader sits behind.

A *source* knows how to read raw sequences from one file format; a
:class:`SkeletonDataset` wraps a source with a transform, a modality and a repeat
factor and yields ``(x, label, index)``:

- ``x``: float32 ``(C, T, V, M)`` numpy array (the default collate stacks it to a tensor);
- ``label``: 0-based int;
- ``index``: the item's position as iterated, ``0 <= index < len(dataset)``. With
  ``repeat = r`` each underlying sample appears ``r`` times under distinct indices
  (NW-UCLA trains with ``r = 5``); :meth:`SkeletonDataset.sample_of` maps an index back
  to its sample. The STD-CL memory bank keys its slots by this index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from stdcl.data.layouts import Layout
from stdcl.errors import ConfigError, DataError

#: ``transform(x, rng) -> x``: x is float32 (C, T, V, M); rng a numpy Generator.
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class SampleSource:
    """Base class of the format readers.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`read`.
    ``read(i)`` returns the *raw* sequence of sample ``i`` as float32 ``(C, T, V, M)``;
    ``T`` may differ between samples (padded formats return their padded length).
    """

    format: str = "?"
    path: Path | None = None
    split: str = ""
    names: list[str]
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    layout: Layout
    subjects: np.ndarray | None = None  # performer / subject id per sample, when known
    class_meta: list[dict[str, Any]] | None = None  # per class, e.g. the synthetic twins

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.format} {self.path or ''} [{self.split}]".strip()

    def joints_persons(self) -> tuple[int, int]:
        """``(V, M)`` of the raw sequences (read from the first; a source that knows them without reading
        says so)."""
        shape = self.read(0).shape if len(self) else (0, 0, 0, 0)
        return int(shape[-2]), int(shape[-1])

    def check_labels(self, where: str | None = None) -> None:
        """Raise a :class:`DataError` if any label is outside ``0..num_classes-1``."""
        labels = np.asarray(self.labels)
        k = len(self.class_names)
        bad = np.flatnonzero((labels < 0) | (labels >= k))
        if bad.size:
            raise DataError(self.path, f"label {int(labels[bad[0]])} of sample {int(bad[0])} is out of "
                            f"range 0..{k - 1} ({bad.size} such labels)", where=where)


class SkeletonDataset(Dataset):
    """``(x, label, index)`` items from a :class:`SampleSource`.

    Args:
        source: the reader.
        transform: ``transform(x, rng)`` applied to the raw sequence (or None).
        modality: ``joint``, ``bone``, ``joint_motion`` or ``bone_motion``.
        repeat: how many times the samples are iterated per epoch (distinct indices).
        seed: seed of the numpy Generator the random transforms draw from. DataLoader
            workers reseed from torch's per-worker seed (see :func:`worker_init_fn`).
    """

    def __init__(self, source: SampleSource, transform: Transform | None = None, modality: str = "joint",
                 repeat: int = 1, seed: int | None = 0):
        from stdcl.data.modalities import MODALITIES

        if modality not in MODALITIES:
            raise ConfigError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
        if repeat < 1:
            raise ConfigError(f"repeat must be >= 1, got {repeat}")
        self.source = source
        self.transform = transform
        self.modality = modality
        self.repeat = int(repeat)
        self.rng = np.random.default_rng(seed)

    # -- metadata -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Names of the underlying samples (length ``num_samples``)."""
        return self.source.names

    @property
    def labels(self) -> np.ndarray:
        """Labels of the underlying samples (length ``num_samples``)."""
        return self.source.labels

    @property
    def index_labels(self) -> np.ndarray:
        """Label of every index as iterated (length ``len(self)``)."""
        return np.tile(np.asarray(self.source.labels), self.repeat)

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names

    @property
    def num_classes(self) -> int:
        return len(self.source.class_names)

    @property
    def layout(self) -> Layout:
        return self.source.layout

    @property
    def num_samples(self) -> int:
        return len(self.source)

    @property
    def subjects(self) -> np.ndarray | None:
        return self.source.subjects

    @property
    def class_meta(self) -> list[dict[str, Any]] | None:
        return self.source.class_meta

    def sample_of(self, index: int | np.ndarray) -> int | np.ndarray:
        """The underlying sample of an iterated index."""
        return index % len(self.source)

    # -- items ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source) * self.repeat

    def raw(self, index: int) -> np.ndarray:
        """The untransformed joint sequence behind ``index``."""
        return self.source.read(int(self.sample_of(index)))

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        i = int(self.sample_of(index))
        x = self.source.read(i)
        if self.transform is not None:
            x = self.transform(x, self.rng)
        from stdcl.data.modalities import apply_modality

        x = apply_modality(x, self.modality, self.source.layout)
        return np.ascontiguousarray(x, dtype=np.float32), int(self.source.labels[i]), index

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return (f"SkeletonDataset({self.source.describe()}, {len(self)} items, {self.num_classes} classes, "
                f"layout={self.layout.name}, modality={self.modality}, repeat={self.repeat})")


def worker_init_fn(worker_id: int) -> None:
    """DataLoader hook: give each worker's dataset its own Generator from torch's seed.

    Wrappers that keep the skeleton dataset as ``.base`` (e.g. a re-indexed subset) are unwrapped.
    """
    info = torch.utils.data.get_worker_info()
    ds = getattr(info.dataset, "base", info.dataset) if info is not None else None
    if isinstance(ds, SkeletonDataset):
        ds.reseed(info.seed % 2**32)


def as_path(path: str | os.PathLike | None, what: str) -> Path:
    """Validate that ``path`` was given and exists."""
    if path is None:
        raise ConfigError(f"{what}: a path is required")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(p, "no such file or directory")
    return p


def names_to_subjects(names: Sequence[str]) -> np.ndarray | None:
    """Performer ids from NTU-style names (``...P001...``); None when a name has none."""
    import re

    out = []
    for n in names:
        m = re.search(r"P(\d{3})", n)
        if m is None:
            return None
        out.append(int(m.group(1)))
    return np.asarray(out, dtype=np.int64)
