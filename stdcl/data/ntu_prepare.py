"""``stdcl data prepare ntu60|ntu120``: raw ``.skeleton`` folders -> CTR-GCN's npz files.

Writes ``NTU60_CS.npz`` + ``NTU60_CV.npz`` (or ``NTU120_CSub.npz`` + ``NTU120_CSet.npz``)
with the arrays CTR-GCN's ``seq_transformation.py`` saves (``x_train``, ``y_train``,
``x_test``, ``y_test``; x float32 ``(N, 300, 150)``, y one-hot float64), in the same sample
order, plus a ``<stem>.names.json`` sidecar ``{"train": [...], "test": [...]}``.

Samples are the sorted ``SsssCcccPpppRrrrAaaa`` names found in ``raw_dirs`` minus the
published missing-skeleton list; a split concatenates, for each id of its id list in
order, the samples with that performer / camera / setup id (in name order), exactly as
the reference's ``get_indices`` does. Files are parsed and denoised in parallel
(:mod:`stdcl.data.ntu_denoise`), each sample is written at once into a temporary
``.npy`` store, and the npz members are streamed from it into ZIP_STORED zips; memory
does not grow with the number of files and nothing appears in ``out_dir`` until
everything succeeded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from stdcl.data.ntu_denoise import (DROP_LENGTH, DROP_NO_SLOT, DROP_SPREAD, UnusableSample, denoise_skeleton,
                                    to_two_actors)
from stdcl.data.ntu_raw import parse_skeleton
from stdcl.errors import ConfigError, DataError
from stdcl.io import make_folder, write_json_atomic
from stdcl.logs import progress as progress_bar

log = logging.getLogger("stdcl.data.ntu_prepare")

MAX_FRAMES = 300
WIDTH = 150  # 2 actors x 25 joints x xyz
RESOURCES = Path(__file__).resolve().parent / "resources"
NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

CS60_TRAIN = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
CS60_TEST = tuple(i for i in range(1, 41) if i not in CS60_TRAIN)
CS120_TRAIN = CS60_TRAIN + (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82,
                            83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)


class NtuName(NamedTuple):
    """The ids encoded in an NTU sample name (all 1-based)."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int


def parse_sample_name(name: str) -> NtuName | None:
    """``S001C002P003R001A004`` -> ids; None when ``name`` is not an NTU sample name."""
    m = NAME_RE.fullmatch(name)
    return NtuName(*map(int, m.groups())) if m else None


@dataclass(frozen=True)
class Evaluation:
    """One protocol: samples whose ``key`` id is in ``train_ids`` / ``test_ids``, grouped in that order."""

    name: str
    key: str  # an NtuName field: performer, camera or setup
    train_ids: tuple[int, ...]
    test_ids: tuple[int, ...]


@dataclass(frozen=True)
class Benchmark:
    name: str
    prefix: str
    num_classes: int
    max_setup: int
    max_performer: int
    missing_resource: str
    evaluations: tuple[Evaluation, ...]
    duplicate_single: bool  # NTU120's script copies a lone actor into the second slot

    def accepts(self, n: NtuName) -> bool:
        return (1 <= n.action <= self.num_classes and 1 <= n.setup <= self.max_setup
                and 1 <= n.performer <= self.max_performer and 1 <= n.camera <= 3)


BENCHMARKS = {
    "ntu60": Benchmark("ntu60", "NTU60", 60, 17, 40, "ntu60_missing.txt",
                       (Evaluation("CS", "performer", CS60_TRAIN, CS60_TEST),
                        Evaluation("CV", "camera", (2, 3), (1,))), duplicate_single=False),
    "ntu120": Benchmark("ntu120", "NTU120", 120, 32, 106, "ntu120_missing.txt",
                        (Evaluation("CSub", "performer", CS120_TRAIN,
                                    tuple(i for i in range(1, 107) if i not in CS120_TRAIN)),
                         Evaluation("CSet", "setup", tuple(range(2, 33, 2)), tuple(range(1, 33, 2)))),
                        duplicate_single=True),
}


def get_benchmark(benchmark: str) -> Benchmark:
    try:
        return BENCHMARKS[benchmark.lower()]
    except KeyError:
        raise ConfigError(f"unknown NTU benchmark {benchmark!r}; expected one of: {', '.join(BENCHMARKS)}") from None


def missing_names(benchmark: str) -> set[str]:
    """The published list of samples with missing skeletons (skipped by the reference)."""
    text = (RESOURCES / get_benchmark(benchmark).missing_resource).read_text()
    return set(text.split())


def split_indices(names: Sequence[str], evaluation: Evaluation) -> tuple[list[int], list[int]]:
    """Positions in ``names`` of the train and test samples, in the reference order."""
    groups: dict[int, list[int]] = {}
    for i, name in enumerate(names):
        ids = parse_sample_name(name)
        if ids is None:
            raise DataError(None, f"{name!r} is not an NTU sample name")
        groups.setdefault(getattr(ids, evaluation.key), []).append(i)

    def ordered(id_list: tuple[int, ...]) -> list[int]:
        return [i for gid in id_list for i in groups.get(gid, [])]

    return ordered(evaluation.train_ids), ordered(evaluation.test_ids)


@dataclass
class PrepareSummary:
    """What :func:`prepare_ntu` did."""

    benchmark: str
    out_dir: Path
    outputs: list[Path] = field(default_factory=list)
    files_found: int = 0  # NTU-named .skeleton files in the raw folders
    files_processed: int = 0  # turned into samples
    skipped_files: dict[str, int] = field(default_factory=dict)  # reason -> files
    dropped_frames: dict[str, int] = field(default_factory=dict)  # reason -> frames
    dropped_bodies: dict[str, int] = field(default_factory=dict)  # reason -> bodies
    samples: dict[str, dict[str, int]] = field(default_factory=dict)  # output stem -> {train, test}
    seconds: float = 0.0

    def __str__(self) -> str:
        rows = [("files found", self.files_found), ("files processed", self.files_processed)]
        rows += [(f"skipped: {k}", v) for k, v in self.skipped_files.items()]
        rows += [(f"dropped frames: {k}", v) for k, v in self.dropped_frames.items()]
        rows += [(f"dropped bodies: {k}", v) for k, v in self.dropped_bodies.items()]
        for stem, counts in self.samples.items():
            rows += [(f"{stem} {part}", n) for part, n in counts.items()]
        width = max(len(k) for k, _ in rows)
        lines = [f"prepare {self.benchmark} -> {self.out_dir} ({self.seconds:.1f} s)"]
        lines += [f"  {k:<{width}}  {v:>8,}" for k, v in rows]
        return "\n".join(lines)


def _find_files(raw_dirs: Sequence[Path], skipped: Counter) -> dict[str, Path]:
    """``{sample name: path}`` of the ``.skeleton`` files; the first folder wins on duplicates."""
    found: dict[str, Path] = {}
    seen: set[Path] = set()
    for d in raw_dirs:
        if not d.is_dir():
            raise DataError(d, "raw skeleton folder not found" if not d.exists() else "not a folder")
        if d.resolve() in seen:
            continue
        seen.add(d.resolve())
        with os.scandir(d) as it:
            for entry in it:
                if not entry.name.endswith(".skeleton"):
                    continue
                name = entry.name[: -len(".skeleton")]
                if parse_sample_name(name) is None:
                    reason, detail = "not an NTU sample name", "not an NTU sample name (SsssCcccPpppRrrrAaaa)"
                elif name in found:
                    reason, detail = "duplicate name", f"{name} was already found in {found[name].parent}"
                else:
                    found[name] = Path(entry.path)
                    continue
                skipped[reason] += 1
                # a few warnings, the rest at debug level (a wrong folder can hold thousands)
                log.log(logging.WARNING if skipped[reason] <= 5 else logging.DEBUG, "%s: ignored, %s",
                        entry.path, detail)
    return found


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


def _prepare_one(task: tuple[int, str, bool]) -> tuple[int, Any, dict[str, Any]]:
    """Worker: ``(k, x (T, 150) float32 | None, info)``; errors travel back as data."""
    k, path, duplicate_single = task
    try:
        res = denoise_skeleton(parse_skeleton(path), center=True)
    except UnusableSample as e:
        return k, None, {"unusable": e.problem}
    except DataError as e:  # DataError's constructor arguments do not survive pickling
        return k, None, {"error": (e.path, e.problem, e.where)}
    if res.num_frames > MAX_FRAMES:
        return k, None, {"error": (path, f"{res.num_frames} frames after denoising; the NTU arrays hold at "
                                         f"most {MAX_FRAMES}", None)}
    info = {"zero": len(res.zero_body_frames), "removed": len(res.removed_frames),
            "bodies": Counter(reason for _, reason, _ in res.dropped_bodies), "log": res.log_lines()}
    return k, to_two_actors(res.joints, duplicate_single), info


def _results(tasks: list[tuple[int, str, bool]], workers: int) -> Iterator[tuple[int, Any, dict[str, Any]]]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_prepare_one, tasks)
        return
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    pool = mp.get_context().Pool(workers, initializer=_init_worker)
    try:
        yield from pool.imap_unordered(_prepare_one, tasks, chunksize=chunk)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered array (format 1.0)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return buf.getvalue()


class _Store:
    """The temporary ``(N, 300, 150)`` float32 ``.npy`` every sample is written into."""

    def __init__(self, path: Path, n: int):
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, MAX_FRAMES, WIDTH))
        self.offset = mm.offset  # header length; the file is created sparse (all zeros)
        del mm
        self.row_bytes = MAX_FRAMES * WIDTH * 4
        self.fd = os.open(path, os.O_RDWR)

    def write(self, k: int, x: np.ndarray) -> None:
        os.pwrite(self.fd, np.ascontiguousarray(x, dtype=np.float32).tobytes(), self.offset + k * self.row_bytes)

    def read(self, k: int) -> bytes:
        return os.pread(self.fd, self.row_bytes, self.offset + k * self.row_bytes)

    def close(self) -> None:
        os.close(self.fd)


def _write_npz(path: Path, store: _Store, parts: list[tuple[str, list[int]]], labels: np.ndarray,
               num_classes: int) -> None:
    """An ``np.savez``-compatible zip (members ``x_train.npy``, ``y_train.npy``, ...) streamed from the store."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for part, idx in parts:
            with zf.open(f"x_{part}.npy", "w", force_zip64=True) as fh:
                fh.write(_npy_header((len(idx), MAX_FRAMES, WIDTH), np.float32))
                for k in idx:
                    fh.write(store.read(k))
            with zf.open(f"y_{part}.npy", "w", force_zip64=True) as fh:
                fh.write(_npy_header((len(idx), num_classes), np.float64))
                for s in range(0, len(idx), 4096):
                    lab = labels[idx[s:s + 4096]]
                    y = np.zeros((len(lab), num_classes))
                    y[np.arange(len(lab)), lab] = 1
                    fh.write(y.tobytes())


def _free_space_check(out_dir: Path, n: int, n_outputs: int) -> None:
    need = n * MAX_FRAMES * WIDTH * 4 * n_outputs
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise DataError(out_dir, f"not enough free disk space: the outputs need about {need / 1e9:.1f} GB, "
                                 f"{free / 1e9:.1f} GB free")
    if free < need * 1.5:
        log.warning("%s: %.1f GB free; the outputs and the temporary store need up to %.1f GB",
                    out_dir, free / 1e9, need * 1.5 / 1e9)


class _Collector:
    """Writes worker results into the store and tallies what was skipped or dropped."""

    def __init__(self, store: _Store, names: list[str], paths: list[str], skipped: Counter):
        self.store, self.names, self.paths, self.skipped = store, names, paths, skipped
        self.ok = np.zeros(len(names), dtype=bool)
        self.frames: Counter = Counter({"no body in frame": 0, "both actors missing": 0})
        self.bodies: Counter = Counter({DROP_LENGTH: 0, DROP_SPREAD: 0, DROP_NO_SLOT: 0})

    def add(self, k: int, x: np.ndarray | None, info: dict[str, Any]) -> None:
        if "error" in info:
            raise DataError(*info["error"])
        if x is None:
            self.skipped["unusable (the reference pipeline fails on it)"] += 1
            log.warning("%s: skipped: %s", self.paths[k], info["unusable"])
            return
        self.store.write(k, x)
        self.ok[k] = True
        self.frames["no body in frame"] += info["zero"]
        self.frames["both actors missing"] += info["removed"]
        self.bodies.update(info["bodies"])
        for line in info["log"]:
            log.debug("%s", line)


def _select_names(found: dict[str, Path], bench: Benchmark, skipped: Counter) -> list[str]:
    missing = missing_names(bench.name)
    names = []
    for name in sorted(found):
        if name in missing:
            skipped["in the missing-skeleton list"] += 1
        elif not bench.accepts(parse_sample_name(name)):
            skipped[f"not part of {bench.name}"] += 1
        else:
            names.append(name)
    return names


def sample_names(raw_dirs: Iterable[str | os.PathLike], benchmark: str) -> list[str]:
    """The sample names :func:`prepare_ntu` processes, in order (sorted, missing list removed)."""
    bench = get_benchmark(benchmark)
    return _select_names(_find_files([Path(d) for d in raw_dirs], Counter()), bench, Counter())


def prepare_ntu(benchmark: str, raw_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
                out_dir: str | os.PathLike, workers: int = 1, progress: bool = True) -> PrepareSummary:
    """Build the CTR-GCN npz files of ``benchmark`` ("ntu60" or "ntu120") from raw folders.

    ``raw_dirs``: one or more folders of ``.skeleton`` files (NTU120: typically
    ``nturgb+d_skeletons`` and the extension folder); only the files present are used.
    ``workers``: parallel parser processes (``<= 0``: one per CPU). Raises
    :class:`DataError` on a malformed file (nothing is written then).
    """
    t0 = time.perf_counter()
    bench = get_benchmark(benchmark)
    if isinstance(raw_dirs, (str, os.PathLike)):
        raw_dirs = [raw_dirs]
    raw_dirs = [Path(d) for d in raw_dirs]
    out_dir = Path(out_dir)
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    summary = PrepareSummary(bench.name, out_dir)
    skipped: Counter = Counter()
    found = _find_files(raw_dirs, skipped)
    names = _select_names(found, bench, skipped)
    if not names:
        raise DataError(raw_dirs[0], f"no {bench.name} .skeleton files in {', '.join(map(str, raw_dirs))}")
    n = len(names)
    log.info("%s: %d files to process (%d found)", bench.name, n, len(found))

    make_folder(out_dir)
    _free_space_check(out_dir, n, len(bench.evaluations))
    tmp = Path(tempfile.mkdtemp(prefix=".stdcl-prepare-", dir=out_dir))
    try:
        store = _Store(tmp / "samples.npy", n)
        try:
            paths = [str(found[name]) for name in names]
            col = _Collector(store, names, paths, skipped)
            tasks = [(k, p, bench.duplicate_single) for k, p in enumerate(paths)]
            with contextlib.closing(_results(tasks, workers)) as results:  # closing stops the pool
                for k, x, info in progress_bar(results, desc=f"prepare {bench.name}", total=n, unit="file",
                                               disable=None if progress else True):
                    col.add(k, x, info)
            labels = np.array([parse_sample_name(nm).action - 1 for nm in names], dtype=np.int64)
            kept_pos = np.flatnonzero(col.ok)
            kept = [names[k] for k in kept_pos]
            finished: list[Path] = []
            for ev in bench.evaluations:
                stem = f"{bench.prefix}_{ev.name}"
                train, test = split_indices(kept, ev)
                train_k, test_k = kept_pos[train].tolist(), kept_pos[test].tolist()
                _write_npz(tmp / f"{stem}.npz", store, [("train", train_k), ("test", test_k)], labels,
                           bench.num_classes)
                write_json_atomic(tmp / f"{stem}.names.json",
                                  {"train": [names[k] for k in train_k], "test": [names[k] for k in test_k]})
                finished += [tmp / f"{stem}.npz", tmp / f"{stem}.names.json"]
                summary.samples[stem] = {"train": len(train_k), "test": len(test_k)}
        finally:
            store.close()
        for src in finished:
            os.replace(src, out_dir / src.name)
            summary.outputs.append(out_dir / src.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary.files_found = len(found)
    summary.files_processed = int(col.ok.sum())
    summary.skipped_files = dict(skipped)
    summary.dropped_frames = dict(col.frames)
    summary.dropped_bodies = dict(col.bodies)
    summary.seconds = time.perf_counter() - t0
    log.debug("%s", summary)
    return summary
