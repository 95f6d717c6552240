"""``stdcl analyze evolution``: a self-contained HTML report (+ PNGs, + JSON) of how a run's embedding
spaces formed during training, from its probes; with two runs (an STD-CL run and its baseline) side by side.

``out/index.html``: a summary table, per run an animation of the spatial and temporal projections
(play / pause, epoch slider; aligned across snapshots) and of the pooled and global ones, the
metric curves of every space (the second run dashed), and per twin pair the centroid distance per
epoch. ``metrics.png``, ``projections.png`` (first, middle and last snapshot) and ``twins.png`` are
drawn with matplotlib; ``evolution.json`` holds every number. The folder is complete or absent.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analysis.evolution import CURVES, METHOD_NAMES, Evolution, load_evolution
from analysis.evolution_figures import animation_figure, curves_figure, main_spaces, space_title
from analysis.figures import color_of
from analysis.html_page import Page, check_out_dir, esc, num, table, write_folder
from analysis.report_png import pct
from stdcl.errors import ConfigError
from stdcl.io import write_json_atomic

GENERATOR = "stdcl analyze evolution"


def write_evolution_report(sources: Sequence[str | os.PathLike], out: str | os.PathLike, method: str = "aligned-umap",
                           seed: int = 0, n_neighbors: int = 15, use_cache: bool = True,
                           cache_root: str | os.PathLike | None = None) -> tuple[Path, list[Evolution]]:
    """Write the report of one or two runs' probes to ``out``; returns (``index.html``, the evolutions)."""
    if not 1 <= len(sources) <= 2:
        raise ConfigError(f"give one run or two to compare, got {len(sources)}")
    out = Path(out).expanduser()
    check_out_dir(out, GENERATOR)  # before minutes of AlignedUMAP, not after
    evos = [load_evolution(s, method, seed=seed, n_neighbors=n_neighbors, use_cache=use_cache, cache_root=cache_root,
                           progress=lambda what: print(f"  {what}", flush=True)) for s in sources]
    if len(evos) == 2 and evos[0].series.names != evos[1].series.names:
        print("note: the two runs probed different samples; their projections are not matched point by point")

    def fill(tmp: Path) -> None:
        (tmp / "index.html").write_text(_html(evos, method, seed), encoding="utf-8")
        write_json_atomic(tmp / "evolution.json", evolution_json(evos))
        _png_metrics(tmp / "metrics.png", evos)
        _png_projections(tmp / "projections.png", evos)
        if any(evo.twins and any(evo.twins[0].values()) for evo in evos):
            _png_twins(tmp / "twins.png", evos)

    return write_folder(out, GENERATOR, fill) / "index.html", evos


def evolution_json(evos: Sequence[Evolution]) -> dict[str, Any]:
    """Every number of the report: per run the probe description and per snapshot its metrics and twins."""
    runs = []
    for evo in evos:
        s = evo.series
        runs.append({"label": evo.label, "encoder": s.encoder, "stdcl": s.stdcl, "split": s.split,
                     "samples": len(s.labels), "dim": s.dim, "method": evo.method, "spaces": evo.spaces,
                     "snapshots": [{"epoch": snap.epoch, "step": snap.step, "probe_top1": evo.accuracy[i],
                                    "metrics": evo.metrics[i], "twins": evo.twins[i]}
                                   for i, snap in enumerate(s.snapshots)]})
    return {"generator": GENERATOR, "runs": runs}


# ------------------------------------------------------------------------------------------------ HTML


def _html(evos: list[Evolution], method: str, seed: int) -> str:
    page = Page(GENERATOR)
    title = "Training evolution: " + " vs ".join(e.label for e in evos)
    page.add(f"<h1>{esc(title)}</h1><p class=\"note\">Projections by {esc(METHOD_NAMES[method])} (seed {seed}), "
             "aligned across snapshots so each point moves from epoch to epoch; metrics on the stored probe "
             "embeddings themselves (unit rows; spaces wider than the stored width keep their top components, "
             "the share of the energy kept is in the table). Generated "
             f"{datetime.datetime.now().isoformat(timespec='seconds')} by {GENERATOR}.</p>")
    rows = []
    for e in evos:
        s = e.series
        kept = min(min(snap.energy.values()) for snap in s.snapshots)
        rows.append([e.label, s.encoder, "yes" if s.stdcl else "no", s.split, len(s.labels), len(s.snapshots),
                     f"{s.epochs[0]:g} - {s.epochs[-1]:g}", s.dim, pct(kept), pct(e.accuracy[0]), pct(e.accuracy[-1])])
    page.add(table(["run", "encoder", "STD-CL", "probe split", "samples", "snapshots", "epochs", "stored width",
                    "least energy kept", "probe top-1 first", "probe top-1 last"], rows))
    page.add("<h2>Projections</h2><p class=\"note\">Press Play or drag the slider. Spatial twins (e.g. a left- "
             "vs right-hand action) should pull apart in the spatial space and stay together in the temporal one; "
             "temporal twins (e.g. sit down vs stand up) the opposite.</p>")
    for e in evos:
        page.add(f"<h3>{esc(e.label)}</h3>")
        first = main_spaces(e)
        page.add(page.fig(animation_figure(e, first)))
        others = [s for s in ("spatial_pooled", "temporal_pooled", "global") if s in e.coords and s not in first]
        if others:
            page.add(page.fig(animation_figure(e, others, height=440)))
    page.add("<h2>Separation metrics per epoch</h2><p class=\"note\">" +
             ("Solid: " + esc(evos[0].label) + "; dashed: " + esc(evos[1].label) + ". " if len(evos) == 2 else "")
             + "Twin centroid distance: 1 - cosine of the two twin classes' centroids, averaged over the spatial "
             "(or temporal) twin pairs.</p>")
    spaces = [s for s in ("spatial", "temporal", "spatial_pooled", "temporal_pooled", "global")
              if any(s in e.coords for e in evos)]
    page.add(page.fig(curves_figure(evos, spaces, [k for k, _, _ in CURVES[:3]], height=340)))
    page.add(page.fig(curves_figure(evos, spaces, [k for k, _, _ in CURVES[3:]], height=340)))
    page.add("<h2>Last snapshot</h2>")
    for e in evos:
        page.add(f"<h3>{esc(e.label)}, epoch {e.epochs[-1]:g}</h3>")
        names = [name for _, name, _ in CURVES]
        page.add(table(["space"] + names, [[space_title(e, s)] + [num(e.metrics[-1][s].get(k), 3) for k, _, _ in CURVES]
                                          for s in e.spaces]))
        pairs = _pair_table(e)
        if pairs:
            page.add(pairs)
    return page.render(title)


def _pair_table(e: Evolution) -> str:
    spaces = main_spaces(e)
    rows = e.twins[-1].get(spaces[0], []) if spaces else []
    if not rows:
        return ""
    body = []
    for j, r in enumerate(rows):
        line = [r["pair"], r["type"]]
        for s in spaces:
            first, last = e.twins[0][s][j]["centroid_cosine"], e.twins[-1][s][j]["centroid_cosine"]
            line += [num(None if first is None else 1 - first, 3), num(None if last is None else 1 - last, 3)]
        body.append(line)
    header = ["twin pair", "type"] + [f"{space_title(e, s)} distance, {w}" for s in spaces for w in ("first", "last")]
    return table(header, body, left=2)


# ------------------------------------------------------------------------------------------------ PNGs


def _png_metrics(path: Path, evos: list[Evolution]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.6), squeeze=False)
    for ax, (key, name, better) in zip(axes[0], CURVES):
        for r, e in enumerate(evos):
            for j, s in enumerate(e.spaces):
                y = [np.nan if v is None else v for v in e.curve(s, key)]
                ax.plot(e.epochs, y, ls="-" if r == 0 else "--", marker="o", ms=3, color=color_of(j),
                        label=f"{e.label}: {s}" if key == CURVES[0][0] else None)
        ax.set_title(f"{name}\n({better} is better)", fontsize=10)
        ax.set_xlabel("epoch")
    fig.legend(loc="lower center", ncol=min(5, sum(len(e.spaces) for e in evos)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _png_projections(path: Path, evos: list[Evolution]) -> None:
    import matplotlib.pyplot as plt

    panels = [(e, s) for e in evos for s in main_spaces(e)]
    n = len(evos[0].epochs)
    picks = sorted({0, n // 2, n - 1})
    fig, axes = plt.subplots(len(panels), len(picks), figsize=(3.6 * len(picks), 3.4 * len(panels)), squeeze=False)
    for row, (e, s) in enumerate(panels):
        colors = [color_of(int(k)) for k in e.series.labels]
        c = e.coords[s]
        lo, hi = c.reshape(-1, 2).min(0), c.reshape(-1, 2).max(0)
        for col, i in enumerate(picks[: len(e.epochs)]):
            ax = axes[row, col]
            ax.scatter(c[i, :, 0], c[i, :, 1], c=colors, s=5, alpha=0.8, linewidths=0)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{e.label}: {space_title(e, s)}, epoch {e.epochs[i]:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _png_twins(path: Path, evos: list[Evolution]) -> None:
    import matplotlib.pyplot as plt

    kinds = ("spatial", "temporal")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for r, e in enumerate(evos):
            for j, s in enumerate(main_spaces(e)):
                y = [np.nan if v is None else v for v in e.curve(s, f"{kind}_twin_distance")]
                ax.plot(e.epochs, y, ls="-" if r == 0 else "--", marker="o", ms=3, color=color_of(j),
                        label=f"{e.label}: {space_title(e, s)}")
        ax.set_title(f"{kind} twins: centroid distance (1 - cos)", fontsize=10)
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["GENERATOR", "evolution_json", "write_evolution_report"]
