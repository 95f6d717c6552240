"""``stdcl data inspect``: what a path holds, for any supported source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource
from stdcl.data.registry import open_source, sniff_splits
from stdcl.errors import DataError
from stdcl.logs import progress


@dataclass
class SplitStats:
    """Statistics of one split."""

    name: str
    samples: int
    classes: int
    class_counts: dict[str, int]
    frames: dict[str, float]  # min / mean / median / max valid frames
    persons: dict[int, int]  # persons present -> samples
    nan_samples: int
    zero_frames: int  # all-zero frames inside the valid range
    inspected: int  # samples actually read (a limit may sample)


@dataclass
class Report:
    """What ``inspect_path`` found."""

    path: str
    format: str
    layout: str
    class_names: list[str]
    splits: list[SplitStats] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path}", f"  format: {self.format}", f"  layout: {self.layout}",
                 f"  classes: {len(self.class_names)} ({', '.join(self.class_names[:5])}"
                 f"{', ...' if len(self.class_names) > 5 else ''})"]
        for s in self.splits:
            f = s.frames
            lines += [f"  split {s.name}: {s.samples} samples"
                      + (f" ({s.inspected} inspected)" if s.inspected < s.samples else ""),
                      f"    valid frames: min {f['min']:.0f}, mean {f['mean']:.1f}, median {f['median']:.0f}, "
                      f"max {f['max']:.0f}",
                      "    persons: " + ", ".join(f"{k}: {v}" for k, v in sorted(s.persons.items())),
                      f"    samples with NaN: {s.nan_samples}; all-zero frames inside sequences: {s.zero_frames}",
                      f"    classes present: {sum(1 for c in s.class_counts.values() if c)} / {s.classes}"]
        return "\n".join(lines)


def split_stats(source: SampleSource, limit: int | None = None, seed: int = 0) -> SplitStats:
    """Read (up to ``limit``, evenly spread) samples of a source and summarise them."""
    n = len(source)
    idx = np.arange(n) if limit is None or limit >= n else np.sort(
        np.random.default_rng(seed).choice(n, limit, replace=False))
    lengths, persons, nan, zero = [], {}, 0, 0
    for i in progress(idx, desc=f"inspect {source.split}", total=len(idx), unit="sample"):
        try:
            x = source.read(int(i))
        except DataError as e:
            if "NaN" not in str(e):
                raise
            nan += 1
            continue
        if np.isnan(x).any():
            nan += 1
            x = np.nan_to_num(x)
        nz = np.abs(x).sum(axis=(0, 2))  # (T, M)
        frame_nz = nz.sum(1) > 0
        valid = np.flatnonzero(frame_nz)
        if valid.size:
            lengths.append(valid[-1] + 1)
            zero += int((~frame_nz[valid[0]:valid[-1] + 1]).sum())
        else:
            lengths.append(0)
        p = int((nz.sum(0) > 0).sum())
        persons[p] = persons.get(p, 0) + 1
    lengths_a = np.asarray(lengths or [0])
    counts = np.bincount(np.asarray(source.labels), minlength=len(source.class_names))
    return SplitStats(source.split, n, len(source.class_names),
                      {c: int(k) for c, k in zip(source.class_names, counts)},
                      {"min": float(lengths_a.min()), "mean": float(lengths_a.mean()),
                       "median": float(np.median(lengths_a)), "max": float(lengths_a.max())},
                      persons, nan, zero, len(idx))


def _sources(path: Path) -> list[SampleSource]:
    """Open every split of whatever ``path`` holds (the first dataset whose ``sniff`` recognises it)."""
    found = sniff_splits(path)
    if found is not None:
        name, splits = found
        return [open_source(name, path, s) for s in splits]
    if path.is_dir():
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            return _sources(npz[0])
        raise DataError(path, "not a recognised dataset folder (NW-UCLA all_sqe, a folder with one .npz, UEA NATOPS, "
                        "or raw .skeleton files: use `stdcl data inspect FILE.skeleton` for one file)")
    if path.suffix == ".npy":
        raise DataError(path, "a bare .npy needs labels: wrap it in a plain-numpy .npz (see stdcl.data.numpy_source)")
    raise DataError(path, "unrecognised file type (expected a folder, .npz, .pkl, .json, .ts or .skeleton)")


def inspect_path(path: str | Path, limit: int | None = None) -> Report:
    """Summarise any supported dataset path (``limit`` samples per split at most)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    sources = _sources(path)
    first = sources[0]
    rep = Report(str(path), first.format, first.layout.name, list(first.class_names))
    rep.splits = [split_stats(s, limit) for s in sources]
    return rep
