"""The animated skeleton widget shared by the report and the app's pages (plotly): joints coloured by a
per-joint (or per-frame-and-joint) value, bones from the layout, one frame or a play-able animation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from stdcl.data.layouts import Layout
from stdcl.errors import ConfigError

#: at most this many frames are animated (evenly spaced)
MAX_FRAMES = 64
PERSON_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def _frame_ids(t: int, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` evenly spaced frame ids of ``t``."""
    return np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(np.int64))


def _bone_xyz(pts: np.ndarray, edges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Per axis the line coordinates of every edge ``(child, parent)``, segments separated by NaN
    (a gap in a plotly line)."""
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    seg = np.stack([pts[e[:, 0]], pts[e[:, 1]], np.full((len(e), pts.shape[1]), np.nan)], axis=1)
    return list(seg.reshape(-1, pts.shape[1]).T)


#: The skeleton widget's height on every page, and the strip below the plot that holds its controls.
SKELETON_HEIGHT = 480
CONTROLS_STRIP = 96


def skeleton_figure(x: np.ndarray, layout: Layout, joint_values: np.ndarray | None = None,
                    frame: int | None = None, animate: bool = True, title: str = "",
                    max_frames: int = MAX_FRAMES, value_label: str = "value",
                    height: int = SKELETON_HEIGHT) -> go.Figure:
    """Bones and joints of a sample ``x`` ``(C, T, V, M)`` for every person with data.

    ``C`` 3 draws in 3-D (x right, y up, z depth), 2 in the image plane. ``joint_values`` ``(V,)``
    (or ``(T, V)``, per frame) colour and size the joints. ``animate`` adds one plotly frame per
    time step (at most ``max_frames``, evenly spaced) with play / pause buttons and a frame slider
    in a strip below the plot (never over it); otherwise (or initially) frame ``frame`` (default:
    the middle one) is drawn. One default ``height`` everywhere, so the widget looks the same on
    every page.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[0] not in (2, 3) or x.shape[2] != layout.num_joints:
        raise ConfigError(f"skeleton of shape {x.shape}: expected (2|3, T, {layout.num_joints}, M) "
                          f"for layout {layout.name!r}")
    c, t, v, m = x.shape
    persons = [p for p in range(m) if np.abs(x[..., p]).sum() > 0] or [0]
    vals = None if joint_values is None else np.asarray(joint_values, dtype=np.float64)
    if vals is not None and vals.shape not in ((v,), (t, v)):
        raise ConfigError(f"joint values of shape {vals.shape}: expected ({v},) or ({t}, {v})")
    frames = _frame_ids(t, max_frames) if animate else np.array([t // 2 if frame is None else int(frame)])
    if frames[0] < 0 or frames[-1] >= t:
        raise ConfigError(f"frame {frame} outside 0..{t - 1}")
    start = frames[0] if frame is None or not animate else frames[np.abs(frames - int(frame)).argmin()]
    three_d = c == 3
    if vals is not None:
        vmax = float(np.abs(vals).max()) or 1.0
        diverging = bool((vals < 0).any())
        cscale, cmin, cmax = ("RdBu_r", -vmax, vmax) if diverging else ("Viridis", 0.0, vmax)
    labels = [f"{j}: {name}" for j, name in enumerate(layout.joints)]

    def traces(ti: int, full: bool = True) -> list:
        """The traces of frame ``ti``; ``full=False``: only what changes between frames (coordinates, and
        the joint colours when the values are per frame), which keeps animation frames small and fast."""
        out = []
        for k, p in enumerate(persons):
            pts = x[:, ti, :, p].T  # (V, C)
            if three_d:
                pts = pts[:, [0, 2, 1]]  # plot axes: x, depth, up
            bones = _bone_xyz(pts, layout.edges)
            jv = None if vals is None else (vals if vals.ndim == 1 else vals[ti])
            xyz = dict(zip("xyz", bones))
            pos = dict(zip("xyz", pts.T))
            if not full:
                changing = {} if jv is None or vals.ndim == 1 else dict(
                    marker=dict(color=jv, size=_joint_size(jv)))
                kind = go.Scatter3d if three_d else go.Scatter
                out += [kind(**xyz), kind(**pos, **changing)]
                continue
            color = PERSON_COLORS[k % len(PERSON_COLORS)]
            if jv is None:
                marker = dict(color=color, size=4 if three_d else 7)
                hover = labels
            else:
                marker = dict(color=jv, colorscale=cscale, cmin=cmin, cmax=cmax, showscale=k == 0,
                              colorbar=dict(title=dict(text=value_label), len=0.6), size=_joint_size(jv),
                              line=dict(width=0))
                hover = [f"{lab}<br>{value_label}: {val:.4g}" for lab, val in zip(labels, jv)]
            name = f"person {p + 1}"
            kind = go.Scatter3d if three_d else go.Scatter
            out.append(kind(**xyz, mode="lines", name=f"{name} bones", hoverinfo="skip", legendgroup=name,
                            line=dict(color=color, width=5 if three_d else 3)))
            out.append(kind(**pos, mode="markers", name=f"{name} joints", marker=marker, hovertext=hover,
                            hovertemplate="%{hovertext}<extra></extra>", legendgroup=name))
        return out

    def _joint_size(jv: np.ndarray) -> np.ndarray:
        return (4 if three_d else 6) + (9 if three_d else 12) * np.abs(jv) / vmax

    fig = go.Figure(data=traces(int(start)))
    sel = x[:, frames][..., persons]
    valid = np.abs(sel).sum(0) > 0  # (F, V, P): ignore zero padding when fitting the axes
    lo = [float(sel[a][valid].min()) if valid.any() else -1.0 for a in range(c)]
    hi = [float(sel[a][valid].max()) if valid.any() else 1.0 for a in range(c)]
    pad = [0.05 * (b - a) + 1e-3 * max(1.0, abs(a), abs(b)) for a, b in zip(lo, hi)]  # > 0 at any magnitude
    rng = [[a - d, b + d] for a, b, d in zip(lo, hi, pad)]
    if three_d:
        rng = [rng[0], rng[2], rng[1]]
        span = [r[1] - r[0] for r in rng]
        fig.update_layout(scene=dict(
            xaxis=dict(range=rng[0], title="x"), yaxis=dict(range=rng[1], title="depth", showticklabels=False),
            zaxis=dict(range=rng[2], title="y (up)"), aspectmode="manual",
            aspectratio=dict(x=span[0] / max(span), y=span[1] / max(span), z=span[2] / max(span)),
            camera=dict(up=dict(x=0, y=0, z=1), eye=dict(x=0.3, y=-1.9, z=0.45))))  # far enough: head and feet in view
    else:
        fig.update_layout(xaxis=dict(range=rng[0]), yaxis=dict(range=rng[1], scaleanchor="x"))
    fig.update_layout(title=title or None, height=height,
                      margin=dict(l=0, r=0, t=40 if title else 10, b=CONTROLS_STRIP if animate else 0),
                      showlegend=len(persons) > 1)
    if animate:
        fig.frames = [go.Frame(data=traces(int(ti), full=False), name=str(int(ti))) for ti in frames]
        step_args = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
        fig.update_layout(
            # the controls live in the bottom margin: buttons at the left, the slider to their right, its
            # "frame N" label above the slider's right end (clear of the buttons)
            updatemenus=[dict(type="buttons", showactive=False, x=0.0, y=0.0, xanchor="left", yanchor="top",
                              direction="left", pad=dict(t=34, r=0), buttons=[
                                  dict(label="play", method="animate",
                                       args=[None, dict(frame=dict(duration=80, redraw=True), fromcurrent=True,
                                                        transition=dict(duration=0), mode="immediate")]),
                                  dict(label="pause", method="animate", args=[[None], step_args])])],
            sliders=[dict(active=int(np.flatnonzero(frames == start)[0]), x=0.22, len=0.78, y=0.0,
                          xanchor="left", yanchor="top",
                          currentvalue=dict(prefix="frame ", xanchor="right", font=dict(size=12)), pad=dict(t=8, b=0),
                          steps=[dict(label=str(int(ti)), method="animate", args=[[str(int(ti))], step_args])
                                 for ti in frames])])
    return fig
