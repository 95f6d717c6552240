"""Training-time probes: every embedding space of a fixed probe subset, kept at step 0 and at evaluations.

A run with ``probe.enabled`` (the default) picks a seeded, class-stratified subset of at most
``probe.max_samples`` items of its ``probe.split`` (``test``, or the carved ``val`` split) once,
and at step 0 and at the end of up to ``probe.snapshots`` evaluation epochs (evenly spaced, the
last always included, and the run's final step) embeds it in every space the model has
(:func:`stdcl.head.spaces.embedding_spaces`: the head's ``spatial`` / ``temporal`` when STD-CL is
on, ``spatial_pooled``, ``temporal_pooled``, ``global``). ``stdcl analyze evolution`` and the
app's Evolution page read them back with :func:`read_probes`.

Files (rank 0 writes them, each atomically)::

    RUN/probes/index.json           the subset (split, item indices, names, labels), class names and meta,
                                    the stored width, the spaces
    RUN/probes/step-<step>.npz      one snapshot: epoch (float), step, pred (N,) int16 and per space
                                    ``space:<name>`` (N, d) float16, ``energy:<name>``, ``width:<name>``

Storage is compact (float16, a few MB per run): every row is L2-normalised first (the geometry
of the contrastive loss and of every separation metric); a space wider than ``probe.dim`` is
stored as its coordinates on the top ``probe.dim`` right singular vectors of the unit rows
(uncentred, so dot products approximate cosines as well as any ``dim``-wide code can), and
``energy`` is the fraction of the rows' squared norm kept (1.0 when stored whole).

The probe reads items without a DataLoader and touches no random stream, so a run trains the
same with probes on or off; a resumed run rewrites exactly the snapshots an uninterrupted one
writes (those after the resumed step are dropped first).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from stdcl.data.npz_members import member_names, read_member
from stdcl.data.subsets import stratified_subset
from stdcl.errors import DataError
from stdcl.head.spaces import embedding_spaces
from stdcl.io import atomic_path, make_folder, read_json, write_json_atomic
from stdcl.vectors import unit_rows

log = logging.getLogger("stdcl.train")

PROBE_DIR = "probes"
INDEX = "index.json"
FORMAT = "stdcl-probes/1"
SPACE_ORDER = ("spatial", "temporal", "spatial_pooled", "temporal_pooled", "global")
_SNAPSHOT = re.compile(r"^step-(\d{8,})\.npz$")


def probe_epochs(epochs: int, eval_every: int, snapshots: int) -> list[int]:
    """The 1-based epochs at whose end a snapshot is taken: the evaluation epochs (every ``eval_every``, and
    the last), thinned to at most ``snapshots`` evenly spaced ones that always include the last."""
    if epochs < 1 or snapshots < 1:
        return []
    evals = sorted(set(range(eval_every, epochs + 1, eval_every)) | {epochs}) if eval_every > 0 else [epochs]
    if len(evals) <= snapshots:
        return evals
    picks = np.unique(np.round(np.linspace(len(evals) - 1, 0, snapshots)).astype(int))
    return [evals[i] for i in sorted(picks)]


def reduce_rows(x: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """``(coords float16 (N, min(width, dim)), energy)``: unit rows, or their coordinates on the top ``dim``
    right singular vectors (uncentred) when wider; ``energy`` = kept share of the rows' squared norm."""
    unit = unit_rows(np.asarray(x, dtype=np.float64))
    total = float((unit ** 2).sum())
    if unit.shape[1] > dim:
        if unit.shape[0] <= unit.shape[1]:  # the (N, N) Gram matrix is the smaller problem
            w, u = np.linalg.eigh(unit @ unit.T)
            order = np.argsort(w)[::-1][:dim]
            coords = u[:, order] * np.sqrt(np.clip(w[order], 0, None))
        else:
            w, v = np.linalg.eigh(unit.T @ unit)
            coords = unit @ v[:, np.argsort(w)[::-1][:dim]]
        coords = _fixed_signs(coords)
    else:
        coords = unit
    energy = float((coords ** 2).sum() / total) if total > 0 else 1.0
    return coords.astype(np.float16), min(energy, 1.0)


def _fixed_signs(coords: np.ndarray) -> np.ndarray:
    """Each component's sign chosen so its largest-magnitude entry is positive (eigenvectors have no sign)."""
    if not coords.size:
        return coords
    big = coords[np.abs(coords).argmax(0), np.arange(coords.shape[1])]
    return coords * np.where(big < 0, -1.0, 1.0)


class ProbeRecorder:
    """Chooses the probe subset of a run and writes its snapshots (only on the main rank).

    Args:
        run_dir: the run directory.
        cfg: the resolved config (its ``probe`` section).
        dataset: the probe split's dataset (items ``(x, label, index)``) with ``labels`` and ``names``.
        class_names, class_meta: of the run's data.
        split: ``test`` or ``val`` (recorded).
        enabled: write files (False on ranks other than 0).
    """

    def __init__(self, run_dir: Path, cfg: dict[str, Any], dataset: Any, class_names: Sequence[str],
                 class_meta: Sequence[dict] | None, split: str, enabled: bool = True):
        p = cfg["probe"]
        self.folder = Path(run_dir) / PROBE_DIR
        self.dataset = dataset
        self.dim = int(p["dim"])
        self.batch_size = int(cfg["train"]["eval_batch_size"])
        self.enabled = enabled
        labels = np.asarray(dataset.labels, dtype=np.int64)
        self.items = stratified_subset(labels, int(p["max_samples"]), int(p["seed"]))
        self.index = {"format": FORMAT, "split": split, "seed": int(p["seed"]), "dim": self.dim,
                      "indices": self.items.tolist(), "names": [str(dataset.names[i]) for i in self.items],
                      "labels": labels[self.items].tolist(), "class_names": list(class_names),
                      "class_meta": list(class_meta) if class_meta else None,
                      "stdcl": bool(cfg["stdcl"]["enabled"]), "encoder": cfg["model"]["encoder"]}

    def start(self) -> None:
        """Write ``index.json`` (a new run, or a resumed one whose folder lacks it)."""
        if self.enabled:
            make_folder(self.folder)
            write_json_atomic(self.folder / INDEX, self.index)

    def truncate_after(self, global_step: int) -> None:
        """Resume: drop snapshots taken after ``global_step`` (an uninterrupted run writes them again)."""
        if not self.enabled or not self.folder.is_dir():
            return
        for f in self.folder.iterdir():
            m = _SNAPSHOT.match(f.name)
            if m and int(m.group(1)) > global_step:
                f.unlink()

    @torch.no_grad()
    def record(self, encoder: torch.nn.Module, head: torch.nn.Module | None, global_step: int, epoch: float,
               device: torch.device) -> Path | None:
        """Embed the subset and write ``step-<global_step>.npz``; encoder and head are left in eval mode."""
        if not self.enabled:
            return None
        t0 = time.perf_counter()
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(self.items), self.batch_size):
            ids = self.items[start:start + self.batch_size]
            x = torch.stack([torch.as_tensor(self.dataset[int(i)][0]) for i in ids]).to(device)
            for k, v in embedding_spaces(encoder, head, x).items():
                parts.setdefault(k, []).append(v.float().cpu().numpy())
        arrays: dict[str, np.ndarray] = {"epoch": np.float64(epoch), "step": np.int64(global_step)}
        logits = np.concatenate(parts.pop("logits"))
        arrays["pred"] = logits.argmax(1).astype(np.int16)
        for name in SPACE_ORDER:
            if name in parts:
                x = np.concatenate(parts[name])
                coords, energy = reduce_rows(x, self.dim)
                arrays[f"space:{name}"] = coords
                arrays[f"energy:{name}"] = np.float64(energy)
                arrays[f"width:{name}"] = np.int64(x.shape[1])
        path = self.folder / f"step-{global_step:08d}.npz"
        make_folder(self.folder)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        log.info("probes: %d samples of the %s split at step %d in %.1f s", len(self.items), self.index["split"],
                 global_step, time.perf_counter() - t0)
        return path


# ------------------------------------------------------------------------------------- reading


@dataclass
class Snapshot:
    """One probe snapshot: spaces ``{name: (N, d) float32}`` (unit rows or their top components)."""

    epoch: float
    step: int
    pred: np.ndarray  # (N,) int64
    spaces: dict[str, np.ndarray]
    energy: dict[str, float]
    width: dict[str, int]


@dataclass
class ProbeSeries:
    """A run's probes: the subset and its snapshots in step order."""

    run_dir: Path
    split: str
    indices: np.ndarray
    names: list[str]
    labels: np.ndarray
    class_names: list[str]
    class_meta: list[dict] | None
    dim: int
    stdcl: bool
    encoder: str
    snapshots: list[Snapshot] = field(default_factory=list)

    @property
    def spaces(self) -> list[str]:
        """Spaces present in every snapshot, in :data:`SPACE_ORDER`."""
        if not self.snapshots:
            return []
        common = set.intersection(*(set(s.spaces) for s in self.snapshots))
        return [s for s in SPACE_ORDER if s in common]

    @property
    def epochs(self) -> list[float]:
        return [s.epoch for s in self.snapshots]

    def accuracy(self, i: int) -> float:
        """Top-1 of snapshot ``i`` on the probe subset."""
        return float((self.snapshots[i].pred == self.labels).mean()) if len(self.labels) else float("nan")


def probe_folder(source: str | os.PathLike) -> Path:
    """Where the probes of ``source`` live: ``RUN/probes`` for a run directory or one of its checkpoints,
    ``X.probes/`` beside an exported ``X.safetensors`` (``stdcl export --with-probes``), or the folder itself."""
    source = Path(source)
    if source.is_dir():
        return source if (source / INDEX).is_file() else source / PROBE_DIR
    if source.suffix == ".json":
        source = source.with_suffix(".safetensors")
    beside = source.with_name(source.name.removesuffix(".safetensors") + ".probes")
    if beside.is_dir() or not (source.parent / PROBE_DIR).is_dir():
        return beside
    return source.parent / PROBE_DIR


def has_probes(source: str | os.PathLike) -> bool:
    """Whether ``source`` (see :func:`probe_folder`) has a probe index and at least one snapshot."""
    folder = probe_folder(source)
    return (folder / INDEX).is_file() and any(_SNAPSHOT.match(f.name) for f in folder.iterdir())


def copy_probes(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy the probes of ``source`` to the folder ``out`` (checked first; written under a temporary name)."""
    import shutil
    import tempfile

    folder = probe_folder(source)
    read_probes(folder)
    out = Path(out)
    make_folder(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for f in folder.iterdir():
            if f.name == INDEX or _SNAPSHOT.match(f.name):
                shutil.copyfile(f, tmp / f.name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder mode
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_probes(source: str | os.PathLike) -> ProbeSeries:
    """Read and check every field of the probes of ``source`` (a run directory, a checkpoint or a probe
    folder: :func:`probe_folder`); a one-line :class:`DataError` naming the file when anything is wrong."""
    folder = probe_folder(source)
    index_path = folder / INDEX
    if not index_path.is_file():
        raise DataError(Path(source), "has no training probes (probes/index.json); train with probe.enabled=true")
    idx = read_json(index_path, "probe index")
    series = _read_index(idx, Path(source), index_path)
    files = sorted((f for f in folder.iterdir() if _SNAPSHOT.match(f.name)), key=lambda f: f.name)
    if not files:
        raise DataError(folder, "holds no probe snapshot (step-*.npz)")
    k = len(series.class_names)
    for f in files:
        series.snapshots.append(_read_snapshot(f, len(series.labels), k, series.dim))
    return series


def _read_index(idx: Any, run_dir: Path, path: Path) -> ProbeSeries:
    def bad(what: str) -> DataError:
        return DataError(path, what)

    if not isinstance(idx, dict) or idx.get("format") != FORMAT:
        raise bad(f"not a probe index (format is not {FORMAT!r})")
    for key, typ in (("split", str), ("indices", list), ("names", list), ("labels", list), ("class_names", list),
                     ("dim", int), ("stdcl", bool), ("encoder", str)):
        if not isinstance(idx.get(key), typ) or (typ is int and isinstance(idx.get(key), bool)):
            raise bad(f"'{key}' is missing or not a {typ.__name__}")
    n = len(idx["indices"])
    if len(idx["names"]) != n or len(idx["labels"]) != n:
        raise bad(f"{n} indices but {len(idx['names'])} names and {len(idx['labels'])} labels")
    if not all(isinstance(c, str) for c in idx["class_names"]) or not idx["class_names"]:
        raise bad("'class_names' must be a non-empty list of text")
    k = len(idx["class_names"])
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in idx["indices"]):
        raise bad("'indices' must be whole numbers >= 0")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < k for v in idx["labels"]):
        raise bad(f"'labels' must be class numbers in [0, {k})")
    if not all(isinstance(v, str) for v in idx["names"]):
        raise bad("'names' must be text")
    if not 1 <= idx["dim"] <= 4096:
        raise bad(f"'dim' must lie in [1, 4096], got {idx['dim']}")
    meta = idx.get("class_meta")
    if meta is not None and (not isinstance(meta, list) or len(meta) != k or not all(isinstance(m, dict) for m in meta)):
        raise bad(f"'class_meta' must be null or {k} mappings")
    return ProbeSeries(run_dir, idx["split"], np.asarray(idx["indices"], np.int64), list(idx["names"]),
                       np.asarray(idx["labels"], np.int64), list(idx["class_names"]), meta, idx["dim"],
                       idx["stdcl"], idx["encoder"])


def _read_snapshot(path: Path, n: int, k: int, dim: int) -> Snapshot:
    a = {key: read_member(path, key) for key in member_names(path)}  # every container error is a DataError

    def scalar(key: str, kind: str) -> float:
        v = a.get(key)
        if not isinstance(v, np.ndarray) or v.shape != () or v.dtype.kind not in kind:
            raise DataError(path, f"'{key}' is missing or not a number")
        f = float(v)
        if not math.isfinite(f) or f < 0:
            raise DataError(path, f"'{key}' must be finite and >= 0, got {f}")
        return f

    epoch, step = scalar("epoch", "fiu"), int(scalar("step", "iu"))
    pred = a.get("pred")
    if not isinstance(pred, np.ndarray) or pred.shape != (n,) or pred.dtype.kind not in "iu" \
            or (n and (pred.min() < 0 or pred.max() >= k)):
        raise DataError(path, f"'pred' must be {n} class numbers in [0, {k})")
    spaces, energy, width = {}, {}, {}
    for key in a:
        if not key.startswith("space:"):
            continue
        name = key.split(":", 1)[1]
        x = a[key]
        if name not in SPACE_ORDER:
            raise DataError(path, f"unknown space {name!r}")
        if x.ndim != 2 or x.shape[0] != n or not 1 <= x.shape[1] <= dim or x.dtype != np.float16:
            raise DataError(path, f"'{key}' must be float16 ({n}, 1..{dim}), got {x.dtype} {x.shape}")
        if not np.isfinite(x).all():
            raise DataError(path, f"'{key}' holds NaN or infinite values")
        energy[name] = scalar(f"energy:{name}", "f")
        width[name] = int(scalar(f"width:{name}", "iu"))
        if energy[name] > 1.0 + 1e-6 or width[name] < x.shape[1]:
            raise DataError(path, f"'{name}': energy {energy[name]} or width {width[name]} out of range")
        spaces[name] = x.astype(np.float32)
    if not spaces:
        raise DataError(path, "holds no embedding space")
    return Snapshot(epoch, step, pred.astype(np.int64), spaces, energy, width)


__all__ = ["FORMAT", "PROBE_DIR", "ProbeRecorder", "ProbeSeries", "SPACE_ORDER", "Snapshot", "copy_probes",
           "has_probes", "probe_epochs", "probe_folder", "read_probes", "reduce_rows"]
