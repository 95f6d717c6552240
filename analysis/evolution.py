"""How the embedding spaces form during training, from a run's probes (:mod:`stdcl.train.probes`).

:func:`load_evolution` reads a run's (or an exported checkpoint's) probe snapshots and computes,
for every space, 2-D projections **aligned across snapshots** (so a point moves smoothly from one
epoch to the next) and the separation metrics of every snapshot, computed on the stored probes
themselves (never on the 2-D projections):

- ``procrustes`` (fast): per snapshot a PCA of the unit rows to 2-D scaled to unit RMS radius, each
  rotated/reflected onto the previous one by orthogonal Procrustes (so distances within a snapshot are
  the PCA's up to that one scale);
- ``aligned-umap``: umap-learn's AlignedUMAP over all snapshots, every sample related to itself
  in the next snapshot (cosine distance).

Metrics per snapshot and space: silhouette (cosine), leave-one-out k-NN accuracy, Fisher ratio (and
the rest of :func:`analysis.metrics.separation_metrics`), and for the twin pairs of the classes
(spatial twins: left vs right; temporal twins: sit down vs stand up) the centroid cosine distance
``1 - cos`` and the binary k-NN accuracy of every pair (:func:`analysis.twins.twin_separation`).
Results are cached on disk keyed by the probe files' content; the bundled demo pair's (Procrustes, every
space) ship in ``checkpoints/cache/evolution`` (``python -m analysis.bundled``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from analysis.bundled import BUNDLED_CACHE
from analysis.cache import array_json, file_digest, json_array, load_arrays, make_key, save_arrays
from analysis.embeddings import Embeddings
from analysis.metrics import separation_metrics, unit_rows
from analysis.twins import twin_pairs, twin_separation
from stdcl.checkpoint import BUNDLED_PREFIX
from stdcl.errors import ConfigError
from stdcl.train.probes import INDEX, ProbeSeries, probe_folder, read_probes

METHODS = ("procrustes", "aligned-umap")
METHOD_NAMES = {"procrustes": "Procrustes-aligned PCA", "aligned-umap": "AlignedUMAP"}
#: The per-snapshot curves shown by the report and the app: (key, name, better).
CURVES = (("silhouette", "silhouette (cosine)", "higher"), ("knn_accuracy", "k-NN accuracy", "higher"),
          ("fisher", "Fisher ratio", "higher"), ("spatial_twin_distance", "spatial-twin centroid distance", "higher"),
          ("temporal_twin_distance", "temporal-twin centroid distance", "higher"))
CACHE_VERSION = 1
Progress = Callable[[str], None]


@dataclass
class Evolution:
    """A run's probe snapshots with aligned projections and metrics, every list in snapshot order."""

    label: str
    series: ProbeSeries
    method: str
    coords: dict[str, np.ndarray]  # space -> (S, N, 2) float32
    metrics: list[dict[str, dict[str, Any]]]  # per snapshot: space -> curve values (+ overall metrics)
    twins: list[dict[str, list[dict[str, Any]]]] = field(default_factory=list)  # per snapshot: space -> pair rows

    @property
    def spaces(self) -> list[str]:
        return list(self.coords)

    @property
    def epochs(self) -> list[float]:
        return self.series.epochs

    @property
    def accuracy(self) -> list[float]:
        return [self.series.accuracy(i) for i in range(len(self.series.snapshots))]

    def curve(self, space: str, key: str) -> list[float | None]:
        """One metric of one space over the snapshots (None where undefined)."""
        return [m[space].get(key) for m in self.metrics]

    def embeddings(self, i: int) -> Embeddings:
        """Snapshot ``i`` as :class:`~analysis.embeddings.Embeddings` (its predictions as one-hot logits), so
        every figure of the embedding pages draws it."""
        s = self.series
        snap = s.snapshots[i]
        logits = np.eye(len(s.class_names), dtype=np.float32)[snap.pred]
        return Embeddings(dict(snap.spaces), logits, s.labels, list(s.names), s.indices, list(s.class_names),
                          s.class_meta, "head" if s.stdcl else "pooled",
                          make_key("probe-snapshot", str(s.run_dir), self.label, snap.step), {"epoch": snap.epoch})

    def nearest_snapshot(self, epoch: float) -> int:
        """The snapshot whose epoch is nearest ``epoch`` (the earlier one on a tie): another run's "same epoch"."""
        return int(np.argmin(np.abs(np.asarray(self.epochs, np.float64) - float(epoch))))

    def rows_named(self, names: Sequence[str]) -> np.ndarray:
        """Rows of the probe samples called ``names`` (samples matched across runs by name), in row order."""
        return np.flatnonzero(np.isin(np.asarray(self.series.names, dtype=object), list(names)))

    def matching_space(self, space: str) -> str | None:
        """This run's space in the role of ``space``: itself when probed, else its pooled / head counterpart
        (a baseline has no head: its spatial and temporal spaces are the pooled ones); None when neither."""
        have = self.series.spaces
        if space in have:
            return space
        other = _COUNTERPART.get(space)
        return other if other in have else None

    def pair_at(self, pair: Sequence[int], i: int) -> list[dict[str, Any]]:
        """Per space the twin ``pair``'s separation at snapshot ``i``: ``space``, ``centroid_distance``
        (``1 - cos`` of the two class centroids) and binary ``knn_accuracy`` (None where undefined)."""
        want = sorted(int(c) for c in pair)
        out = []
        for space, rows in (self.twins[i] if self.twins else {}).items():
            for r in rows:
                if sorted(r["classes"]) == want:
                    cc = r.get("centroid_cosine")
                    out.append({"space": space, "centroid_distance": None if cc is None else 1.0 - cc,
                                "knn_accuracy": r.get("knn_accuracy")})
        return out


#: A head space and the pooled space in the same role (both ways).
_COUNTERPART = {"spatial": "spatial_pooled", "temporal": "temporal_pooled", "spatial_pooled": "spatial",
                "temporal_pooled": "temporal"}


# ------------------------------------------------------------------------------------- projections


def procrustes_pca(frames: Sequence[np.ndarray]) -> np.ndarray:
    """``(S, N, 2)``: each frame's 2-D PCA of its unit rows at unit RMS radius, rotated (or reflected) onto the
    previous frame."""
    from scipy.linalg import orthogonal_procrustes

    out, prev = [], None
    for x in frames:
        xc = unit_rows(np.asarray(x, np.float64))
        xc = xc - xc.mean(0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        y = u[:, :2] * s[:2]
        if y.shape[1] < 2:
            y = np.pad(y, ((0, 0), (0, 2 - y.shape[1])))
        rms = np.sqrt((y ** 2).sum(1).mean())
        y = y / rms if rms > 0 else y  # one scale per frame: the picture shows shape, the metrics the geometry
        if prev is None:  # a fixed orientation for the first frame: largest-magnitude entry positive
            big = y[np.abs(y).argmax(0), [0, 1]]
            y = y * np.where(big < 0, -1.0, 1.0)
        else:
            r, _ = orthogonal_procrustes(y, prev)
            y = y @ r
        out.append(y)
        prev = y
    return np.stack(out).astype(np.float32)


def aligned_umap(frames: Sequence[np.ndarray], seed: int = 0, n_neighbors: int = 15, n_epochs: int = 200) -> np.ndarray:
    """``(S, N, 2)``: umap-learn's AlignedUMAP of the frames (cosine), each sample related to itself."""
    import umap

    n = len(frames[0])
    if n < 4:
        raise ConfigError(f"AlignedUMAP needs at least 4 probe samples, got {n}; use the procrustes method")
    frames = [unit_rows(np.asarray(x, np.float64)) for x in frames]
    count = len(frames)
    if count == 1:
        frames = frames * 2  # AlignedUMAP needs two; both get the same layout
    relations = [{i: i for i in range(n)} for _ in range(len(frames) - 1)]
    mapper = umap.AlignedUMAP(n_neighbors=min(n_neighbors, n - 1), metric="cosine", random_state=seed,
                              n_epochs=n_epochs, alignment_regularisation=0.01)
    mapper.fit(frames, relations=relations)
    return np.stack(mapper.embeddings_).astype(np.float32)[:count]


def aligned_projection(frames: Sequence[np.ndarray], method: str = "procrustes", seed: int = 0,
                       n_neighbors: int = 15) -> np.ndarray:
    """``(S, N, 2)`` projections of the frames (same samples, in order) aligned across frames."""
    if method not in METHODS:
        raise ConfigError(f"unknown alignment method {method!r}; choose from {', '.join(METHODS)}")
    if not frames:
        raise ConfigError("no snapshot to project")
    if method == "procrustes":
        return procrustes_pca(frames)
    return aligned_umap(frames, seed, n_neighbors)


# ------------------------------------------------------------------------------------- metrics


@dataclass
class _SnapshotView:
    """The slice of the Embeddings interface that :func:`twin_separation` reads."""

    spaces: dict[str, np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    class_meta: list[dict] | None

    def space(self, name: str) -> np.ndarray:
        return self.spaces[name]


def snapshot_metrics(series: ProbeSeries, i: int, spaces: Sequence[str], k: int = 5,
                     seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """``(metrics, twins)`` of snapshot ``i``: per space the overall separation metrics plus the mean
    centroid cosine distance of the spatial and of the temporal twin pairs; per space the twin pair rows."""
    snap = series.snapshots[i]
    kk = len(series.class_names)
    metrics: dict[str, dict[str, Any]] = {}
    for s in spaces:
        m = separation_metrics(snap.spaces[s], series.labels, kk, k=k, seed=seed)["overall"]
        metrics[s] = dict(m) | {"energy": snap.energy[s], "width": snap.width[s]}
    view = _SnapshotView({s: snap.spaces[s] for s in spaces}, series.labels, series.class_names, series.class_meta)
    rows = twin_separation(view, spaces, k=k) if twin_pairs(series.class_meta) else []
    twins = {s: [{"pair": r["pair"], "type": r["type"], "classes": r["classes"]} | r["spaces"][s] for r in rows]
             for s in spaces}
    for s in spaces:
        for kind in ("spatial", "temporal"):
            d = [1.0 - r["centroid_cosine"] for r in twins[s] if r["type"] == kind and r["centroid_cosine"] is not None]
            metrics[s][f"{kind}_twin_distance"] = float(np.mean(d)) if d else None
    return metrics, twins


# ------------------------------------------------------------------------------------- loading


def resolve_source(source: str | os.PathLike) -> Path:
    """A run directory, checkpoint, probe folder or ``bundled:NAME`` as the path its probes are read from."""
    text = os.fspath(source)
    if text.startswith(BUNDLED_PREFIX):
        from stdcl.weights import bundled_path

        return bundled_path(text[len(BUNDLED_PREFIX):])
    return Path(text).expanduser()


def source_label(path: Path) -> str:
    """A short name for a probe source: the run directory's or the checkpoint's name."""
    if path.is_dir():
        return path.name if path.name != "probes" else path.parent.name
    if path.stem in ("best", "last"):
        return path.parent.name
    return path.name.removesuffix(".safetensors").removesuffix(".json")


def probes_digest(source: str | os.PathLike) -> str:
    """Content hash of a source's probe files (the cache key of its evolution)."""
    folder = probe_folder(resolve_source(source))
    files = sorted(f for f in folder.iterdir()
                   if f.name == INDEX or (f.name.startswith("step-") and f.suffix == ".npz"))
    return make_key([f.name for f in files], file_digest(files))


def evolution_key(source: str | os.PathLike, method: str, spaces: Sequence[str], seed: int = 0,
                  n_neighbors: int = 15) -> str:
    """The cache key of an evolution: the probe files' content and every parameter."""
    return make_key("evolution", CACHE_VERSION, probes_digest(source), method, list(spaces), seed, n_neighbors)


def load_evolution(source: str | os.PathLike, method: str = "procrustes", spaces: Sequence[str] | None = None,
                   seed: int = 0, n_neighbors: int = 15, label: str | None = None, use_cache: bool = True,
                   cache_root: str | os.PathLike | None = None, progress: Progress | None = None) -> Evolution:
    """The :class:`Evolution` of ``source`` (run directory, checkpoint with probes or ``bundled:NAME``)."""
    path = resolve_source(source)
    series = read_probes(path)
    have = series.spaces
    chosen = list(spaces) if spaces else have
    missing = [s for s in chosen if s not in have]
    if missing:
        raise ConfigError(f"{path}: its probes have no space {missing[0]!r}; they have {', '.join(have)}")
    key = evolution_key(path, method, chosen, seed, n_neighbors)
    roots = [cache_root] if cache_root is not None else [None, BUNDLED_CACHE]  # then the demo's shipped ones
    for root in roots if use_cache else []:
        hit = load_arrays("evolution", key, root)
        if hit is None:
            continue
        try:
            coords = {s: hit[f"coords:{s}"] for s in chosen}
            stored = array_json(hit["results"])
            return Evolution(label or source_label(path), series, method, coords, stored["metrics"], stored["twins"])
        except (KeyError, ValueError, TypeError):
            pass  # an entry of another layout: recompute
    coords = {}
    for s in chosen:
        if progress is not None:
            progress(f"aligning the {s} projections of {len(series.snapshots)} snapshots ({METHOD_NAMES[method]})")
        coords[s] = aligned_projection([snap.spaces[s] for snap in series.snapshots], method, seed, n_neighbors)
    if progress is not None:
        progress(f"separation metrics of {len(series.snapshots)} snapshots")
    results = [snapshot_metrics(series, i, chosen, seed=seed) for i in range(len(series.snapshots))]
    metrics, twins = [r[0] for r in results], [r[1] for r in results]
    if use_cache:
        save_arrays("evolution", key, {f"coords:{s}": coords[s] for s in chosen}
                    | {"results": json_array({"metrics": metrics, "twins": twins})}, cache_root)
    return Evolution(label or source_label(path), series, method, coords, metrics, twins)


def evolution_summary(evo: Evolution) -> str:
    """A few lines: what was probed and how the main metrics moved from the first to the last snapshot."""
    s = evo.series
    lines = [f"{evo.label}: {s.encoder}, {'STD-CL' if s.stdcl else 'baseline'}, {len(s.labels)} probe samples of the "
             f"{s.split} split, {len(s.snapshots)} snapshots (epochs {s.epochs[0]:g} to {s.epochs[-1]:g}), "
             f"probe top-1 {100 * evo.accuracy[0]:.1f}% -> {100 * evo.accuracy[-1]:.1f}%"]
    for sp in evo.spaces:
        parts = []
        for key, name, _ in CURVES:
            v = evo.curve(sp, key)
            if v[0] is not None and v[-1] is not None:
                parts.append(f"{name} {v[0]:.3f} -> {v[-1]:.3f}")
        lines.append(f"  {sp}: " + "; ".join(parts))
    return "\n".join(lines)


__all__ = ["CURVES", "Evolution", "METHODS", "METHOD_NAMES", "aligned_projection", "aligned_umap", "evolution_summary",
           "load_evolution", "probes_digest", "procrustes_pca", "resolve_source", "snapshot_metrics", "source_label"]
