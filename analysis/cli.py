"""The work behind ``stdcl analyze embed | project | metrics | report | evolution`` (argparse is in
:mod:`stdcl.cli.analyze`); each ``*_command`` prints a short summary and returns the exit code.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analysis.datasets import AnalysisData, check_compatible, open_analysis_data, stratified_subset
from analysis.embeddings import Embeddings, extract_embeddings
from analysis.models import LoadedModel, load_model
from stdcl.checkpoint import BUNDLED_PREFIX
from stdcl.errors import ConfigError
from stdcl.io import atomic_path, write_json_atomic, write_text_atomic

def resolve_model(target: str | os.PathLike, device: str | None = None) -> LoadedModel:
    """A run directory, a ``.safetensors`` checkpoint or ``bundled:NAME`` (see ``stdcl analyze --help``)."""
    text = os.fspath(target)
    return load_model(text if text.startswith(BUNDLED_PREFIX) else Path(text).expanduser(), device=device or "cpu")


def open_data(model: LoadedModel, split: str = "test", dataset: str | None = None,
              data_path: str | os.PathLike | None = None, modality: str | None = None) -> AnalysisData:
    """The split a command analyses: the checkpoint's own dataset unless overridden."""
    return open_analysis_data(model, split, dataset=dataset, path=data_path, modality=modality)


def subset_rows(data: AnalysisData, max_samples: int | None, seed: int = 0) -> np.ndarray | None:
    """Item indices of a stratified subset of about ``max_samples`` (None: the whole split)."""
    if max_samples is None:
        return None
    if max_samples < 1:
        raise ConfigError(f"--max-samples must be at least 1, got {max_samples}")
    return None if max_samples >= len(data) else stratified_subset(data.labels, max_samples, seed)


def embeddings_for(model: LoadedModel, data: AnalysisData, max_samples: int | None = None, seed: int = 0,
                   device: str | None = None, batch_size: int = 64, cache: str | os.PathLike | None = None,
                   use_cache: bool = True) -> Embeddings:
    """Embeddings of ``model`` on ``data`` (or a stratified subset), through the cache."""
    return extract_embeddings(model, data, subset_rows(data, max_samples, seed), batch_size=batch_size,
                              device=device, use_cache=use_cache, cache_root=cache)


def _load(checkpoints: Sequence[str | os.PathLike], split: str, dataset: str | None,
          data_path: str | os.PathLike | None, modality: str | None,
          device: str | None) -> tuple[list[LoadedModel], AnalysisData]:
    if not 1 <= len(checkpoints) <= 2:
        raise ConfigError(f"give one checkpoint or two to compare, got {len(checkpoints)}")
    models = [resolve_model(c, device) for c in checkpoints]
    data = open_data(models[0], split, dataset, data_path, modality)
    for m in models[1:]:
        check_compatible(m, data)
    return models, data


def summary(emb: Embeddings) -> str:
    """Samples, spaces with their sizes, and top-1 accuracy (with the counts)."""
    src = "STD-CL head" if emb.st_source == "head" else "pooled"
    dims = ", ".join(f"{k} {v.shape[1]}" + (f" ({src})" if k in ("spatial", "temporal") else "")
                     for k, v in emb.spaces.items())
    return (f"{len(emb)} samples, {len(emb.class_names)} classes\n"
            f"spaces: {dims}\n"
            f"top-1 accuracy {100 * emb.accuracy:.2f}% ({int(emb.correct.sum())}/{len(emb)})")


def embedding_arrays(emb: Embeddings) -> dict[str, np.ndarray]:
    """What ``stdcl analyze embed --out`` writes: one array per space plus logits, labels, names..."""
    arrays = {k: v for k, v in emb.spaces.items()}
    arrays.update(logits=emb.logits, labels=emb.labels, predictions=emb.predictions, indices=emb.indices,
                  names=np.asarray(emb.names, dtype=str), class_names=np.asarray(emb.class_names, dtype=str),
                  st_source=np.asarray(emb.st_source))
    return arrays


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if path.suffix != ".npz":
        raise ConfigError(f"{path}: the output must be a .npz file")
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def embed_command(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, split: str = "test",
                  dataset: str | None = None, data_path: str | os.PathLike | None = None,
                  modality: str | None = None, max_samples: int | None = None, seed: int = 0,
                  device: str | None = None, batch_size: int = 64, cache: str | os.PathLike | None = None,
                  use_cache: bool = True) -> int:
    """``stdcl analyze embed``: extract (and cache) the embeddings; write them to ``out`` (.npz)."""
    (model,), data = _load([checkpoint], split, dataset, data_path, modality, device)
    emb = embeddings_for(model, data, max_samples, seed, device, batch_size, cache, use_cache)
    print(f"{model.label} on {data.describe()}: {summary(emb)}")
    if out is not None:
        _save_npz(Path(out), embedding_arrays(emb))
        print(f"wrote {out}")
    return 0


def project_command(checkpoint: str | os.PathLike, out: str | os.PathLike,
                    spaces: Sequence[str] = ("global", "spatial", "temporal"), method: str = "umap",
                    n_neighbors: int = 15, n_epochs: int = 200, metric: str = "cosine", perplexity: float = 30.0,
                    split: str = "test", dataset: str | None = None, data_path: str | os.PathLike | None = None,
                    modality: str | None = None, max_samples: int | None = None, seed: int = 0,
                    device: str | None = None, batch_size: int = 64, cache: str | os.PathLike | None = None,
                    use_cache: bool = True) -> int:
    """``stdcl analyze project``: 2-D coordinates of ``spaces`` by ``method``, to ``out`` (.csv or .npz)."""
    from analysis.projections import project_embeddings

    out = Path(out)
    if out.suffix not in (".csv", ".npz"):
        raise ConfigError(f"{out}: the output must be a .csv or .npz file")
    (model,), data = _load([checkpoint], split, dataset, data_path, modality, device)
    emb = embeddings_for(model, data, max_samples, seed, device, batch_size, cache, use_cache)
    for s in spaces:
        if s not in emb.spaces:
            raise ConfigError(f"no embedding space {s!r}; choose from {', '.join(emb.spaces)}")
    params = dict(seed=seed, n_epochs=n_epochs, n_neighbors=n_neighbors, metric=metric, perplexity=perplexity)
    coords = {s: project_embeddings(emb, s, method, use_cache=use_cache, cache_root=cache, **params)
              for s in spaces}
    if out.suffix == ".npz":
        arrays = {s: c.astype(np.float32) for s, c in coords.items()}
        arrays.update(labels=emb.labels, predictions=emb.predictions, indices=emb.indices,
                      names=np.asarray(emb.names, dtype=str), class_names=np.asarray(emb.class_names, dtype=str),
                      method=np.asarray(method))
        _save_npz(out, arrays)
    else:
        write_text_atomic(out, coords_csv(emb, coords))
    print(f"{model.label} on {data.describe()}: {len(emb)} samples, {method} of {', '.join(spaces)} -> {out}")
    return 0


def coords_csv(emb: Embeddings, coords: dict[str, np.ndarray]) -> str:
    """One row per sample: row, name, index, label, prediction (ids and names), then ``<space>_x/_y``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "name", "index", "label", "label_name", "prediction", "prediction_name"] +
               [f"{s}_{a}" for s in coords for a in ("x", "y")])
    names, preds = emb.class_names, emb.predictions
    for r in range(len(emb)):
        w.writerow([r, emb.names[r], int(emb.indices[r]), int(emb.labels[r]), names[emb.labels[r]], int(preds[r]),
                    names[preds[r]]] + [f"{c[r, a]:.6g}" for c in coords.values() for a in (0, 1)])
    return buf.getvalue()


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values turned into lists / Python numbers and NaN into None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def metrics_table(per_space: dict[str, dict[str, Any]]) -> str:
    """Spaces down, overall metrics across (fixed-width text)."""
    metrics = list(dict.fromkeys(m for v in per_space.values() for m in v["overall"]))
    width = max([len(s) for s in per_space] + [5])
    lines = [f"{'space':<{width}}  " + "  ".join(f"{m:>14}" for m in metrics)]
    for s, v in per_space.items():
        lines.append(f"{s:<{width}}  " + "  ".join(f"{_fmt(v['overall'].get(m)):>14}" for m in metrics))
    return "\n".join(lines)


def comparison_table(rows: Sequence[dict[str, Any]], label_a: str, label_b: str) -> str:
    """``compare_metrics`` rows as fixed-width text."""
    wa, wb = max(len(label_a), 10), max(len(label_b), 10)
    lines = [f"{'space':<16}{'metric':<22}{label_a:>{wa}}  {label_b:>{wb}}  {'delta':>9}  better"]
    for r in rows:
        lines.append(f"{r['space']:<16}{r['metric']:<22}{_fmt(r['a']):>{wa}}  {_fmt(r['b']):>{wb}}  "
                     f"{_fmt(r['delta'], signed=True):>9}  {r.get('better') or '-'}")
    return "\n".join(lines)


def _fmt(v: Any, signed: bool = False) -> str:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    try:
        return f"{float(v):+.4f}" if signed else f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def model_metrics(emb: Embeddings, spaces: Sequence[str], k: int = 5, max_samples: int = 5000, seed: int = 0,
                  cache: str | os.PathLike | None = None, use_cache: bool = True) -> dict[str, Any]:
    """Separation metrics per space and the twin-pair table (empty when the classes have no twins)."""
    from analysis.metrics import space_metrics
    from analysis.twins import twin_separation

    return {"spaces": space_metrics(emb, spaces=tuple(spaces), k=k, max_samples=max_samples, seed=seed,
                                    use_cache=use_cache, cache_root=cache),
            "twins": twin_separation(emb, tuple(spaces), k=k)}


def comparison_spaces(a: Embeddings, b: Embeddings) -> tuple[str, ...]:
    """Spaces two checkpoints are compared on: the main ones, plus the pooled ones (equal terms) when either
    has a trained head."""
    base = ("global", "spatial", "temporal")
    pooled = ("spatial_pooled", "temporal_pooled")
    if a.st_source == "head" or b.st_source == "head":
        return base + tuple(s for s in pooled if s in a.spaces and s in b.spaces)
    return base


def metrics_command(checkpoints: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
                    k: int = 5, metric_samples: int = 5000, split: str = "test", dataset: str | None = None,
                    data_path: str | os.PathLike | None = None, modality: str | None = None,
                    max_samples: int | None = None, seed: int = 0, device: str | None = None,
                    batch_size: int = 64, cache: str | os.PathLike | None = None, use_cache: bool = True) -> int:
    """``stdcl analyze metrics``: per-space separation metrics of one or two checkpoints (and their comparison)."""
    from analysis.embeddings import POOLED_DEFINITION
    from analysis.metrics import compare_metrics

    models, data = _load(checkpoints, split, dataset, data_path, modality, device)
    embs = [embeddings_for(m, data, max_samples, seed, device, batch_size, cache, use_cache) for m in models]
    spaces = comparison_spaces(*embs) if len(embs) == 2 else ("global", "spatial", "temporal")
    result: dict[str, Any] = {"data": data.describe(), "split": split, "n": len(embs[0]), "spaces": list(spaces),
                              "models": []}
    per_model = []
    for m, e in zip(models, embs):
        mm = model_metrics(e, spaces, k=k, max_samples=metric_samples, seed=seed, cache=cache, use_cache=use_cache)
        per_model.append(mm)
        result["models"].append({"label": m.label, "stdcl": m.stdcl, "st_source": e.st_source,
                                 "accuracy": e.accuracy, **mm})
        print(f"{m.label} ({'STD-CL' if m.stdcl else 'baseline'}) on {data.describe()}: {len(e)} samples, "
              f"top-1 {100 * e.accuracy:.2f}%")
        print(metrics_table(mm["spaces"]))
        print()
    if len(models) == 2:
        rows = compare_metrics(per_model[0]["spaces"], per_model[1]["spaces"])
        result["comparison"] = rows
        result["pooled_definition"] = POOLED_DEFINITION
        print(f"comparison ({models[0].label} -> {models[1].label}):")
        print(comparison_table(rows, models[0].label, models[1].label))
    if out is not None:
        write_json_atomic(out, jsonable(result))
        print(f"wrote {out}")
    return 0


def report_command(checkpoints: Sequence[str | os.PathLike], out: str | os.PathLike,
                   method: str = "umap", n_neighbors: int = 15, n_epochs: int = 200, metric: str = "cosine",
                   perplexity: float = 30.0, attribution_samples: int = 3, split: str = "test",
                   dataset: str | None = None, data_path: str | os.PathLike | None = None,
                   modality: str | None = None, max_samples: int | None = None, seed: int = 0,
                   device: str | None = None, batch_size: int = 64, cache: str | os.PathLike | None = None,
                   use_cache: bool = True) -> int:
    """``stdcl analyze report``: the HTML report of one checkpoint or a (baseline, STD-CL) pair."""
    from analysis.report import write_report

    models, data = _load(checkpoints, split, dataset, data_path, modality, device)
    path = write_report(out, models[0] if len(models) == 1 else (models[0], models[1]), data,
                        max_samples=max_samples, method=method, seed=seed, device=device, batch_size=batch_size,
                        cache=cache, use_cache=use_cache, attribution_samples=attribution_samples,
                        projection_params=dict(n_neighbors=n_neighbors, n_epochs=n_epochs, metric=metric,
                                               perplexity=perplexity))
    print(f"wrote {path} ({', '.join(m.label for m in models)} on {data.describe()})")
    return 0



def evolution_command(runs: Sequence[str | os.PathLike], out: str | os.PathLike, method: str = "aligned-umap",
                      seed: int = 0, n_neighbors: int = 15, cache: str | os.PathLike | None = None,
                      use_cache: bool = True) -> int:
    """``stdcl analyze evolution``: the training-evolution report of one run's probes or of a pair."""
    from analysis.evolution import evolution_summary
    from analysis.evolution_report import write_evolution_report

    if n_neighbors < 2:
        raise ConfigError(f"--n-neighbors must be at least 2, got {n_neighbors}")
    path, evos = write_evolution_report(runs, out, method=method, seed=seed, n_neighbors=n_neighbors,
                                        use_cache=use_cache, cache_root=cache)
    for evo in evos:
        print(evolution_summary(evo))
    print(f"wrote {path}")
    return 0
