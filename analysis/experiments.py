"""Figures of a grid's results: test top-1 per epoch, mean and band (± sd) over seeds, baseline vs STD-CL,
one panel per table row; as a plotly figure (interactive HTML, the app's Results page) and a PNG."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stdcl.experiment.table import Row, Table
from stdcl.io import atomic_path, make_folder

ARMS = (("off", "baseline", "#636EFA"), ("on", "STD-CL", "#EF553B"))


def epoch_band(curves: dict[str, list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, sd, n) over seeds of test top-1 per epoch (epochs any seed has; sd 0 where n = 1)."""
    by_epoch: dict[int, list[float]] = {}
    for pts in curves.values():
        for e, v in pts:
            by_epoch.setdefault(int(e), []).append(float(v))
    epochs = np.array(sorted(by_epoch), dtype=int)
    vals = [np.asarray(by_epoch[e]) for e in epochs]
    mean = np.array([v.mean() for v in vals])
    sd = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals])
    n = np.array([len(v) for v in vals])
    return epochs, mean, sd, n


def _title(row: Row) -> str:
    return row_label(row) if row.key else "all runs"


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def curves_figure(table: Table, cols: int = 2) -> go.Figure:
    """Interactive test top-1 (%) per epoch per row: mean line and ± sd band over seeds per arm."""
    rows = table.rows or []
    n = max(len(rows), 1)
    cols = min(cols, n)
    nrows = (n + cols - 1) // cols
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[_title(r) for r in rows] or ["no records yet"],
                        vertical_spacing=min(0.12, 0.5 / nrows), horizontal_spacing=0.08)
    for i, row in enumerate(rows):
        r, c = i // cols + 1, i % cols + 1
        for arm, label, color in ARMS:
            curves = row.curves.get(arm)
            if not curves:
                continue
            ep, mean, sd, cnt = epoch_band(curves)
            hover = [f"{label}, epoch {e}: {100 * m:.2f} ± {100 * s:.2f} % (n={k})"
                     for e, m, s, k in zip(ep, mean, sd, cnt)]
            fig.add_trace(go.Scatter(x=np.concatenate([ep, ep[::-1]]), y=100 * np.concatenate([mean + sd,
                                                                                               (mean - sd)[::-1]]),
                                     fill="toself", fillcolor=_rgba(color, 0.18), line={"width": 0},
                                     hoverinfo="skip", showlegend=False, legendgroup=label), row=r, col=c)
            fig.add_trace(go.Scatter(x=ep, y=100 * mean, mode="lines+markers", name=label, legendgroup=label,
                                     line={"color": color}, text=hover, hoverinfo="text", showlegend=i == 0),
                          row=r, col=c)
        fig.update_xaxes(title_text="epoch", row=r, col=c)
        fig.update_yaxes(title_text="test top-1 (%)", row=r, col=c)
    fig.update_layout(height=max(320, 300 * nrows), margin={"l": 50, "r": 20, "t": 60, "b": 40},
                      title={"text": f"{table.grid}: test top-1 per epoch (mean ± sd over seeds)", "x": 0.01},
                      legend={"orientation": "h", "y": 1.08, "x": 1, "xanchor": "right"})
    return fig


def write_curves_html(table: Table, path: str | os.PathLike) -> Path:
    """The interactive figure as one self-contained HTML file (plotly inlined, no CDN)."""
    fig = curves_figure(table)
    with atomic_path(path) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    return Path(path)


def write_curves_png(table: Table, path: str | os.PathLike, cols: int = 2) -> Path:
    """The same figure as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = table.rows or []
    n = max(len(rows), 1)
    cols = min(cols, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    for i, row in enumerate(rows):
        ax = axes.flat[i]
        for arm, label, color in ARMS:
            curves = row.curves.get(arm)
            if not curves:
                continue
            ep, mean, sd, cnt = epoch_band(curves)
            ax.fill_between(ep, 100 * (mean - sd), 100 * (mean + sd), color=color, alpha=0.18, linewidth=0)
            ax.plot(ep, 100 * mean, marker="o", ms=3, color=color, label=f"{label} (n={int(cnt.max())})")
        ax.set_title(_title(row), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{table.grid}: test top-1 per epoch (mean ± sd over seeds)", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def write_table_outputs(table: Table, out: str | os.PathLike, fusion: list[Any] | None = None) -> dict[str, Path]:
    """``table.md``, ``table.csv``, ``table.json``, ``curves.png`` and ``curves.html`` in ``out``."""
    import json

    from stdcl.experiment.table import to_csv, to_json, to_markdown
    from stdcl.io import write_json_atomic, write_text_atomic

    d = Path(out)
    make_folder(d)
    md = to_markdown(table)
    doc = to_json(table)
    if fusion:
        md += "\n" + fusion_markdown(fusion)
        from dataclasses import asdict

        doc["fusion"] = [asdict(f) for f in fusion]
    paths = {"md": d / "table.md", "csv": d / "table.csv", "json": d / "table.json", "png": d / "curves.png",
             "html": d / "curves.html"}
    write_text_atomic(paths["md"], md)
    write_text_atomic(paths["csv"], to_csv(table))
    write_json_atomic(paths["json"], json.loads(json.dumps(doc, default=str)))
    write_curves_png(table, paths["png"])
    write_curves_html(table, paths["html"])
    return paths


def fusion_markdown(rows: list[Any]) -> str:
    from stdcl.experiment.table import format_gain, format_pct

    lines = ["| cell | 4-stream baseline | 4-stream STD-CL | gain [95 % CI] | n |", "|---|---|---|---|---|"]
    for r in rows:
        key = ", ".join(f"{k}={v}" for k, v in r.key.items()) or "all"
        lines.append(f"| {key} | {format_pct(r.baseline)} | {format_pct(r.stdcl)} | {format_gain(r.gain)} | {r.gain.n} |")
    notes = [n for r in rows for n in r.notes]
    text = "\n".join(lines) + "\n\nFusion of joint, bone, joint-motion and bone-motion scores per seed, weights tuned " \
                              "on the validation split (`stdcl ensemble`).\n"
    if notes:
        text += "".join(f"- {n}\n" for n in notes)
    return text


# -- a results folder as the app's Results page reads it ----------------------------------------------
@dataclass
class GridResults:
    """A grid's table from its records; ``grid`` is None when only the records could be read."""

    table: Table
    results: Path
    runs: Path | None
    grid: Any | None
    note: str = ""


def open_results(grid_file: str | os.PathLike | None, results: str | os.PathLike | None = None) -> GridResults:
    """The table of a grid file's records (``results``: its records folder, default the grid's).

    When the grid file cannot be expanded here (e.g. a ``$STDCL_DATA`` it needs is unset), the
    records alone are tabulated (no stale / missing detection) and ``note`` says why.
    """
    from stdcl.errors import DataError, StdclError
    from stdcl.experiment.grid import load_grid
    from stdcl.experiment.records import read_records
    from stdcl.experiment.status import results_dir, runs_root
    from stdcl.experiment.table import aggregate, build_table
    from stdcl.io import user_path

    grid, note = None, ""
    grid_file = None if grid_file is None else user_path(grid_file)  # one line for a path no file can have
    results = None if results is None else user_path(results)
    if grid_file is not None:
        try:
            grid = load_grid(grid_file)
        except StdclError as e:
            if results is None:
                guess = _default_results(Path(grid_file))
                if guess is None:
                    raise
                results = guess
            note = f"grid not expanded ({e}); the table is built from the records alone"
    if grid is not None:
        folder = results_dir(grid, results)
        records = read_records(folder) if folder.is_dir() else []
        table = build_table(grid, records)
        return GridResults(table, folder, runs_root(grid), grid, note)
    if results is None:
        raise DataError(None, "give a grid file or a results folder")
    folder = results.resolve()
    if folder.is_file():
        raise DataError(folder, "is a file; give a results folder (results/<grid>) or the grid file as the grid")
    if not folder.is_dir():
        raise DataError(folder, "no such results folder")
    records = read_records(folder)
    name = records[0]["grid"] if records else folder.name
    return GridResults(aggregate(records, name), folder, None, None, note)


def _default_results(grid_file: Path) -> Path | None:
    """``results/<file stem>`` of the grid file's project, when it exists (for grids that do not expand here)."""
    from stdcl.experiment.status import project_root

    root = project_root(grid_file)
    cand = root / "results" / grid_file.stem if root is not None else None
    return cand if cand is not None and cand.is_dir() else None


def run_pair(row: Row, seed: str, runs: Path | None = None) -> dict[str, Path | None]:
    """The STD-CL (``on``) and baseline (``off``) run directories of ``row`` for ``seed``: the
    record's ``run_dir`` when it still exists, else ``runs/<cell>``, else None (deleted)."""
    out: dict[str, Path | None] = {}
    for arm in ("on", "off"):
        cell = row.cells.get(arm, {}).get(seed)
        found = None
        for cand in (row.run_dirs.get(arm, {}).get(seed), runs / cell if runs is not None and cell else None):
            if cand and Path(cand).is_dir():
                found = Path(cand)
                break
        out[arm] = found
    return out


def row_label(row: Row) -> str:
    """A table row as shown in the app (``encoder=hcn``; ``all`` for a one-row grid)."""
    return ", ".join(f"{k}={v}" for k, v in row.key.items()) or "all"
