"""Embeddings: the spatial and temporal spaces (and the global one) of the same samples side by side,
linked: a box / lasso selection or a click in one chart highlights the same samples in every chart.

Projections come from :mod:`analysis.projections` (through ``state.get_projection``), the charts from
:func:`analysis.figures.embedding_scatter` (each point's row in ``customdata``), drawn by
:mod:`app.linked_charts`: the browser highlights a selection in every chart at once (no figure is rebuilt
or re-sent for it) and reports it, and the page keeps it in ``st.session_state["selected_rows"]`` (rows of
model A's embeddings). Model B's rows are lined up with A's by sample name (B's charts carry A's row of
each point as their link).

Whole splits (tens of thousands of samples) are drawn with WebGL, points scaled to their number over
a density layer; a UMAP / t-SNE of that many points runs in the background (``state.projection_status``)
while the charts show PCA, with its progress. A sample is found by name (search box), and the
selection downloads as CSV (:mod:`analysis.selection`). Above *Points drawn per chart* a chart draws a
stratified sample; selected samples it leaves out travel with the selection element and are drawn on top.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis import figures
from analysis.confusion import align
from analysis.embeddings import POOLED_DEFINITION, SPACES, Embeddings
from analysis.projections import METHODS
from analysis.selection import find_samples, selection_csv, selection_table
from app import linked_charts, state
from app.inspector import show_inspector
from stdcl.errors import StdclError

COLOR_NAMES = {"label": "true label", "prediction": "prediction", "correct": "correct / wrong",
               "twin": "twin pair (synthetic set)"}
POOLED = ("spatial_pooled", "temporal_pooled")
SPACE_TITLES = {"global": "global (classifier input)", "spatial": "spatial s", "temporal": "temporal t",
                "spatial_pooled": "spatial, pooled", "temporal_pooled": "temporal, pooled"}
MAX_POINTS = 60_000  # default points drawn per chart (beyond NTU120's largest test split); above: a stratified sample
POINTS_RANGE = (1_000, 200_000)  # what the "Points drawn per chart" box accepts
MAX_MATCHES = 50  # samples offered when a name search matches several
MAX_LISTED = 500  # rows listed in the table of selected samples
LEGEND_ROOM = 170  # right margin (px) of every chart in a row: the legend's room in the last one
GROUP = "embeddings"  # the linked charts of this page (app.linked_charts)
CHART_HEIGHT = 470


def chart_key(which: str, space: str) -> str:
    """Session key of the chart of ``space`` for model ``which`` (its selection state lives there)."""
    return f"emb_{which}_{space}"


# -- widgets whose values outlive a visit to another page ------------------------------------------

def _persistent(shared_key: str, valid, default) -> str:
    """Widget key mirroring ``st.session_state[shared_key]`` (which, unlike a widget's own key, is kept
    while another page is shown); ``valid(value)`` says whether the stored value still applies."""
    ss = st.session_state
    if not valid(ss.get(shared_key)):
        ss[shared_key] = default
    widget_key = f"_w_{shared_key}"
    ss[widget_key] = ss[shared_key]
    return widget_key


def _copy_back(shared_key: str) -> None:
    st.session_state[shared_key] = st.session_state[f"_w_{shared_key}"]


def _persistent_widget(kind, label: str, shared_key: str, options: list, default, **kw):
    """A selectbox-like widget over ``options`` whose value is ``st.session_state[shared_key]``."""
    key = _persistent(shared_key, lambda v: v in options, default)
    return kind(label, options, key=key, on_change=_copy_back, args=(shared_key,), **kw)


# -- selection ---------------------------------------------------------------------------------------

def _valid_rows(rows, n: int) -> list[int]:
    """The stored selection without rows that do not exist (e.g. set for other data)."""
    return sorted({int(r) for r in (rows or []) if 0 <= int(r) < n})


def _on_chart_select(key: str, n: int) -> None:
    """Adopt the selection the chart ``key`` reported (A's rows, B's charts mapped in the browser); the
    browser shows it already. One sample (a click) also opens in the inspector; an empty selection leaves
    the stored one alone (the *Clear* button empties it)."""
    ss = st.session_state
    reported = linked_charts.reported_selection(key)
    if reported is None:
        return
    ss["_emb_sel_seq"], ss["_emb_sel_epoch"] = int(reported.get("seq") or 0), reported.get("epoch")
    rows = _valid_rows(reported.get("rows"), n)
    if rows:
        ss["selected_rows"] = rows
        if len(rows) == 1:
            ss["inspect_row"] = rows[0]


def _clear_selection() -> None:
    st.session_state["selected_rows"] = []


# -- page --------------------------------------------------------------------------------------------

def _aligned_rows(emb_a: Embeddings, emb_b: Embeddings) -> np.ndarray | None:
    """B's row of each of A's rows (same samples by name), or None with a message saying why not."""
    try:
        return align(emb_a, emb_b)
    except StdclError as e:
        st.warning(f"B's samples do not line up with A's ({e}), so B's charts are not linked to A's selection.")
        return None


def _chart_data(key: str, signature: tuple, build, linked: bool) -> dict:
    """The component data of chart ``key``, rebuilt only when ``signature`` (what the figure depends on) or the
    theme changes: a selection's rerun hands Streamlit the very same data, so the chart is not redrawn."""
    cache = st.session_state.setdefault("_emb_chart_data", {})
    dark = linked_charts.dark_theme()
    signature = (*signature, dark)
    hit = cache.get(key)
    if hit is None or hit[0] != signature:
        hit = cache[key] = (signature, linked_charts.chart_data(linked_charts.figure_json(build(), dark), GROUP,
                                                                  linked=linked, config=figures.CHART_CONFIG,
                                                                  height=CHART_HEIGHT, chart_id=key))
    return hit[1]


def _draw_row(which: str, emb: Embeddings, label: str, spaces: list[str], method: str, color_by: str,
              link: tuple[str, np.ndarray | None] | None, n_a: int, max_points: int,
              selected: list[int]) -> tuple[list[str], dict[str, dict]]:
    """One chart per space (at most ``max_points`` points each), linked to the page's selection of A's ``n_a``
    rows by ``link`` (the identity of what it links to and, for B, A's row of each of B's rows; None: not
    linked); returns the keys of the projections still running in the background (their charts show PCA
    meanwhile) and, per chart, the ``selected`` samples it does not draw (for :func:`linked_charts.linked_selection`)."""
    pending, extra = [], {}
    cols = st.columns(len(spaces))
    for i, (col, space) in enumerate(zip(cols, spaces)):
        with col:
            with state.guard():
                coords, job = state.projection_status(space, method, emb)
                title, drawn = f"{which}: {SPACE_TITLES.get(space, space)}", method
                if coords is None:  # a large UMAP / t-SNE is still running: PCA (instant) until it is there
                    pending.append(job.key)
                    coords, drawn = state.get_projection(emb.key, space, "pca", emb), "pca"
                    title += f" (PCA until {state.METHOD_NAMES.get(method, method)} is ready)"
                last = i == len(spaces) - 1

                def build(coords=coords, title=title, last=last) -> go.Figure:
                    fig = figures.embedding_scatter(coords, emb, color_by, max_points=max_points, title=title,
                                                    height=CHART_HEIGHT, link_rows=None if link is None else link[1])
                    # one legend per row (the colours are shared), in a right margin every chart of the row
                    # keeps, so the chart with the legend is as wide as the others
                    fig.update_layout(showlegend=last, margin_r=LEGEND_ROOM,
                                      legend=dict(x=1.02, xanchor="left", y=1.0, yanchor="top"))
                    return fig

                key = chart_key(which, space)
                data = _chart_data(key, (emb.key, len(emb), space, drawn, color_by, title, last, max_points,
                                         None if link is None else link[0]), build, linked=link is not None)
                if link is not None and selected and max_points < len(emb):
                    outside = figures.points_outside(coords, emb, color_by, selected, max_points, link_rows=link[1])
                    if outside is not None:
                        extra[key] = {**outside, "sig": data["sig"]}
            linked_charts.linked_chart(data, key=key, on_select=_on_chart_select, args=(key, n_a))
    st.caption(f"{which} = {label}: {len(emb):,} samples, accuracy {emb.accuracy:.1%}, "
               f"spatial / temporal from {'its trained STD-CL head' if emb.st_source == 'head' else 'pooling'}."
               + (" Many points: each is drawn small and faint, and the grey shading shows where they pile up "
                  "(scroll to zoom in and tell them apart)." if len(emb) > figures.DENSITY_ABOVE else ""))
    return pending, extra


def _selection_table(emb: Embeddings, rows: list[int]) -> None:
    st.dataframe(selection_table(emb, rows[:MAX_LISTED]), hide_index=True, width="stretch",
                 height=min(38 + 35 * min(len(rows), MAX_LISTED), 320), key="emb_selected_table")
    if len(rows) > MAX_LISTED:
        st.caption(f"Listing the first {MAX_LISTED} of {len(rows):,} selected samples.")
    names = emb.class_names
    counts = pd.Series([names[k] for k in emb.labels[rows]]).value_counts()
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.caption("Selected per true class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    c2.download_button("Download the selection (CSV)", lambda: selection_csv(emb, rows), mime="text/csv",
                       file_name=f"selection-{len(rows)}-samples.csv", key="emb_csv", on_click="ignore",
                       icon=":material/download:",  # the CSV is made when the button is clicked, not on every run
                       help="Every selected sample: row, name, true label, prediction (model A) and whether it is "
                            "correct.")


# -- finding a sample by name -------------------------------------------------------------------------

def _select_one(row: int) -> None:
    """Select one sample, as a click on its point does (highlighted everywhere, opened in the inspector)."""
    st.session_state["selected_rows"] = [int(row)]
    st.session_state["inspect_row"] = int(row)


def _on_search(names: list[str]) -> None:
    matches = find_samples(names, st.session_state["emb_search"], MAX_MATCHES)
    if matches.size:
        _select_one(matches[0])
        st.session_state["_emb_match_pick"] = int(matches[0])


def _on_pick() -> None:
    _select_one(st.session_state["_emb_match_pick"])


def _points_budget(n: int) -> int:
    """The most points drawn per chart (``emb_max_points``; a box beside the search whenever there are more
    samples than its lowest value, so a budget set on a large split can always be changed): above it, a
    stratified sample is drawn."""
    low, high = POINTS_RANGE
    valid = lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
    key = _persistent("emb_max_points", valid, MAX_POINTS)
    if n > low:
        st.number_input("Points drawn per chart", low, high, step=1_000, key=key, on_change=_copy_back,
                        args=("emb_max_points",),
                        help="Above this many samples each chart draws a stratified sample of them (a slower browser "
                             "may want fewer); selected and searched samples are always drawn, on top.")
    return int(st.session_state["emb_max_points"])


def _search(emb: Embeddings) -> int:
    """A search box (the first sample whose name matches is selected; several matches are offered) and, for
    large splits, the points budget beside it; returns the budget."""
    c1, c2, c3 = st.columns([2, 2.2, 0.8], vertical_alignment="bottom")
    with c3:
        max_points = _points_budget(len(emb))
    query = c1.text_input("Find a sample by name", key="emb_search", on_change=_on_search, args=(emb.names,),
                          placeholder=f"e.g. {emb.names[0]}" if len(emb) else "",
                          help="The whole name or a part of it (case does not matter). The sample found is selected "
                               "as a click selects it: highlighted in every chart and opened below.")
    if not query.strip():
        return max_points
    matches = find_samples(emb.names, query, MAX_MATCHES).tolist()
    if not matches:
        c2.warning(f"No analysed sample's name contains “{query.strip()}” ({len(emb):,} samples analysed).")
    elif len(matches) == 1:
        c2.caption(f"Found {emb.names[matches[0]]} (row {matches[0]}).")
    else:
        if st.session_state.get("_emb_match_pick") not in matches:
            st.session_state["_emb_match_pick"] = matches[0]
        more = "" if len(matches) < MAX_MATCHES else f" (the first {MAX_MATCHES})"
        c2.selectbox(f"{len(matches)} samples match{more}: select one", matches, key="_emb_match_pick",
                     on_change=_on_pick, format_func=lambda r: f"{emb.names[r]} (row {r})")
    return max_points


def _inspect(sel: state.Selection, emb_a: Embeddings, rows: list[int], b_rows: np.ndarray | None) -> None:
    ss = st.session_state
    if not rows:
        st.info("Click a point to inspect that sample, or select a group with the Box or Lasso tool of a chart's "
                "toolbar (top right of the chart): the selection is highlighted in every chart.")
        return
    if len(rows) == 1:
        row = rows[0]
    else:  # a group: the sample clicked or found last if it is in it, else none until one is chosen
        offered = rows[:MAX_LISTED]
        if ss.get("_emb_inspect_pick") not in offered:
            ss["_emb_inspect_pick"] = ss["inspect_row"] if ss.get("inspect_row") in offered else None
        preds = emb_a.predictions
        first = "" if len(rows) <= MAX_LISTED else f" (the first {MAX_LISTED})"
        names = emb_a.class_names

        def describe(r: int) -> str:
            wrong = "" if preds[r] == emb_a.labels[r] else f", predicted {names[preds[r]]}"
            return f"row {r}: {emb_a.names[r]} ({names[emb_a.labels[r]]}{wrong})"

        row = st.selectbox(f"Inspect one of the selected samples{first}", offered, key="_emb_inspect_pick",
                           placeholder="choose a sample to open it", format_func=describe)
    which = "A"
    if b_rows is not None:
        which = st.radio("Inspect it in model", ["A", "B"], key="_emb_inspect_model", horizontal=True,
                         format_func=lambda w: f"{w}: {(sel.model if w == 'A' else sel.other).label}")
    if row is None:
        st.caption(f"{len(rows):,} samples are selected: choose one above to open its skeleton, top classes and "
                   "nearest neighbours.")
        return
    ss["inspect_row"] = int(row)
    ss["inspect_model"] = which
    show_inspector(sel, int(row) if which == "A" else int(b_rows[row]), which)


st.title("Embeddings: spatial and temporal spaces, linked")
st.markdown(
    "Each point is one sample, placed by a 2-D projection of one embedding space. **Spatial** (s) summarises "
    "*which joints* move (features averaged over frames), **temporal** (t) *how* the movement unfolds (averaged "
    "over joints). Click a point, or select a group with the Box or Lasso tool of a chart's toolbar: the same "
    "samples are highlighted in every chart, so you can see whether samples close in one space are close in the "
    "other. Drag to pan, scroll to zoom, double-click to reset the view.")

sel = state.current_selection()
state.subset_notice(sel)
with state.guard():
    emb_a = sel.embeddings("A")

has_twins = bool(emb_a.class_meta) and any(m.get("twin") is not None for m in emb_a.class_meta)
space_options = list(SPACES) + (list(POOLED) if emb_a.st_source == "head" else [])
ss = st.session_state
c1, c2, c3, c4 = st.columns([3, 1.2, 1.6, 1.2])
key = _persistent("emb_spaces", lambda v: isinstance(v, list) and 0 < len(v) <= 4 and set(v) <= set(space_options),
                  ["spatial", "temporal"])
spaces = c1.multiselect("Spaces", space_options, key=key, on_change=_copy_back, args=("emb_spaces",),
                        max_selections=4, format_func=lambda s: SPACE_TITLES.get(s, s),
                        help="The pooled spaces (offered for STD-CL checkpoints) are what the head reads before "
                             "its learned projection; for a baseline they are its spatial / temporal spaces.")
spaces = [s for s in space_options if s in spaces] or ["spatial", "temporal"]
method = _persistent_widget(c2.selectbox, "Projection", "projection_method", list(METHODS), "umap",
                            format_func=lambda m: state.METHOD_NAMES.get(m, m))
color_options = [c for c in figures.COLOR_BY if c != "twin" or has_twins]
color_by = _persistent_widget(c3.selectbox, "Colour by", "emb_color_by", color_options, "label",
                              format_func=lambda c: COLOR_NAMES.get(c, c))
compare = False
if sel.other is not None:
    c4.write("")
    compare = c4.toggle("Show B below", value=True, key="emb_compare",
                        help=f"Draw the same spaces for B ({sel.other.label}) under A's, same colours and selection.")

n = len(emb_a)
max_points = _search(emb_a)
selected = _valid_rows(ss.get("selected_rows"), n)
ss["selected_rows"] = selected

c1, c2 = st.columns([4, 1], vertical_alignment="center")  # always drawn: a new selection never moves the charts
outside = int((~figures.drawn_mask(emb_a, max_points)[selected]).sum()) if selected else 0
c1.markdown((f"**{len(selected):,} selected** samples are drawn large; the others are dimmed." +
             (f" {outside:,} of them {'is' if outside == 1 else 'are'} not among the {max_points:,} points each "
              "chart draws: drawn on top all the same."
              if outside else "")) if selected else
            "No selection yet: click a point, or use the Box or Lasso tool of a chart's toolbar.")
c2.button("Clear selection", on_click=_clear_selection, key="emb_clear", disabled=not selected)
progress = st.container()  # background projections report here, above the charts

pending, extra = _draw_row("A", emb_a, sel.model.label, spaces, method, color_by, (emb_a.key, None), n, max_points,
                           selected)
emb_b = None
b_rows = None
if compare:  # A is on screen while B is computed
    with state.guard():
        emb_b = sel.embeddings("B")
    b_rows = _aligned_rows(emb_a, emb_b)
    link_b = None
    if b_rows is not None:
        a_of_b = np.full(len(emb_b), -1, np.int64)
        a_of_b[b_rows] = np.arange(len(b_rows))
        link_b = (emb_a.key, a_of_b)
    pending_b, extra_b = _draw_row("B", emb_b, sel.other.label, spaces, method, color_by, link_b, n, max_points,
                                   selected)
    pending, extra = pending + pending_b, {**extra, **extra_b}
with progress:  # the selection the charts highlight (the browser applies it: no chart is redrawn)
    linked_charts.linked_selection(GROUP, selected, ss.get("_emb_sel_seq", 0), ss.get("_emb_sel_epoch"),
                                   key="emb_selection", extra=extra)
if pending:
    with progress:
        st.caption(f"{state.METHOD_NAMES.get(method, method)} of {n:,} points takes a while, so it runs in the "
                   "background (once: the result is cached) and the charts show PCA meanwhile; they switch when it "
                   "is done. Selections carry over.")
        state.projection_progress(pending)

if any(e is not None and e.st_source == "pooled" for e in (emb_a, emb_b)) or set(spaces) & set(POOLED):
    with st.expander("What are a baseline's spatial and temporal spaces?", expanded=True):
        st.markdown("A baseline has no STD-CL head, so its *spatial* and *temporal* embeddings are parameter-free "
                    "poolings of its encoder's last feature map (the same as the *pooled* spaces of any checkpoint):")
        st.markdown(POOLED_DEFINITION)
st.caption(f"{state.METHOD_NAMES.get(method, method)} keeps neighbourhoods, not distances: compare which samples are "
           "together, not how far apart clusters are. Cosine geometry (rows L2-normalised) as in the contrastive loss.")

if selected:
    st.subheader("Selected samples")
    _selection_table(emb_a, selected)
_inspect(sel, emb_a, selected, b_rows)
