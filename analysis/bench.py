"""``stdcl bench analysis``: how long the analysis takes at 2,000 and 10,000 samples.

On the synthetic set (generated with enough samples that its test split holds each size, then a
stratified subset) and a checkpoint trained on it: embedding extraction (no cache), UMAP cold
(the first fit in the process, numba compilation included) and warm (per space, seeded, as the
report and the app run it; plus one unseeded, multi-threaded fit of the spatial space), and all the
metrics (separation metrics of every space, twin pairs, confusion). Targets: warm UMAP of
10,000 samples under 5 s per space, all metrics under 3 s.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Sequence

import torch

from analysis.datasets import open_analysis_data, stratified_subset
from analysis.embeddings import SPACES, compute_embeddings
from stdcl.errors import ConfigError
from stdcl.io import write_json_atomic

TEST_FRACTION = 0.28  # the synthetic cross-subject test split holds ~30 % of the samples
TARGETS = {"umap_warm_10k_s": 5.0, "metrics_s": 3.0}


_CPU: dict[str, float] = {}  # process CPU seconds of the last timed call of each step (all threads)


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``fn(...)`` and its wall-clock seconds; its process CPU seconds go to ``_CPU["last"]``."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    _CPU["last"] = time.process_time() - c0
    return out, time.perf_counter() - t0


def bench_analysis(sizes: Sequence[int] = (2000, 10000), checkpoint: str = "bundled:synthetic_hcn_stdcl",
                   device: str | None = None, batch_size: int = 256, seed: int = 0,
                   out: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Time each step at each size (in increasing order); print a table with the targets and return the rows."""
    from analysis.cli import resolve_model
    from analysis.confusion import confusion
    from analysis.metrics import space_metrics
    from analysis.twins import twin_separation
    from analysis.projections import project, warm_up_umap

    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 50:
        raise ConfigError("--sizes: give sample counts of at least 50")
    model = resolve_model(checkpoint, device)
    if (model.config or {}).get("data", {}).get("dataset") != "synthetic":
        raise ConfigError(f"{model.label}: the analysis benchmark needs a checkpoint trained on the synthetic set")
    generate = math.ceil(sizes[-1] / TEST_FRACTION)
    data, t_data = _timed(open_analysis_data, model, "test", source={"num_samples": generate, "seed": seed})
    if len(data) < sizes[-1]:
        raise ConfigError(f"the synthetic test split has {len(data)} samples, fewer than {sizes[-1]}")
    print(f"{model.label} on {data.describe()} (generated {generate:,} samples in {t_data:.1f} s); "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    rows = []
    cold = None
    for n in sizes:
        ids = stratified_subset(data.labels, n, seed)
        emb, t_embed = _timed(compute_embeddings, model, data, ids, batch_size=batch_size, device=device,
                              progress=lambda done, total: None)
        row: dict[str, Any] = {"size": n, "samples": len(emb), "embed_s": t_embed, "embed_cpu_s": _CPU["last"]}
        if cold is None:  # the first UMAP fit of the process pays for numba's compilation
            _, cold = _timed(project, emb.space("spatial"), "umap", seed=seed)
            row["umap_cold_s"], row["umap_cold_cpu_s"] = cold, _CPU["last"]
            warm_up_umap()  # the unseeded (parallel) code path compiles separately
        for s in SPACES:
            _, row[f"umap_warm_{s}_s"] = _timed(project, emb.space(s), "umap", seed=seed)
            row[f"umap_warm_{s}_cpu_s"] = _CPU["last"]
        # unseeded: umap-learn runs its layout optimisation on every core (seeded runs are single-threaded)
        _, row["umap_warm_parallel_s"] = _timed(project, emb.space("spatial"), "umap", seed=None)
        cpu = 0.0
        steps = (("separation", space_metrics, (emb,), {"spaces": SPACES, "seed": seed, "use_cache": False}),
                 ("twins", twin_separation, (emb, SPACES), {}),
                 ("confusion", confusion, (emb,), {}))
        for name, fn, args, kw in steps:
            _, row[f"{name}_s"] = _timed(fn, *args, **kw)
            cpu += _CPU["last"]
        row["metrics_s"] = row["separation_s"] + row["twins_s"] + row["confusion_s"]
        row["metrics_cpu_s"] = cpu
        row["accuracy"] = emb.accuracy
        rows.append(row)
    print(format_table(rows))
    if out is not None:
        write_json_atomic(out, {"checkpoint": model.label, "data": data.describe(), "rows": rows, "targets": TARGETS,
                                "threads": torch.get_num_threads(), "cpus": os.cpu_count()})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The benchmark rows as a table (wall-clock seconds, CPU seconds in brackets), with the targets."""
    def both(r: dict[str, Any], key: str, width: int) -> str:
        if f"{key}_s" not in r:
            return f"{'-':>{width}}"
        cpu = r.get(f"{key}_cpu_s")
        text = f"{r[f'{key}_s']:.2f}" + ("" if cpu is None else f" ({cpu:.2f})")
        return f"{text:>{width}}"

    head = (f"{'samples':>8}  {'embed':>15}  {'UMAP cold':>13}  "
            + "  ".join(f"{'UMAP ' + s:>15}" for s in SPACES)
            + f"  {'UMAP unseeded':>13}  {'all metrics':>13}  {'separation/twins/confusion':>26}")
    lines = ["seconds: wall-clock (process CPU, all threads)", head]
    for r in rows:
        parts = f"{r['separation_s']:.2f}/{r['twins_s']:.2f}/{r['confusion_s']:.3f}"
        lines.append(f"{r['samples']:>8,}  {both(r, 'embed', 15)}  {both(r, 'umap_cold', 13)}  "
                     + "  ".join(both(r, f"umap_warm_{s}", 15) for s in SPACES)
                     + f"  {r['umap_warm_parallel_s']:>13.2f}  {both(r, 'metrics', 13)}  {parts:>26}")
    big = [r for r in rows if r["size"] >= 10000]
    verdict = []
    if big:
        r = big[0]
        worst = max(r[f"umap_warm_{s}_s"] for s in SPACES)
        umap_ok = "met" if worst < TARGETS["umap_warm_10k_s"] else "MISSED"
        metrics_ok = "met" if r["metrics_s"] < TARGETS["metrics_s"] else "MISSED"
        verdict.append(f"warm UMAP at {r['samples']:,}: {worst:.2f} s for the slowest space "
                       f"(target < {TARGETS['umap_warm_10k_s']:.0f} s: {umap_ok})")
        verdict.append(f"all metrics at {r['samples']:,}: {r['metrics_s']:.2f} s "
                       f"(target < {TARGETS['metrics_s']:.0f} s: {metrics_ok})")
    else:
        verdict.append(f"targets (at 10,000 samples): warm UMAP < {TARGETS['umap_warm_10k_s']:.0f} s per space, "
                       f"all metrics < {TARGETS['metrics_s']:.0f} s")
    return "\n".join(lines + verdict)
