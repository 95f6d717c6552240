"""Plotly figures shared by the HTML report and the Streamlit app (which draws nothing else).

Every builder is a pure function of arrays (and a :class:`~stdcl.data.layouts.Layout` where
joints are named) returning a ``plotly.graph_objects.Figure``; no maths beyond what a picture
needs (subsetting, normalising a confusion matrix) happens here.

The embedding scatter and the class palette live in :mod:`analysis.embedding_figure`, the
animated skeleton in :mod:`analysis.skeleton_figure`; both are re-exported here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.embedding_figure import (  # noqa: F401  (figures.* is the one entry point)
    CHART_CONFIG,
    COLOR_BY,
    DENSITY_ABOVE,
    GREY,
    PALETTE,
    WEBGL_ABOVE,
    color_of,
    drawn_mask,
    embedding_scatter,
    highlight_style,
    marker_scale,
    points_outside,
    selected_rows,
)
from analysis.skeleton_figure import skeleton_figure  # noqa: F401  (figures.* is the one entry point)
from stdcl.data.layouts import Layout
from stdcl.errors import ConfigError


def selected_cell(event: Any, class_names: Sequence[str]) -> tuple[int, int] | None:
    """``(true, predicted)`` of the first selected cell of a clickable :func:`confusion_figure`: the
    marker's ``customdata`` (list, or dict keyed ``"0"``, ``"1"``), else the point's ``x`` / ``y`` names."""
    if event is None:
        return None
    names = list(class_names)
    sel = event.get("selection", event) if isinstance(event, Mapping) else getattr(event, "selection", None)
    points = (sel.get("points") if isinstance(sel, Mapping) else None) or []
    for pt in points:
        cd = pt.get("customdata") if isinstance(pt, Mapping) else None
        if isinstance(cd, Mapping) and "0" in cd and "1" in cd:
            return int(cd["0"]), int(cd["1"])
        if isinstance(cd, (list, tuple)) and len(cd) >= 2:
            return int(cd[0]), int(cd[1])
        if isinstance(pt, Mapping) and pt.get("y") in names and pt.get("x") in names:
            return names.index(pt["y"]), names.index(pt["x"])
    return None


# ------------------------------------------------------------------------------------------- heat maps, bars


def frames_joints_heatmap(values: np.ndarray, layout: Layout, title: str = "", value_label: str = "value",
                          height: int = 520) -> go.Figure:
    """A frames x joints map ``values`` ``(T, V)``: joints (named) down, frames across."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != layout.num_joints:
        raise ConfigError(f"values of shape {values.shape}: expected (T, {layout.num_joints})")
    fig = go.Figure(go.Heatmap(z=values.T, x=np.arange(values.shape[0]), y=list(layout.joints),
                               colorscale=_scale(values), zmid=0 if (values < 0).any() else None,
                               zmin=None if (values < 0).any() else 0.0,
                               zmax=None if (values < 0).any() else max(float(values.max(initial=0.0)), 1e-12),
                               colorbar=dict(title=dict(text=value_label)),
                               hovertemplate="frame %{x}<br>%{y}<br>" + value_label + ": %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title or None, height=height, xaxis_title="frame", yaxis=dict(autorange="reversed"),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def _scale(values: np.ndarray) -> str:
    return "RdBu_r" if (np.asarray(values) < 0).any() else "Viridis"


def contribution_curve(values: np.ndarray, title: str = "", value_label: str = "contribution",
                       x: np.ndarray | None = None, xlabel: str = "frame", height: int = 300) -> go.Figure:
    """A per-frame curve ``values`` ``(T,)`` (e.g. each frame's share of a similarity)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    xs = np.arange(len(values)) if x is None else np.asarray(x)
    fig = go.Figure(go.Scatter(x=xs, y=values, mode="lines+markers", name=value_label,
                               hovertemplate=xlabel + " %{x}<br>" + value_label + ": %{y:.4g}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(title=title or None, height=height, xaxis_title=xlabel, yaxis_title=value_label,
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), plot_bgcolor="white")
    return fig


def joint_bar(values: np.ndarray, layout: Layout, title: str = "", value_label: str = "contribution",
              height: int = 360) -> go.Figure:
    """Per-joint ``values`` ``(V,)`` as bars named by joint (positive blue, negative red)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (layout.num_joints,):
        raise ConfigError(f"{values.shape[0]} joint values for layout {layout.name!r} ({layout.num_joints} joints)")
    fig = go.Figure(go.Bar(x=list(layout.joints), y=values, marker_color=np.where(values >= 0, "#1f77b4", "#d62728"),
                           hovertemplate="%{x}<br>" + value_label + ": %{y:.4g}<extra></extra>"))
    fig.update_layout(title=title or None, height=height, yaxis_title=value_label, xaxis_tickangle=-45,
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), plot_bgcolor="white")
    return fig


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows summing to zero stay zero)."""
    m = np.asarray(matrix, dtype=np.float64)
    s = m.sum(1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], normalise: bool = True, title: str = "",
                     height: int | None = None, clickable: bool = False,
                     marked: tuple[int, int] | None = None) -> go.Figure:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised by default; counts on hover.

    ``clickable``: an invisible marker on every cell centre (``customdata`` ``[true, predicted, count,
    share]``): plotly.js reports no selection for heatmap cells, a marker's click is reported (read it
    back with :func:`selected_cell`). ``marked``: outline cell ``(true, predicted)``.
    """
    counts = np.asarray(matrix)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ConfigError(f"confusion matrix of shape {counts.shape} for {k} classes")
    z = normalise_rows(counts) if normalise else counts.astype(np.float64)
    show_text = k <= 20
    fig = go.Figure(go.Heatmap(
        z=z, x=list(class_names), y=list(class_names), colorscale="Blues", zmin=0,
        zmax=1 if normalise else None, customdata=counts,
        # empty cells stay blank: the few non-zero numbers stand out and have room
        text=np.vectorize(lambda v: "" if v == 0 else f"{v:.2f}" if normalise else f"{v:.0f}")(z)
        if show_text else None,
        texttemplate="%{text}" if show_text else None, textfont=dict(size=13 if k <= 10 else 11 if k <= 15 else 9),
        hovertemplate="true %{y}<br>predicted %{x}<br>count %{customdata}" +
                      ("<br>share of the row %{z:.3f}" if normalise else "") + "<extra></extra>"))
    fig.update_layout(title=title or None, height=height or max(420, (36 if k <= 20 else 22) * k + 180),
                      xaxis=dict(title="predicted", tickangle=-45), yaxis=dict(title="true", autorange="reversed"),
                      margin=dict(l=10, r=10, t=70 if title else 44, b=10))  # the top margin holds the toolbar
    if clickable:
        _clickable_cells(fig, counts, list(class_names))
    if marked is not None:
        t, p = marked  # category positions: column = predicted, row = true
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5, xref="x", yref="y",
                      line={"color": "#d62728", "width": 2.5}, name="chosen-cell")
    return fig


def _clickable_cells(fig: go.Figure, counts: np.ndarray, class_names: list[str]) -> None:
    """An invisible marker per cell centre; ``hoverdistance=-1``: the cell under the pointer answers anywhere in it."""
    k = len(class_names)
    t, p = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    t, p = t.ravel(), p.ravel()
    share = normalise_rows(counts)[t, p]
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector={"type": "heatmap"})
    fig.add_trace(go.Scatter(
        x=[class_names[j] for j in p], y=[class_names[i] for i in t], mode="markers", name="cells",
        marker={"size": 8, "opacity": 0.0, "symbol": "square"}, showlegend=False,
        customdata=np.stack([t, p, counts[t, p], share], 1),
        hovertemplate="true %{y}<br>predicted %{x}<br>count %{customdata[2]}<br>share of the row "
                      "%{customdata[3]:.3f}<br><i>click to list these samples</i><extra></extra>"))
    fig.update_layout(hoverdistance=-1, dragmode=False)


def confusion_change_figure(delta: np.ndarray, class_names: Sequence[str], title: str = "",
                            height: int | None = None) -> go.Figure:
    """Change of a (row-normalised) confusion matrix between two checkpoints, diverging around 0."""
    delta = np.asarray(delta, dtype=np.float64)
    k = len(class_names)
    vmax = float(np.abs(delta).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=delta, x=list(class_names), y=list(class_names), colorscale="RdBu", zmid=0,
                               zmin=-vmax, zmax=vmax,
                               hovertemplate="true %{y}<br>predicted %{x}<br>change %{z:+.3f}<extra></extra>"))
    fig.update_layout(title=title or None, height=height or max(360, 22 * k + 160),
                      xaxis=dict(title="predicted", tickangle=-45), yaxis=dict(title="true", autorange="reversed"),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def similarity_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "",
                             value_label: str = "cosine", height: int | None = None) -> go.Figure:
    """A class x class matrix (e.g. centroid cosine similarity)."""
    m = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if m.shape != (k, k):
        raise ConfigError(f"matrix of shape {m.shape} for {k} classes")
    fig = go.Figure(go.Heatmap(z=m, x=list(class_names), y=list(class_names), colorscale=_scale(m),
                               zmid=0 if (m < 0).any() else None, colorbar=dict(title=dict(text=value_label)),
                               hovertemplate="%{y}<br>%{x}<br>" + value_label + ": %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title or None, height=height or max(360, 22 * k + 160), xaxis=dict(tickangle=-45),
                      yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def relation_heatmap(matrix: np.ndarray, layout: Layout, title: str = "", value_label: str = "weight",
                     height: int = 560) -> go.Figure:
    """A joint x joint relation map ``(V, V)`` (learned adjacency, attention), joints named."""
    m = np.asarray(matrix, dtype=np.float64)
    v = layout.num_joints
    if m.shape != (v, v):
        raise ConfigError(f"relation map of shape {m.shape} for layout {layout.name!r} ({v} joints)")
    fig = go.Figure(go.Heatmap(z=m, x=list(layout.joints), y=list(layout.joints), colorscale=_scale(m),
                               zmid=0 if (m < 0).any() else None, colorbar=dict(title=dict(text=value_label)),
                               hovertemplate="%{y} <- %{x}<br>" + value_label + ": %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title or None, height=height, xaxis=dict(tickangle=-45),
                      yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


#: Panels per row of :func:`metrics_bar` (more side by side and their titles collide).
PANELS_PER_ROW = 4


def metrics_bar(rows: Sequence[Mapping[str, Any]], label_a: str = "A", label_b: str = "B",
                metrics: Sequence[str] | None = None, title: str = "", height: int = 360) -> go.Figure:
    """Two checkpoints side by side: rows ``{"space", "metric", "a", "b", ...}`` (``compare_metrics``),
    one panel per metric, the spaces along each panel."""
    from analysis.metrics import metric_name

    metrics = list(metrics or dict.fromkeys(r["metric"] for r in rows))
    if not metrics:
        raise ConfigError("no metrics to compare")
    cols = min(len(metrics), PANELS_PER_ROW)
    n_rows = -(-len(metrics) // cols)
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[metric_name(m) for m in metrics],
                        horizontal_spacing=0.06, vertical_spacing=0.5 / n_rows if n_rows > 1 else 0.0)
    for i, metric in enumerate(metrics):
        sel = [r for r in rows if r["metric"] == metric]
        spaces = [r["space"] for r in sel]
        for key, label, color in (("a", label_a, "#7f7f7f"), ("b", label_b, "#1f77b4")):
            fig.add_trace(go.Bar(x=spaces, y=[_num(r[key]) for r in sel], name=label, marker_color=color,
                                 legendgroup=key, showlegend=i == 0,
                                 hovertemplate=f"{label}<br>%{{x}}<br>{metric_name(metric)}: %{{y:.4g}}"
                                               "<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_annotations(font_size=13)
    fig.update_layout(title=title or None, barmode="group", height=height * n_rows, plot_bgcolor="white",
                      margin=dict(l=10, r=10, t=60 if title else 40, b=10))
    return fig


def twin_pairs_figure(rows: Sequence[Mapping[str, Any]], metric: str = "knn_accuracy", title: str = "",
                      height: int = 360) -> go.Figure:
    """One ``metric`` of each twin pair (``twin_separation`` rows), a bar per embedding space."""
    if not rows:
        raise ConfigError("no twin pairs to show")
    pairs = [f"{r['pair']} ({r['type']})".replace(" vs ", " vs<br>", 1) for r in rows]
    spaces = list(dict.fromkeys(s for r in rows for s in r["spaces"]))
    fig = go.Figure()
    for i, space in enumerate(spaces):
        fig.add_trace(go.Bar(x=pairs, y=[_num(r["spaces"].get(space, {}).get(metric)) for r in rows], name=space,
                             marker_color=color_of(i),
                             hovertemplate=f"{space}<br>%{{x}}<br>{metric}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(title=title or None, barmode="group", height=height, yaxis_title=metric, plot_bgcolor="white",
                      xaxis=dict(tickangle=-30, automargin=True, tickfont=dict(size=10)),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
