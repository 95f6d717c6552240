"""Figures of a training evolution (:mod:`analysis.evolution`), shared by its HTML report and the app.

A snapshot's projection is the embedding scatter of every other page (:func:`analysis.figures.embedding_scatter`)
with axes fixed over all snapshots and a transition, so that a figure updated in place (``Plotly.react``)
moves every point from where it was (the projections are aligned across snapshots). Streamlit's
``st.plotly_chart`` (1.67) mounts a new chart whenever the figure changes (its element id hashes the
figure), so there the points jump to the next snapshot; :func:`animation_figure` (the report, the app's
smooth playback) holds every snapshot as a plotly frame and plays them in the browser, gliding.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.evolution import CURVES, Evolution
from analysis.figures import color_of, embedding_scatter
from stdcl.errors import ConfigError

#: How the spaces are named on screen.
SPACE_TITLES = {"spatial": "spatial (head s)", "temporal": "temporal (head t)", "spatial_pooled": "spatial, pooled",
                "temporal_pooled": "temporal, pooled", "global": "global (classifier input)"}
TRANSITION_MS = 450


def main_spaces(evo: Evolution) -> list[str]:
    """The spatial / temporal pair to show first: the head's for an STD-CL run, else the pooled ones."""
    pair = ["spatial", "temporal"] if "spatial" in evo.coords else ["spatial_pooled", "temporal_pooled"]
    return [s for s in pair if s in evo.coords]


def space_title(evo: Evolution, space: str) -> str:
    if space in ("spatial", "temporal") and not evo.series.stdcl:
        return f"{space}, pooled"
    return SPACE_TITLES.get(space, space)


def axis_ranges(coords: np.ndarray, pad: float = 0.05) -> tuple[list[float], list[float]]:
    """x and y ranges covering every snapshot of ``coords`` (S, N, 2), padded."""
    lo, hi = coords.reshape(-1, 2).min(0), coords.reshape(-1, 2).max(0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - pad * span, hi + pad * span
    return [float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])]


def snapshot_figure(evo: Evolution, space: str, i: int, color_by: str = "label",
                    highlight_rows: Sequence[int] | np.ndarray | None = None, height: int = 460,
                    title: str | None = None) -> go.Figure:
    """Snapshot ``i`` of ``space``: the embedding scatter on axes fixed over all snapshots, with a transition."""
    emb = evo.embeddings(i)
    coords = evo.coords[space]
    fig = embedding_scatter(coords[i], emb, color_by=color_by, highlight_rows=highlight_rows, height=height,
                            title=title if title is not None else
                            f"{evo.label}: {space_title(evo, space)}, epoch {evo.epochs[i]:g}")
    xr, yr = axis_ranges(coords)
    fig.update_layout(xaxis_range=xr, yaxis_range=yr, uirevision=f"{evo.label}:{space}",
                      transition=dict(duration=TRANSITION_MS, easing="cubic-in-out"))
    fig.update_yaxes(scaleanchor=None)  # fixed ranges: keep them as given
    return fig


def twin_rows(evo: Evolution, pair: tuple[int, int]) -> np.ndarray:
    """Rows of the probe samples of the two classes of a twin ``pair``."""
    return np.flatnonzero(np.isin(evo.series.labels, pair))


def animation_figure(evo: Evolution, spaces: Sequence[str] | None = None, color_by: str = "label",
                     height: int = 520, highlight_rows: Sequence[int] | np.ndarray | None = None,
                     start: int = 0) -> go.Figure:
    """The spaces (default :func:`main_spaces`) side by side, one frame per snapshot, with a slider and play /
    pause buttons (the report; the app's smooth playback), showing snapshot ``start`` first; ``highlight_rows``
    are drawn large in every frame, the others dimmed."""
    spaces = [s for s in (spaces or main_spaces(evo)) if s in evo.coords]
    if not spaces:
        raise ConfigError(f"{evo.label}: none of the spaces {list(spaces or [])} was probed")
    fig = make_subplots(rows=1, cols=len(spaces), subplot_titles=[space_title(evo, s) for s in spaces],
                        horizontal_spacing=0.04)

    def traces(i: int) -> list[tuple[str, go.BaseTraceType]]:
        out = []
        for c, s in enumerate(spaces):
            for tr in snapshot_figure(evo, s, i, color_by, highlight_rows).data:
                tr.update(xaxis=f"x{c + 1 if c else ''}", yaxis=f"y{c + 1 if c else ''}", showlegend=c == 0)
                out.append((s, tr))
        return out

    first = traces(start)
    fig.add_traces([tr for _, tr in first])
    if color_by in ("label", "twin"):  # groups by true class, the same in every snapshot: frames move x / y only
        moving = [(k, s, np.asarray(tr.customdata)[:, 0]) for k, (s, tr) in enumerate(first)
                  if tr.customdata is not None]
        fig.frames = [go.Frame(data=[go.Scatter(x=evo.coords[s][i][rows, 0], y=evo.coords[s][i][rows, 1])
                                     for _, s, rows in moving], traces=[k for k, _, _ in moving], name=f"{e:g}")
                      for i, e in enumerate(evo.epochs)]
    else:  # groups follow the predictions: whole traces per frame
        fig.frames = [go.Frame(data=[tr for _, tr in traces(i)], name=f"{e:g}") for i, e in enumerate(evo.epochs)]
    for c, s in enumerate(spaces):
        xr, yr = axis_ranges(evo.coords[s])
        fig.update_xaxes(range=xr, showticklabels=False, showgrid=False, zeroline=False, row=1, col=c + 1)
        fig.update_yaxes(range=yr, showticklabels=False, showgrid=False, zeroline=False, row=1, col=c + 1)
    play = dict(frame=dict(duration=700, redraw=True), transition=dict(duration=TRANSITION_MS), fromcurrent=True)
    fig.update_layout(
        height=height, plot_bgcolor="white", margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(itemsizing="constant", font=dict(size=10)),
        updatemenus=[dict(type="buttons", x=0, y=-0.02, xanchor="left", yanchor="top", direction="left", buttons=[
            dict(label="Play", method="animate", args=[None, play]),
            dict(label="Pause", method="animate", args=[[None], dict(mode="immediate", frame=dict(duration=0))])])],
        sliders=[dict(active=start, x=0.12, len=0.88, y=-0.02, currentvalue=dict(prefix="epoch ", xanchor="right"),
                      steps=[dict(label=f"{e:g}", method="animate",
                                  args=[[f"{e:g}"], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                         transition=dict(duration=TRANSITION_MS))])
                             for e in evo.epochs])])
    return fig


def curves_figure(evos: Sequence[Evolution], spaces: Sequence[str] | Sequence[Sequence[str]],
                  keys: Sequence[str] | None = None, epoch: float | None = None, height: int = 300) -> go.Figure:
    """One panel per metric (:data:`~analysis.evolution.CURVES`) against epoch: a line per space, solid for the
    first run and dashed for the second; ``epoch`` draws a vertical marker (the app's current snapshot).

    ``spaces``: the space names drawn for every run, or one list of names per run (e.g. a baseline's pooled
    spaces beside an STD-CL run's head spaces: the n-th space of each run gets the same colour)."""
    per_run = [list(spaces)] * len(evos) if not spaces or isinstance(spaces[0], str) else [list(s) for s in spaces]
    curves = [c for c in CURVES if keys is None or c[0] in keys]
    fig = make_subplots(rows=1, cols=len(curves), subplot_titles=[f"{name}<br>({better} is better)"
                                                                   for _, name, better in curves],
                        horizontal_spacing=0.05)
    dashes = ("solid", "dash", "dot")
    for c, (key, name, _) in enumerate(curves):
        for r, evo in enumerate(evos):
            for j, s in enumerate(sp for sp in per_run[r] if sp in evo.coords):
                y = [np.nan if v is None else v for v in evo.curve(s, key)]
                fig.add_trace(go.Scatter(x=evo.epochs, y=y, mode="lines+markers",
                                         name=f"{evo.label}: {space_title(evo, s)}", legendgroup=f"{r}:{s}",
                                         showlegend=c == 0,
                                         line=dict(color=color_of(j), dash=dashes[r % len(dashes)]),
                                         marker=dict(size=5), hovertemplate=f"{name}: %{{y:.3f}}<br>epoch %{{x}}"
                                                                            f"<extra>{evo.label}: {s}</extra>"),
                              row=1, col=c + 1)
        if epoch is not None:
            fig.add_vline(x=epoch, line=dict(color="#444", width=1, dash="dot"), row=1, col=c + 1)
        fig.update_xaxes(title_text="epoch", row=1, col=c + 1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=55, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", y=-0.25, font=dict(size=10)))
    fig.update_annotations(font_size=11)
    return fig


def accuracy_figure(evos: Sequence[Evolution], epoch: float | None = None, height: int = 300) -> go.Figure:
    """Probe top-1 (%) against epoch, a line per run (solid, then dashed); ``epoch`` draws a vertical marker."""
    fig = go.Figure()
    for r, evo in enumerate(evos):
        fig.add_trace(go.Scatter(x=evo.epochs, y=[100 * a for a in evo.accuracy], mode="lines+markers", name=evo.label,
                                 line=dict(color="#333", dash=("solid", "dash", "dot")[r % 3]), marker=dict(size=5),
                                 hovertemplate="probe top-1 %{y:.1f}%<br>epoch %{x}<extra>" + evo.label + "</extra>"))
    if epoch is not None:
        fig.add_vline(x=epoch, line=dict(color="#444", width=1, dash="dot"))
    fig.update_layout(title=dict(text="probe top-1 (%)", font=dict(size=11)), height=height, plot_bgcolor="white",
                      margin=dict(l=10, r=10, t=40, b=10), xaxis_title="epoch", yaxis_range=[0, 100],
                      legend=dict(x=0.98, xanchor="right", y=0.04, yanchor="bottom", font=dict(size=10),
                                  bgcolor="rgba(255,255,255,0.7)"))
    return fig


__all__ = ["SPACE_TITLES", "accuracy_figure", "animation_figure", "axis_ranges", "curves_figure", "snapshot_figure",
           "space_title", "twin_rows"]
