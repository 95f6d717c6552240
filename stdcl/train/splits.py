"""The validation split carved from the training data, and the epoch sampler.

Validation is a seeded, fixed fraction of the *training* split (whole subjects when the
dataset records them, so no performer is in both), used to pick the ``best`` checkpoint and
to tune fusion weights; the test split is only ever reported. The training items keep
contiguous indices ``0..n-1`` (the STD-CL bank slots) through :class:`Reindexed`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from stdcl.data.base import SkeletonDataset


def carve_validation(num_samples: int, fraction: float, seed: int = 0,
                     subjects: np.ndarray | None = None, by_subject: bool = True) -> np.ndarray:
    """Sorted sample ids (0..num_samples-1) held out for validation.

    By subject (when ``subjects`` is given, ``by_subject`` and there are >= 2 subjects): the
    prefix of a seeded random order of the subjects whose sample count is closest to
    ``fraction`` of the samples (at least one subject, never all). When even that holds out
    more than twice the asked fraction (few subjects: one of five is 20 %, not 5 %), or
    otherwise, a seeded random ``round(fraction * n)`` samples (at least 1 when ``fraction > 0``).
    :func:`describe_validation` says which was taken.
    """
    if fraction <= 0 or num_samples < 2:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    target = fraction * num_samples
    if by_subject and subjects is not None and len(np.unique(subjects)) >= 2:
        subjects = np.asarray(subjects)
        uniq, counts = np.unique(subjects, return_counts=True)
        perm = rng.permutation(len(uniq))[:-1]  # never all subjects
        totals = np.cumsum(counts[perm])
        k = int(np.argmin(np.abs(totals - target)))  # first (fewest subjects) among ties
        if totals[k] <= 2 * target:
            return np.flatnonzero(np.isin(subjects, uniq[perm[:k + 1]])).astype(np.int64)
    k = min(max(int(round(target)), 1), num_samples - 1)
    return np.sort(rng.choice(num_samples, k, replace=False)).astype(np.int64)


def describe_validation(ids: np.ndarray, num_samples: int, subjects: np.ndarray | None = None) -> dict:
    """What :func:`carve_validation` took: ``by`` (subject / sample / none), the fraction held out
    and the held-out subjects."""
    out = {"by": "none" if len(ids) == 0 else "sample", "held_out": int(len(ids)),
           "held_out_fraction": round(len(ids) / max(num_samples, 1), 4), "subjects": []}
    if len(ids) and subjects is not None:
        subjects = np.asarray(subjects)
        val = set(subjects[ids].tolist())
        if not val & set(np.delete(subjects, ids).tolist()):
            out["by"], out["subjects"] = "subject", sorted(val)
    return out


class Reindexed(Dataset):
    """Items ``base[ids[i]]`` re-labelled with index ``i`` (contiguous bank slots)."""

    def __init__(self, base: SkeletonDataset, ids: Sequence[int] | np.ndarray):
        self.base = base
        self.ids = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        x, y, _ = self.base[int(self.ids[i])]
        return x, y, int(i)

    @property
    def labels(self) -> np.ndarray:
        """Label of every item (``index_labels`` of the base at ``ids``)."""
        return np.asarray(self.base.index_labels)[self.ids]

    @property
    def sample_ids(self) -> np.ndarray:
        """The underlying sample (0..num_samples-1 of the base) of every item."""
        return np.asarray(self.base.sample_of(self.ids))

    @property
    def names(self) -> list[str]:
        names = self.base.names
        return [names[int(s)] for s in self.sample_ids]


def training_items(train: SkeletonDataset, val_samples: np.ndarray) -> np.ndarray:
    """Iterated indices of ``train`` (repeat included) whose sample is not held out."""
    idx = np.arange(len(train), dtype=np.int64)
    if len(val_samples) == 0:
        return idx
    return idx[~np.isin(train.sample_of(idx), val_samples)]


class EpochSampler(Sampler[list[int]]):
    """Batches of item ids for one epoch, DistributedSampler-style, resumable mid-epoch.

    The permutation of epoch ``e`` is ``torch.randperm(n)`` from a generator seeded with
    ``seed + e`` (exactly what :class:`torch.utils.data.DistributedSampler` draws); the list is
    padded by wrapping to a multiple of ``world_size`` and rank ``r`` takes ``perm[r::world]``.
    Batches of ``batch_size`` (per rank) are cut from that; ``drop_last`` drops a short last
    batch. ``start_batch`` skips the first batches (resume) without touching any data or RNG.
    With the same global batch the union of the ranks' ``k``-th batches is the single-process
    ``k``-th batch.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = True):
        self.n, self.batch_size, self.shuffle, self.seed = int(n), int(batch_size), bool(shuffle), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        total = -(-self.n // self.world_size) * self.world_size
        if total > self.n:
            perm = perm + (perm * (total // max(self.n, 1) + 1))[: total - self.n]
        return perm[self.rank:total:self.world_size]

    def batches(self) -> list[list[int]]:
        ids = self._indices()
        out = [ids[i:i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world_size)
        full = per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)
        return max(full - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch:]

    def batches_per_epoch(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)
