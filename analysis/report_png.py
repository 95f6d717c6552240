"""The report's PNG figures (matplotlib, Agg backend; no browser needed): projections, confusion,
twin pairs and one attribution example, drawn from :func:`analysis.report.analyse`'s result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analysis import figures
from analysis.embeddings import SPACES
from analysis.models import LoadedModel
from stdcl.logs import progress

#: the order of the projection panels, left to right
PROJECTION_ORDER = ("spatial", "temporal", "global")


def pct(v: Any) -> str:
    """``0.1234`` -> ``"12.34%"``; ``"-"`` for a missing value."""
    try:
        return f"{100 * float(v):.2f}%"
    except (TypeError, ValueError):
        return "-"


def _png_projections(path: Path, models, res) -> None:
    import matplotlib.pyplot as plt

    embs = res["embs"]
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 4.8 * len(models)), squeeze=False)
    k = len(embs[0].class_names)
    colors = [figures.color_of(i) for i in range(k)]
    for i, (m, e) in enumerate(zip(models, embs)):
        for j, s in enumerate(PROJECTION_ORDER):
            ax = axes[i, j]
            c = res["coords"][i][s]
            ax.scatter(c[:, 0], c[:, 1], c=[colors[k] for k in e.labels], s=6, alpha=0.8, linewidths=0)
            ax.set_title(f"{m.label}: {s}", fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[i], label=n)
               for i, n in enumerate(embs[0].class_names)]
    if k <= 30:
        fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 0.85, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _png_confusion(path: Path, models, res) -> None:
    import matplotlib.pyplot as plt

    k = len(res["embs"][0].class_names)
    size = min(14, max(5, 0.45 * k + 2))
    fig, axes = plt.subplots(1, len(models), figsize=(size * len(models), size), squeeze=False)
    for ax, m, c in zip(axes[0], models, res["confusion"]):
        z = figures.normalise_rows(c["matrix"])
        im = ax.imshow(z, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{m.label} (top-1 {pct(c['top1'])})", fontsize=11)
        ticks = np.arange(k)
        ax.set_xticks(ticks, c["class_names"] if k <= 40 else [], rotation=90, fontsize=7)
        ax.set_yticks(ticks, c["class_names"] if k <= 40 else [], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 20:
            for (r, q), v in np.ndenumerate(z):
                if v >= 0.005:
                    ax.text(q, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _png_twins(path: Path, models, res) -> None:
    import matplotlib.pyplot as plt

    first = next(r for r in res["twins"] if r)
    metrics = list(dict.fromkeys(k for r in first for sp in r["spaces"].values() for k in sp))
    metric = "knn_accuracy" if "knn_accuracy" in metrics else metrics[0]
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 4.5), squeeze=False, sharey=True)
    for ax, m, rows in zip(axes[0], models, res["twins"]):
        pairs = [f"{r['pair']}\n({r['type']})" for r in rows]
        x = np.arange(len(rows))
        width = 0.8 / len(SPACES)
        for i, s in enumerate(SPACES):
            vals = [float(r["spaces"].get(s, {}).get(metric, np.nan) or np.nan) for r in rows]
            ax.bar(x + (i - (len(SPACES) - 1) / 2) * width, vals, width, label=s, color=figures.color_of(i))
        ax.set_xticks(x, pairs, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{m.label}: twin-pair {metric}", fontsize=11)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(SPACES), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _png_attribution(path: Path, models, res, layout) -> None:
    import matplotlib.pyplot as plt

    m_i = len(models) - 1  # the STD-CL model of a pair (second) or the only one
    a = res["attributions"][m_i][0]
    e = res["embs"][m_i]
    x = a["x"]
    t = x.shape[1]
    valid = np.flatnonzero(np.abs(x).sum((0, 2, 3)) > 0)
    frame = int(valid[len(valid) // 2]) if valid.size else t // 2
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1, 1.6]})
    vals = np.asarray(a["joints"], dtype=np.float64)
    vmax = float(np.abs(vals).max()) or 1.0
    signed = bool((vals < 0).any())
    cmap, vmin = ("RdBu_r", -vmax) if signed else ("viridis", 0.0)
    for p in range(x.shape[3]):
        pts = x[:2, frame, :, p].T
        if not np.abs(pts).sum():
            continue
        for c, q in layout.edges:
            ax0.plot(pts[[c, q], 0], pts[[c, q], 1], color="#888", lw=2, zorder=1)
        sc = ax0.scatter(pts[:, 0], pts[:, 1], c=vals, cmap=cmap, vmin=vmin, vmax=vmax,
                         s=30 + 170 * np.abs(vals) / vmax, edgecolors="black", linewidths=0.5, zorder=2)
    fig.colorbar(sc, ax=ax0, fraction=0.046, pad=0.04, label=a["joint_label"])
    ax0.set_aspect("equal")
    ax0.set_title(f"{models[m_i].label}: {e.names[a['row']]} ({e.class_names[e.labels[a['row']]]}), frame {frame}",
                  fontsize=10)
    ax0.set_xticks([])
    ax0.set_yticks([])
    im = ax1.imshow(np.asarray(a["cam"]).T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax1.set_yticks(np.arange(layout.num_joints), layout.joints, fontsize=7)
    ax1.set_xlabel("frame")
    ax1.set_title("Grad-CAM of the true class (frames x joints)", fontsize=10)
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_pngs(folder: Path, models: list[LoadedModel], res: dict[str, Any], layout) -> list[Path]:
    """The report's main figures as PNGs (matplotlib, Agg backend); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    jobs = [("projections.png", lambda p: _png_projections(p, models, res)),
            ("confusion.png", lambda p: _png_confusion(p, models, res))]
    if any(res["twins"]):
        jobs.append(("twins.png", lambda p: _png_twins(p, models, res)))
    if res["attribution_rows"]:
        jobs.append(("attribution.png", lambda p: _png_attribution(p, models, res, layout)))
    written = []
    for name, draw in progress(jobs, "PNG figures"):
        draw(folder / name)
        written.append(folder / name)
    return written
