"""Training evolution: how the spatial and temporal spaces form during training, from a run's probes.

The numbers and projections come from :func:`analysis.evolution.load_evolution` (aligned across
snapshots; cached on disk by analysis and here), the charts from :mod:`analysis.evolution_figures`.
The epoch slider, Play / Pause, the charts, the twin table and the curves live in one fragment; while
playing it reruns on a timer, each run drawing the next snapshot. ``st.plotly_chart`` mounts a new
chart whenever its figure changes, so there points jump between (aligned) positions; *Smooth playback*
draws each row as one plotly animation instead (every snapshot a frame, gliding in the browser).
Selections are kept as sample names in ``st.session_state["evo_selected"]``, so they link both runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from analysis import figures
from analysis.evolution import METHOD_NAMES, METHODS, Evolution, load_evolution, probes_digest
from analysis.evolution_figures import (
    accuracy_figure,
    animation_figure,
    curves_figure,
    main_spaces,
    snapshot_figure,
    space_title,
    twin_rows,
)
from analysis.models import ModelRef
from analysis.twins import twin_pairs
from app import state
from app.glossary import term
from stdcl.train.probes import has_probes

NO_PROBES = "train with `probe.enabled=true` (the default) or export with `--with-probes`"
COLOR_NAMES = {"label": "true label", "prediction": "prediction", "correct": "correct / wrong", "twin": "twin pair"}
PLAY_SECONDS = 1.5  # one snapshot per tick while playing
MAX_SPACES = 3
SELECTION_MODES = ("box", "lasso", "points")
LEGEND_ROOM = 160  # right margin (px) of every chart in a row: the legend's room in the last one


@dataclass
class Row:
    """One run's row of charts: ``which`` ("A" or "B"), its evolution (metrics, every space) and ``view``, the
    same run with the aligned coordinates drawn (the spaces shown, by the chosen method)."""

    which: str
    evo: Evolution
    view: Evolution

    def chart_keys(self, smooth: bool) -> list[str]:
        return [f"evo_{self.which}_anim"] if smooth else [f"evo_{self.which}_{s}" for s in self.view.spaces]


# -- loading ----------------------------------------------------------------------------------------

def probed_models(refs: dict[str, ModelRef]) -> dict[str, ModelRef]:
    """The models among ``refs`` that have training probes."""
    out = {}
    for key, ref in refs.items():
        with contextlib.suppress(OSError):
            if has_probes(ref.path):
                out[key] = ref
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def _evolution(source: str, digest: str, method: str, space: str | None, label: str) -> Evolution:
    """:func:`load_evolution` of every space (``space`` None) or of one, saying what is computed."""
    what = "every probed space" if space is None else f"the {space} space"
    slot = st.empty()
    with slot.status(f"{label}: {METHOD_NAMES[method]} of {what} over all probe snapshots, and their separation "
                     "metrics (once: the result is cached)…", expanded=True) as box:
        evo = load_evolution(source, method, spaces=None if space is None else [space], label=label,
                             progress=box.write)
    slot.empty()
    return evo


def load(ref: ModelRef, method: str = "procrustes", space: str | None = None) -> Evolution:
    """The evolution of ``ref``'s probes, keyed by their content (a run still training gets new snapshots)."""
    return _evolution(str(ref.path), probes_digest(ref.path), method, space, ref.label)


def make_row(which: str, ref: ModelRef, evo: Evolution, spaces: list[str], method: str) -> Row:
    """``evo`` and its view of ``spaces``: Procrustes aligned every space with the metrics (fast); AlignedUMAP
    runs one space at a time, so a new choice of spaces costs only the new ones."""
    coords = {s: (evo if method == "procrustes" else load(ref, method, s)).coords[s] for s in spaces}
    return Row(which, evo, replace(evo, method=method, coords=coords))


# -- selection (sample names, so both runs link) ---------------------------------------------------------

def _adopt_selections(rows: list[Row], smooth: bool) -> None:
    """Take a new box / lasso / click selection from any chart; a chart that reports what it reported last
    time (or nothing: it was redrawn) leaves the stored selection alone."""
    ss = st.session_state
    for row in rows:
        names = row.evo.series.names
        for key in row.chart_keys(smooth):
            picked = [int(r) for r in figures.selected_rows(ss.get(key)) if 0 <= r < len(names)]
            if ss.get(f"_{key}_seen") == picked:
                continue
            ss[f"_{key}_seen"] = picked
            if picked:
                ss["evo_selected"] = sorted({names[r] for r in picked})


def _clear_selection() -> None:
    st.session_state["evo_selected"] = []


def _highlight(evo: Evolution, pair: tuple[int, int] | None) -> list[int] | None:
    """Rows drawn large: the selected samples, else the chosen twin pair's, else none (all drawn alike)."""
    selected = st.session_state.get("evo_selected") or []
    if selected:
        return evo.rows_named(selected).tolist()
    return None if pair is None else twin_rows(evo, pair).tolist()


# -- the fragment: Play / Pause, slider, charts, twin table, curves -------------------------------------------

def _advance(n: int) -> int:
    """The snapshot to draw: the slider's, or the next one while playing (playing stops at the last)."""
    ss = st.session_state
    playing = bool(ss.get("evo_playing"))
    i = min(max(int(ss.get("evo_i", 0)) + playing, 0), n - 1)
    ss["evo_i"] = i
    if playing and i == n - 1:
        ss["evo_playing"] = False
        st.rerun(scope="app")  # drop the timer; the full run draws the last snapshot
    return i


def _controls(evo: Evolution, smooth: bool) -> int:
    """Play / Pause and the epoch slider; the index of the snapshot to draw."""
    ss = st.session_state
    n = len(evo.epochs)
    c1, c2 = st.columns([1, 8], vertical_alignment="bottom")
    playing = bool(ss.get("evo_playing"))
    if c1.button("Pause" if playing else "Play", key="evo_play", disabled=n < 2 or smooth, width="stretch",
                 icon=":material/pause:" if playing else ":material/play_arrow:",
                 help="Smooth playback is on: use the charts' own Play button." if smooth else None):
        ss["evo_playing"] = not playing
        if not playing and int(ss.get("evo_i", 0)) >= n - 1:
            ss["evo_i"] = -1  # play again from the start: the next run draws snapshot 0
        st.rerun(scope="app")  # the timer is set (or dropped) by a full run
    i = _advance(n)
    if n > 1:
        c2.select_slider("Epoch", options=list(range(n)), key="evo_i", format_func=lambda j: f"{evo.epochs[j]:g}",
                         help="The probe snapshots: step 0 and the evaluation epochs.")
    else:
        c2.caption(f"One snapshot only (epoch {evo.epochs[0]:g}).")
    return i


def _draw_row(row: Row, i: int, color_by: str, highlight: list[int] | None, smooth: bool, note: str) -> None:
    view = row.view
    if smooth:
        fig = animation_figure(view, view.spaces, color_by, height=500, highlight_rows=highlight, start=i)
        fig.update_layout(title=f"{row.which}: {view.label} (the chart's Play glides through the epochs)")
        st.plotly_chart(fig, key=row.chart_keys(True)[0], on_select="rerun", selection_mode=SELECTION_MODES)
    else:
        last = len(view.spaces) - 1
        for k, (col, space, key) in enumerate(zip(st.columns(len(view.spaces)), view.spaces, row.chart_keys(False))):
            title = f"{row.which}: {view.label}: {space_title(view, space)}, epoch {view.epochs[i]:g}"
            fig = snapshot_figure(view, space, i, color_by, highlight, height=440, title=title)
            # one legend per row (the colours are shared), in a right margin every chart of the row keeps
            fig.update_layout(showlegend=k == last, margin_r=LEGEND_ROOM,
                              legend=dict(x=1.02, xanchor="left", y=1.0, yanchor="top"))
            col.plotly_chart(fig, key=key, on_select="rerun", selection_mode=SELECTION_MODES)
    s = row.evo.series
    st.caption(f"{row.which} = {row.evo.label} ({'STD-CL' if s.stdcl else 'baseline'}, {s.encoder}): epoch "
               f"{row.evo.epochs[i]:g}{note}, probe top-1 {row.evo.accuracy[i]:.1%} on {len(s.labels):,} probe "
               f"samples of the {s.split} split.")


def _pair_table(rows: list[Row], indices: list[int], pair: tuple[int, int]) -> None:
    names = rows[0].evo.series.class_names
    st.markdown(f"**{names[pair[0]]}** vs **{names[pair[1]]}** at this epoch")
    records = [{"run": f"{row.which}: {row.evo.label}", "space": space_title(row.evo, r["space"]),
                "centroid distance (1 − cos)": r["centroid_distance"], "k-NN accuracy (pair)": r["knn_accuracy"]}
               for row, i in zip(rows, indices) for r in row.evo.pair_at(pair, i)]
    st.dataframe(pd.DataFrame(records).round(4), hide_index=True, width="stretch", key="evo_pair_table")
    st.caption("Higher is further apart. Spatial twins should part in the spatial space and stay close in the "
               "temporal one; temporal twins the other way round.")


def _player(rows: list[Row], color_by: str, pair: tuple[int, int] | None, smooth: bool) -> None:
    first = rows[0]
    i = _controls(first.evo, smooth)
    epoch = first.evo.epochs[i]
    indices = [i] + [row.evo.nearest_snapshot(epoch) for row in rows[1:]]
    _adopt_selections(rows, smooth)
    selected = st.session_state.get("evo_selected") or []
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.markdown(f"**{len(selected):,} selected** samples are drawn large in every chart (matched by name)."
                if selected else "Click a point, or use the Box or Lasso tool of a chart's toolbar: the samples are "
                                 "highlighted in every chart, at every epoch.")
    c2.button("Clear selection", on_click=_clear_selection, key="evo_clear", disabled=not selected)
    for row, j in zip(rows, indices):
        same = list(row.evo.series.class_names) == list(first.evo.series.class_names)
        note = "" if row.evo.epochs[j] == epoch else f" (its snapshot nearest A's epoch {epoch:g})"
        with state.guard():
            _draw_row(row, j, color_by, _highlight(row.evo, pair if same else None), smooth, note)
    evos = [row.evo for row in rows]
    c1, c2 = st.columns([1, 2])
    c1.plotly_chart(accuracy_figure(evos, epoch, height=260), key="evo_accuracy")
    with c2:
        if pair is not None:
            _pair_table(rows, indices, pair)
        else:
            st.caption("Pick a twin pair above to follow its two classes: highlighted in every chart, with their "
                       "separation per space at this epoch.")
    st.plotly_chart(curves_figure(evos, [row.view.spaces for row in rows], epoch=epoch, height=320), key="evo_curves")
    st.caption("Separation per space against epoch, on the stored probe embeddings (not the 2-D projections); the "
               "dotted line marks the epoch drawn above, a second run is dashed.")


# -- the page -------------------------------------------------------------------------------------------------

def _run_key(probed: dict[str, ModelRef], a_key: str) -> str:
    """The run picker: the link's ``?run=`` on arrival, else model A when it has probes, else the bundled demo,
    else an STD-CL run (else the first)."""
    ss = st.session_state
    options = list(probed)
    seen = ss.get("_evo_a_seen")
    if ss.get("evo_run") not in options or (seen is not None and seen != a_key and a_key in probed):
        linked = st.query_params.get("run") if seen is None else None  # a link to a run's evolution
        ss["evo_run"] = linked if linked in probed else a_key if a_key in probed else state.default_pair(probed)[0]
    ss["_evo_a_seen"] = a_key
    return st.selectbox("Run", options, key="evo_run", format_func=lambda k: f"{k} (model A)" if k == a_key else k,
                        help="The models with training probes: bundled checkpoints, run directories, uploads.")


def _spaces(evo: Evolution) -> list[str]:
    options = evo.spaces
    chosen = st.session_state.get("evo_spaces")
    if not isinstance(chosen, list) or not chosen or not set(chosen) <= set(options) or len(chosen) > MAX_SPACES:
        st.session_state["evo_spaces"] = main_spaces(evo)
    chosen = st.multiselect("Spaces", options, key="evo_spaces", max_selections=MAX_SPACES,
                            format_func=lambda s: space_title(evo, s),
                            help="An STD-CL run's head spaces s and t; the pooled spaces (what the head reads; a "
                                 "baseline's spatial and temporal spaces) and the global one (the classifier's input).")
    return [s for s in options if s in chosen] or main_spaces(evo)


st.title("Training evolution: watch the spaces decouple")
st.markdown(
    f"Each point is one sample of the {term('probe')}, embedded by the model as it was at that epoch. The 2-D "
    "projections are aligned from one epoch to the next, so a point moves only as its embedding changes. Watch the "
    "twins: **spatial twins** (*wave left hand* / *wave right "
    "hand*) part in the spatial space while staying together in the temporal one, and **temporal twins** (*sit "
    "down* / *stand up*) do the opposite: spatial-temporal decoupling, happening during training.")

ss = st.session_state
refs = state.model_options()
probed = probed_models(refs)
a_key = ss.get("model_a", state.default_pair(refs)[0] if refs else "")
if a_key not in probed:
    st.info(f"Model A ({a_key or 'none'}) has no training probes, so its evolution cannot be shown: {NO_PROBES}."
            + (" Showing a run that has them." if probed else ""), icon=":material/info:")
if not probed:
    st.info(f"No model offered here has training probes yet. Runs keep them in `RUN/probes/` ({NO_PROBES}); "
            "the Models and data page lists where runs are read from.")
    st.stop()

c1, c2, c3 = st.columns([3, 1.6, 2], vertical_alignment="bottom")
with c1:
    run_key = _run_key(probed, a_key)
method = c2.selectbox("Projection", list(METHODS), key="evo_method", format_func=lambda m: METHOD_NAMES[m],
                      help="Procrustes-aligned PCA (fast): each epoch's PCA rotated onto the previous one, distances "
                           "kept. AlignedUMAP: neighbourhoods kept, every sample tied to itself at the next epoch; "
                           "slower, computed once per space and cached.")
pair_key = state.paired_key(run_key, probed)
compare = bool(pair_key) and c3.toggle("Paired run below", value=True, key="evo_compare",
                                       help=f"{pair_key} (the baseline / STD-CL partner of this run) in a second "
                                            "row, at the same epoch.")
with state.guard():
    evo = load(probed[run_key])
    evo_b = load(probed[pair_key]) if compare else None

c1, c2, c3, c4 = st.columns([3, 1.5, 2, 1.5], vertical_alignment="bottom")
with c1:
    spaces = _spaces(evo)
twins = {(a, b): kind for a, b, kind in twin_pairs(evo.series.class_meta)}
color_options = [c for c in figures.COLOR_BY if c != "twin" or twins]
for key, options, default in (("evo_color_by", color_options, "label"), ("evo_twin", [None, *twins], None)):
    if ss.get(key) not in options:  # e.g. a twin pair of the run shown before
        ss[key] = default
color_by = c2.selectbox("Colour by", color_options, key="evo_color_by",
                        format_func=lambda c: COLOR_NAMES.get(c, c))
names = evo.series.class_names
pair = c3.selectbox("Highlight a twin pair", [None, *twins], key="evo_twin", on_change=_clear_selection,
                    format_func=lambda p: "none" if p is None else f"{names[p[0]]} / {names[p[1]]} ({twins[p]})",
                    disabled=not twins, help="Its two classes are drawn large in every chart, the others dimmed; a "
                                             "table gives the pair's separation per space at the current epoch.")
smooth = c4.toggle("Smooth playback", key="evo_smooth",
                   help="Each row as one animation played in the browser: points glide from epoch to epoch. "
                        "Without it Play redraws the charts each step (points jump), and the curves follow.")
with state.guard():
    rows = [make_row("A", probed[run_key], evo, spaces, method)]
    if evo_b is not None:
        b_spaces = list(dict.fromkeys(m for s in spaces if (m := evo_b.matching_space(s)) is not None))
        rows.append(make_row("B", probed[pair_key], evo_b, b_spaces, method))

playing = bool(ss.get("evo_playing")) and not smooth
st.fragment(_player, run_every=PLAY_SECONDS if playing else None)(rows, color_by, pair, smooth)
if any(not row.evo.series.stdcl for row in rows):
    st.caption("A baseline has no STD-CL head: its spatial and temporal spaces are its encoder's feature map "
               "averaged over frames and over joints (the pooled spaces).")
