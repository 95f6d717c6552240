"""``stdcl bench analysis``: how long the analysis of a whole split takes, at 2,000, 10,000 and 50,000 samples.

The synthetic set is generated with enough samples, written as plain numpy with nearly every subject
held out (its test split holds the largest size; smaller sizes are the stratified subsets the app
analyses), and a checkpoint trained on it is run over it. Per size:

- ``embed``: embeddings computed and written to the cache (:func:`~analysis.embeddings.extract_embeddings`,
  batched, on the GPU when present) and ``embed_cached``: read back;
- ``umap_cold``: the first UMAP fit of the process (numba's compilation included; once);
  ``umap_<space>``: UMAP of the two linked spaces (seeded, as the app runs it), computed and cached, and
  ``umap_cached``: both read back; ``pca``: the projection the page draws while UMAP runs;
- ``metrics``: every separation metric of the three spaces, the twin pairs and the confusion matrix;
- ``figure``: both scatter plots built and serialised as Streamlit sends them (``figure_mb``: their size);
- with ``browser``: the Embeddings page in headless Chromium (:mod:`analysis.bench_app`): first paint,
  warm paint (a revisit) and the update of both views after a box selection.

Targets: warm UMAP of 10,000 samples under 5 s per space, all metrics under 3 s, the page painting 50,000
points in under 3 s warm and following a box selection in under 1 s.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from analysis.datasets import open_analysis_data, stratified_subset
from analysis.embeddings import SPACES, embedding_device, extract_embeddings
from stdcl.errors import ConfigError
from stdcl.io import write_json_atomic

VIEWS = ("spatial", "temporal")  # the two linked charts of the Embeddings page
HELD_OUT = list(range(2, 41))  # held-out subjects of the generated set: all but one (its test split ~97 %)
TARGETS = {"umap_warm_10k_s": 5.0, "metrics_s": 3.0, "paint_warm_50k_s": 3.0, "select_50k_s": 1.0}

_CPU: dict[str, float] = {}  # process CPU seconds of the last timed call of each step (all threads)


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``fn(...)`` and its wall-clock seconds; its process CPU seconds go to ``_CPU["last"]``."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    _CPU["last"] = time.process_time() - c0
    return out, time.perf_counter() - t0


def _figures(emb: Any, coords: dict[str, Any]) -> tuple[float, float]:
    """Seconds to build and serialise both linked scatter plots as the page does, and their megabytes."""
    import plotly.io as pio
    import plotly.tools

    from analysis.figures import embedding_scatter

    t0, size = time.perf_counter(), 0
    for space in VIEWS:
        fig = embedding_scatter(coords[space], emb, "label", max_points=60_000, title=f"A: {space}", height=470)
        size += len(pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, True), validate=False))
    return time.perf_counter() - t0, size / 1e6


def bench_analysis(sizes: Sequence[int] = (2000, 10000, 50000), checkpoint: str = "bundled:synthetic_hcn_stdcl",
                   device: str | None = None, batch_size: int | None = None, out: str | os.PathLike | None = None,
                   browser: bool = True, workdir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Time each step at each size (in increasing order); print a table with the targets and return the rows.

    ``workdir`` holds the generated data, the cache and the app server's log (default: a new temporary folder).
    """
    from analysis.cli import resolve_model
    from analysis.confusion import confusion
    from analysis.metrics import space_metrics
    from analysis.projections import project, project_embeddings, warm_up_umap
    from analysis.twins import twin_separation
    from stdcl.data.synthetic import write_synthetic

    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 50:
        raise ConfigError("--sizes: give sample counts of at least 50")
    model = resolve_model(checkpoint, device)
    if (model.config or {}).get("data", {}).get("dataset") != "synthetic":
        raise ConfigError(f"{model.label}: the analysis benchmark needs a checkpoint trained on the synthetic set")
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="stdcl-bench-analysis-"))
    cache = work / "cache"
    generate = math.ceil(sizes[-1] / 0.95) + 100
    path, t_data = _timed(write_synthetic, work / "data", generate, 0, test_subjects=HELD_OUT)
    data = open_analysis_data(model, "test", "numpy", path)  # what the app opens from the Models page
    if len(data) < sizes[-1]:
        raise ConfigError(f"{path}: the test split has {len(data)} samples, fewer than {sizes[-1]}")
    dev = torch.device(device) if device else embedding_device()
    print(f"{model.label} on {data.describe()} (generated {generate:,} samples in {t_data:.1f} s, {path}); "
          f"embeddings on {dev}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    for n in sizes:
        ids = None if n >= len(data) else stratified_subset(data.labels, n)  # the app's subset (seed 0)
        emb, t = _timed(extract_embeddings, model, data, ids, batch_size=batch_size, device=device, cache_root=cache)
        row: dict[str, Any] = {"size": n, "samples": len(emb), "embed_s": t, "embed_cpu_s": _CPU["last"]}
        _, row["embed_cached_s"] = _timed(extract_embeddings, model, data, ids, cache_root=cache)
        if not rows:  # the first UMAP fit of the process pays for numba's compilation
            _, row["umap_cold_s"] = _timed(project, emb.space("spatial"), "umap")
            row["umap_cold_cpu_s"] = _CPU["last"]
            warm_up_umap()
        coords = {}
        for s in VIEWS:
            coords[s], row[f"umap_{s}_s"] = _timed(project_embeddings, emb, s, "umap", cache_root=cache)
            row[f"umap_{s}_cpu_s"] = _CPU["last"]
        _, row["umap_cached_s"] = _timed(lambda e: [project_embeddings(e, s, "umap", cache_root=cache) for s in VIEWS],
                                           emb)
        _, row["pca_s"] = _timed(project, emb.space("spatial"), "pca")
        steps = (("separation", space_metrics, (emb,), {"spaces": SPACES, "use_cache": False}),
                 ("twins", twin_separation, (emb, SPACES), {}), ("confusion", confusion, (emb,), {}))
        for name, fn, args, kw in steps:
            _, row[f"{name}_s"] = _timed(fn, *args, **kw)
        row["metrics_s"] = row["separation_s"] + row["twins_s"] + row["confusion_s"]
        row["figure_s"], row["figure_mb"] = _figures(emb, coords)
        row["accuracy"] = emb.accuracy
        rows.append(row)
        del emb
    if browser:
        from analysis.bench_app import browser_timings

        try:
            for n, timing in browser_timings(path, {r["size"]: r["samples"] for r in rows}, cache, work).items():
                next(r for r in rows if r["size"] == n).update(timing)
        except ConfigError as e:
            print(f"browser timings skipped: {e}")
    print(format_table(rows))
    print(f"load average at the end {os.getloadavg()[0]:.1f}; files in {work}")
    if out is not None:
        write_json_atomic(out, {"checkpoint": model.label, "data": data.describe(), "rows": rows, "targets": TARGETS,
                                "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "device": str(dev),
                                "load_average": os.getloadavg()[0]})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The benchmark rows as a table (wall-clock seconds), with the targets."""
    def cell(r: dict[str, Any], key: str, width: int, fmt: str = ".2f") -> str:
        v = r.get(key)
        return f"{'-':>{width}}" if v is None else f"{v:>{width}{fmt}}"

    cols = [("embed", "embed_s", 8), ("cached", "embed_cached_s", 7), ("UMAP JIT", "umap_cold_s", 9),
            ("UMAP s", "umap_spatial_s", 8), ("UMAP t", "umap_temporal_s", 8), ("cached", "umap_cached_s", 7),
            ("PCA", "pca_s", 6), ("metrics", "metrics_s", 8), ("figures", "figure_s", 8), ("MB", "figure_mb", 6),
            ("paint 1st", "paint_first_s", 9), ("paint", "paint_warm_s", 7), ("shown", "highlight_s", 7),
            ("select", "select_s", 7)]
    head = f"{'samples':>8}  " + "  ".join(f"{name:>{w}}" for name, _, w in cols)
    lines = ["seconds, wall-clock (figures: both linked charts built and serialised; MB: their size; paint 1st: "
             "first visit, paint: a revisit, shown: a box selection shown in both views, select: and the page's rerun "
             "done)", head]
    lines += [f"{r['samples']:>8,}  " + "  ".join(cell(r, key, w, ".1f" if key == "figure_mb" else ".2f")
                                               for _, key, w in cols) for r in rows]
    verdict = []
    at10 = next((r for r in rows if r["size"] >= 10000), None)
    if at10 is not None:
        worst = max(at10[f"umap_{s}_s"] for s in VIEWS)
        verdict.append(f"UMAP at {at10['samples']:,}: {worst:.2f} s for the slower space "
                       f"(target < {TARGETS['umap_warm_10k_s']:.0f} s: {_ok(worst, TARGETS['umap_warm_10k_s'])}); "
                       f"all metrics {at10['metrics_s']:.2f} s (target < {TARGETS['metrics_s']:.0f} s: "
                       f"{_ok(at10['metrics_s'], TARGETS['metrics_s'])})")
    at50 = next((r for r in rows if r["size"] >= 50000 and "paint_warm_s" in r), None)
    if at50 is not None:
        verdict.append(f"the page at {at50['samples']:,} points: paints in {at50['paint_warm_s']:.2f} s warm "
                       f"(target < {TARGETS['paint_warm_50k_s']:.0f} s: "
                       f"{_ok(at50['paint_warm_s'], TARGETS['paint_warm_50k_s'])}), a box selection is shown in "
                       f"both views in {at50['highlight_s']:.2f} s (target < {TARGETS['select_50k_s']:.0f} s: "
                       f"{_ok(at50['highlight_s'], TARGETS['select_50k_s'])}; the page's rerun done at "
                       f"{at50['select_s']:.2f} s)")
    return "\n".join(lines + verdict)


def _ok(value: float, target: float) -> str:
    return "met" if value < target else "MISSED"
