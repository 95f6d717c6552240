"""The embedding scatter every page draws (a 2-D projection, one point per sample), readable from a
few hundred to tens of thousands of points, and the class palette.

Each point's row (its position in the :class:`~analysis.embeddings.Embeddings`) is in
``customdata[:, 0]``: plotly reports selections per trace, :func:`selected_rows` turns a selection
payload back into rows. A chart can carry a second column, the row it links to (model B's charts:
model A's row of the same sample), and its highlight style in ``layout.meta["highlight"]``
(:func:`highlight_style`): the app's linked charts highlight a selection in the browser from these,
without rebuilding the figure. Large N: points shrink and fade with N (:func:`marker_scale`), a grey
density layer (trace ``density``) shows where points pile up, WebGL draws above
:data:`WEBGL_ABOVE` points, and arrays travel compactly (float32 coordinates, int32 rows). Above ``max_points`` a stratified subset
is drawn (:func:`drawn_mask`); :func:`points_outside` gives the selected samples it leaves out, for the app to
draw on top.
Re-exported by :mod:`analysis.figures`, the one entry point.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from analysis.datasets import stratified_subset
from analysis.embeddings import Embeddings
from stdcl.errors import ConfigError

COLOR_BY = ("label", "prediction", "correct", "twin")
PALETTE: tuple[str, ...] = tuple(qualitative.Plotly + qualitative.D3[1:] + qualitative.Alphabet)
GREY = "#b0b0b0"
WEBGL_ABOVE = 5000  # scatter plots with more points than this use WebGL
DENSITY_ABOVE = 5000  # more points than this: a density layer under them
DENSITY_BINS = 90  # cells of the density layer along its longer side
SMALL_N = 1000  # up to this many points: full-size, nearly opaque markers
#: ``st.plotly_chart`` / ``Plotly.newPlot`` config of the scatter: WebGL canvases at one device pixel per CSS
#: pixel (plotly's default 2 quadruples the pixels to fill; 50,000 points redraw in 0.38 s instead of 0.65 s
#: per chart in a software-rendered browser).
CHART_CONFIG = {"plotGlPixelRatio": 1}


def color_of(i: int) -> str:
    """The ``i``-th categorical colour (cycles)."""
    return PALETTE[i % len(PALETTE)]


def marker_scale(n: int) -> tuple[float, float]:
    """Marker size (px) and opacity for ``n`` points: 6 px at 0.8 up to :data:`SMALL_N`, then smaller
    (~n^-1/4, at least 2 px) and fainter (~n^-0.3, at least 0.25), so that overlapping points add up
    to shades instead of one solid blot (50,000 points: 2.3 px at 0.25)."""
    if n <= SMALL_N:
        return 6.0, 0.8
    r = SMALL_N / n
    return max(2.0, 6.0 * r ** 0.25), max(0.25, 0.8 * r ** 0.3)


def highlight_style(size: float, opacity: float) -> dict[str, Any]:
    """How a linked selection draws markers of base ``size`` / ``opacity`` (:func:`marker_scale`):
    selected points 4 px larger, opaque and outlined (``on``), the others 1 px smaller and faint (``off``).
    Both :func:`embedding_scatter` (``highlight_rows``) and the app's in-browser highlight use it."""
    return {"size": float(size), "opacity": float(opacity),
            "on": {"size": float(size + 4), "opacity": 1.0, "line": 1.0 if size >= 4 else 0.5},
            "off": {"size": float(max(size - 1, 1.5)), "opacity": float(max(0.04, 0.15 * opacity)), "line": 0.0}}


def _check_coords(coords: np.ndarray, n: int) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float32)
    if coords.ndim != 2 or coords.shape != (n, 2):
        raise ConfigError(f"coordinates of shape {coords.shape} for {n} samples; expected ({n}, 2)")
    return coords


def _groups(emb: Embeddings, color_by: str) -> list[dict[str, Any]]:
    """Colour groups: ``name``, ``color``, ``symbol``, ``legendgroup`` and the boolean ``mask`` of rows."""
    names = emb.class_names
    if color_by in ("label", "prediction"):
        values = emb.labels if color_by == "label" else emb.predictions
        return [{"name": names[k], "color": color_of(k), "symbol": "circle", "legendgroup": names[k],
                 "mask": values == k} for k in range(len(names)) if np.any(values == k)]
    if color_by == "correct":
        ok = emb.correct
        return [g for g in ({"name": "correct", "color": "#2ca02c", "symbol": "circle", "legendgroup": "correct",
                             "mask": ok},
                            {"name": "wrong", "color": "#d62728", "symbol": "x", "legendgroup": "wrong",
                             "mask": ~ok}) if g["mask"].any()]
    if color_by == "twin":
        meta = emb.class_meta or [{} for _ in names]
        groups, pair_color, untwinned = [], {}, np.zeros(len(emb), bool)
        for k, name in enumerate(names):
            mask = emb.labels == k
            twin = meta[k].get("twin") if k < len(meta) else None
            if twin is None:
                untwinned |= mask
                continue
            pair = (min(k, twin), max(k, twin))
            pair_color.setdefault(pair, color_of(len(pair_color)))
            if mask.any():
                ttype = meta[k].get("twin_type") or "twin"
                groups.append({"name": f"{name} ({ttype})", "color": pair_color[pair],
                               "symbol": "circle" if k == pair[0] else "diamond",
                               "legendgroup": f"{names[pair[0]]} / {names[pair[1]]}", "mask": mask})
        if untwinned.any():
            groups.append({"name": "no twin", "color": GREY, "symbol": "circle", "legendgroup": "no twin",
                           "mask": untwinned})
        return groups
    raise ConfigError(f"colour by {color_by!r}: choose one of {', '.join(COLOR_BY)}")


def hover_texts(emb: Embeddings, rows: np.ndarray | None = None) -> np.ndarray:
    """Each sample's hover text (an object array; of ``rows`` only when given): its name, then its true
    class and ✓, or the wrong prediction and ✗ (short: at 50,000 points the hover texts are most of a
    chart's bytes)."""
    rows = np.arange(len(emb)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    names = np.asarray(emb.class_names, dtype=object)
    preds, labels = emb.predictions[rows], emb.labels[rows]
    tail = np.where(preds != labels, ", predicted " + names[preds] + " ✗", " ✓")
    return np.asarray(emb.names, dtype=object)[rows] + "<br>" + names[labels] + tail


def density_layer(coords: np.ndarray, bins: int = DENSITY_BINS) -> go.Heatmap:
    """A grey heatmap of how many points fall in each cell (log scale, empty cells transparent), drawn
    under the points; it takes no hover or clicks (``hoverinfo="skip"``)."""
    lo, hi = coords.min(0), coords.max(0)
    span = np.maximum(hi - lo, 1e-9)
    nx, ny = (np.maximum(4, np.round(bins * span / span.max())).astype(int))
    counts, xe, ye = np.histogram2d(coords[:, 0], coords[:, 1], bins=(nx, ny), range=[(lo[0], hi[0]), (lo[1], hi[1])])
    z = np.log1p(counts.T)
    z[counts.T == 0] = np.nan
    return go.Heatmap(z=z.astype(np.float32), x=((xe[:-1] + xe[1:]) / 2).astype(np.float32),
                      y=((ye[:-1] + ye[1:]) / 2).astype(np.float32), name="density", showscale=False,
                      colorscale=[[0.0, "rgba(120,120,120,0.10)"], [1.0, "rgba(40,40,40,0.45)"]],
                      zsmooth="best", hoverinfo="skip", showlegend=False)


def drawn_mask(emb: Embeddings, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Which rows :func:`embedding_scatter` draws with ``max_points`` (and no highlighted rows): all of them,
    or a seeded stratified subset of ``max_points`` when there are more."""
    shown = np.ones(len(emb), bool)
    if max_points is not None and max_points < len(emb):
        shown[:] = False
        shown[stratified_subset(emb.labels, max(int(max_points), 1), seed)] = True
    return shown


def points_outside(coords: np.ndarray, emb: Embeddings, color_by: str, selected: Sequence[int] | np.ndarray,
                   max_points: int | None, seed: int = 0,
                   link_rows: Sequence[int] | np.ndarray | None = None) -> dict[str, list] | None:
    """The ``selected`` samples (link ids: rows, or ``link_rows`` values) that the chart
    ``embedding_scatter(coords, emb, color_by, max_points=..., link_rows=...)`` does not draw, as the app's
    in-browser highlight draws them on top: ``rows``, ``ids`` (link ids), ``x``, ``y``, ``color`` (that of
    their colour group) and ``text`` (their :func:`hover_texts`, shown on hover), one entry per sample; None
    when every selected sample is drawn."""
    n = len(emb)
    coords = _check_coords(coords, n)
    ids = np.arange(n) if link_rows is None else np.asarray(link_rows, dtype=np.int64).reshape(-1)
    if ids.shape != (n,):
        raise ConfigError(f"{ids.size} linked rows for {n} samples")
    wanted = np.asarray(selected, dtype=np.int64).reshape(-1)
    rows = np.flatnonzero(~drawn_mask(emb, max_points, seed) & np.isin(ids, wanted) & (ids >= 0)) if wanted.size \
        else np.zeros(0, np.int64)
    if not rows.size:
        return None
    color = np.full(rows.size, GREY, dtype=object)
    for g in _groups(emb, color_by):
        color[g["mask"][rows]] = g["color"]
    return {"rows": rows.tolist(), "ids": ids[rows].tolist(), "x": coords[rows, 0].astype(float).tolist(),
            "y": coords[rows, 1].astype(float).tolist(), "color": color.tolist(),
            "text": hover_texts(emb, rows).tolist()}


def embedding_scatter(coords: np.ndarray, emb: Embeddings, color_by: str = "label",
                      highlight_rows: Sequence[int] | np.ndarray | None = None, title: str = "",
                      max_points: int | None = None, seed: int = 0, webgl: bool | None = None,
                      height: int = 520, density: bool | None = None,
                      link_rows: Sequence[int] | np.ndarray | None = None) -> go.Figure:
    """A 2-D projection of ``emb``: one trace per colour group, row ids in ``customdata[:, 0]``.

    ``link_rows`` (one per row, -1 for none) adds ``customdata[:, 1]``: the row each point stands for in
    the charts it is linked with (B's charts: A's row of the same sample). ``layout.meta["highlight"]`` is
    the :func:`highlight_style` of the points drawn.

    ``highlight_rows`` are drawn 4 px larger, opaque and outlined, the others smaller and faint
    (linked selection). ``max_points`` draws a seeded stratified subset (highlighted rows always
    kept) and says so in an annotation named ``subset-note``. Marker size and opacity follow the
    number of points drawn (:func:`marker_scale`); ``density`` (default: above :data:`DENSITY_ABOVE`
    points) adds the :func:`density_layer`. The chart starts in pan mode: there a click selects the
    point under the cursor (in Streamlit's box / lasso modes a click selects nothing).
    """
    n = len(emb)
    coords = _check_coords(coords, n)
    shown = np.ones(n, bool)
    hl = np.zeros(n, bool)
    if highlight_rows is not None:
        rows = np.asarray(highlight_rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ConfigError(f"highlighted rows outside 0..{n - 1}")
        hl[rows] = True
    subset = max_points is not None and max_points < n
    if subset:
        shown = drawn_mask(emb, max_points, seed) | hl
    drawn = int(shown.sum())
    size, opacity = marker_scale(drawn)
    use_gl = webgl if webgl is not None else drawn > WEBGL_ABOVE
    trace_type = go.Scattergl if use_gl else go.Scatter
    hover = hover_texts(emb)
    style = highlight_style(size, opacity)
    if link_rows is not None:
        link_rows = np.asarray(link_rows, dtype=np.int64).reshape(-1)
        if link_rows.shape != (n,):
            raise ConfigError(f"{link_rows.size} linked rows for {n} samples")
    fig = go.Figure()
    if density if density is not None else drawn > DENSITY_ABOVE:
        fig.add_trace(density_layer(coords[shown]))
    for g in _groups(emb, color_by):
        rows = np.flatnonzero(g["mask"] & shown)
        if not rows.size:
            continue
        if highlight_rows is None:
            marker = dict(color=g["color"], symbol=g["symbol"], size=size, opacity=opacity)
        else:
            on, yes, no = hl[rows], style["on"], style["off"]
            marker = dict(color=g["color"], symbol=g["symbol"],
                          size=np.where(on, yes["size"], no["size"]).astype(np.float32),
                          opacity=np.where(on, yes["opacity"], no["opacity"]).astype(np.float32),
                          line=dict(width=np.where(on, yes["line"], no["line"]).astype(np.float32), color="black"))
        custom = rows.reshape(-1, 1) if link_rows is None else np.stack([rows, link_rows[rows]], axis=1)
        fig.add_trace(trace_type(x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=g["name"],
                                 legendgroup=g["legendgroup"], marker=marker,
                                 customdata=custom.astype(np.int32), hovertext=hover[rows],
                                 hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(title=title or None, height=height, margin=dict(l=10, r=10, t=60 if title else 30, b=10),
                      legend=dict(itemsizing="constant", font=dict(size=10)), dragmode="pan",
                      meta={"highlight": style},
                      plot_bgcolor="white", xaxis=dict(showticklabels=False, showgrid=False, zeroline=False),
                      yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x"))
    if subset:
        fig.add_annotation(name="subset-note", text=f"showing {drawn:,} of {n:,} points "
                           f"(stratified sample, seed {seed})", xref="paper", yref="paper", x=0, y=1.0,
                           xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=11, color="#555"))
    return fig


def selected_rows(event: Any) -> np.ndarray:
    """Sorted unique row ids of a selection: a Streamlit ``plotly_chart`` event, its ``selection``,
    or a plotly ``{"points": [...]}``; ``customdata`` as a list or a dict keyed ``"0"``."""
    if event is None:
        return np.zeros(0, np.int64)
    sel = event.get("selection", event) if isinstance(event, Mapping) else getattr(event, "selection", event)
    points = (sel.get("points") if isinstance(sel, Mapping) else getattr(sel, "points", None)) or []
    rows = []
    for p in points:
        cd = p.get("customdata", p.get("custom_data")) if isinstance(p, Mapping) else None
        if cd is None:
            continue
        if isinstance(cd, Mapping):
            cd = cd.get("0", cd.get(0))
        elif isinstance(cd, (list, tuple, np.ndarray)):
            cd = cd[0] if len(cd) else None
        if cd is not None:
            rows.append(int(cd))
    return np.unique(np.asarray(rows, dtype=np.int64))
