"""Confusion: the matrix with class names; a click on a cell lists its samples (and opens one in the
inspector); the most-confused pairs; per-class accuracy; what changes between checkpoints A and B.

Every number comes from :mod:`analysis.confusion`; the matrix is
:func:`analysis.figures.confusion_figure` with ``clickable=True`` (plotly reports no selection for
heatmap cells: an invisible marker on every cell is what a click selects).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from analysis import figures
from analysis.confusion import cell_samples, confusion, confusion_change, most_confused
from analysis.embeddings import Embeddings
from app import state
from app.inspector import show_inspector
from stdcl.errors import StdclError

TOP_PAIRS = 10
MAX_LISTED = 500


def chart_key(which: str) -> str:
    """Session key of model ``which``'s matrix (its click state lives there)."""
    return f"confusion_{which}"


def _adopt_click(key: str, class_names: list[str]) -> None:
    """A new click on the matrix moves the cell pickers to that cell (a stale one leaves them alone)."""
    ss = st.session_state
    cell = figures.selected_cell(ss.get(key), class_names)
    seen = None if cell is None else list(cell)
    if ss.get(f"_{key}_seen") == seen:
        return
    ss[f"_{key}_seen"] = seen
    if cell is not None and all(0 <= c < len(class_names) for c in cell):
        ss["conf_true"], ss["conf_pred"] = cell


def _pick_model(sel: state.Selection) -> str:
    if sel.other is None:
        return "A"
    return st.radio("Model", ["A", "B"], key="conf_model", horizontal=True,
                    format_func=lambda w: f"{w}: {(sel.model if w == 'A' else sel.other).label}")


def _cell_panel(emb: Embeddings, default: tuple[int, int]) -> tuple[tuple[int, int], int | None]:
    """Cell pickers (moved by a click on the matrix) and the cell's samples; returns the cell and the
    row to inspect (None: none chosen)."""
    names = emb.class_names
    ss = st.session_state
    for key, val in (("conf_true", default[0]), ("conf_pred", default[1])):
        if ss.get(key) not in range(len(names)):
            ss[key] = val
    c1, c2 = st.columns(2)
    fmt = lambda k: f"{k}: {names[k]}"
    t = c1.selectbox("True class", list(range(len(names))), key="conf_true", format_func=fmt)
    p = c2.selectbox("Predicted class", list(range(len(names))), key="conf_pred", format_func=fmt)
    with state.guard():
        samples = cell_samples(emb, t, p)
    kind = "correctly classified" if t == p else "misclassified"
    st.markdown(f"**{len(samples)} samples** of *{names[t]}* predicted as *{names[p]}* ({kind}), "
                "most confident first:")
    shown = samples[:MAX_LISTED]
    st.dataframe(pd.DataFrame(shown, columns=["row", "name", "index", "confidence"]), hide_index=True,
                 width="stretch", height=min(38 + 35 * max(len(shown), 1), 300), key="conf_cell_table",
                 column_config={"confidence": st.column_config.NumberColumn(format="%.3f"),
                                "index": st.column_config.NumberColumn("item", help="index in the split")})
    if len(samples) > MAX_LISTED:
        st.caption(f"Listing the first {MAX_LISTED} of {len(samples):,}.")
    if not samples:
        return (t, p), None
    rows = [s["row"] for s in samples]
    if ss.get("conf_inspect") not in [None] + rows:
        ss["conf_inspect"] = None
    row = st.selectbox("Open a sample in the inspector", [None] + rows, key="conf_inspect",
                       format_func=lambda r: "—" if r is None else f"row {r}: {emb.names[r]}")
    return (t, p), row


def _pairs_and_classes(emb: Embeddings, conf: dict[str, Any]) -> None:
    c1, c2 = st.columns([3, 2])
    with c1:
        st.subheader("Most confused pairs")
        pairs = most_confused(emb, TOP_PAIRS)
        if not pairs:
            st.success("No sample is misclassified.")
        else:
            st.dataframe(pd.DataFrame([{"true": r["true_name"], "predicted as": r["predicted_name"],
                                        "count": r["count"], "share of the class": r["rate"],
                                        "examples": ", ".join(r["samples"][:3])} for r in pairs]),
                         hide_index=True, width="stretch", key="conf_pairs",
                         column_config={"share of the class": st.column_config.NumberColumn(format="%.3f")})
            st.caption("Off-diagonal cells by count. On the synthetic set, twins (mirror images or time-reversed "
                       "versions of the same action) are the pairs a model is expected to mix up.")
    with c2:
        st.subheader("Per-class accuracy")
        st.dataframe(pd.DataFrame([{"class": name, "accuracy": conf["per_class"][name],
                                    "samples": conf["support"][name]} for name in conf["class_names"]])
                     .sort_values("accuracy", na_position="last", kind="stable"),
                     hide_index=True, width="stretch", key="conf_per_class",
                     column_config={"accuracy": st.column_config.ProgressColumn(
                         "accuracy", min_value=0.0, max_value=1.0, format="%.3f")})
        st.caption("Worst classes first (the diagonal of the row-normalised matrix).")


def _change(sel: state.Selection, emb_a: Embeddings) -> None:
    st.header("What A changes relative to B")
    la, lb = sel.model.label, sel.other.label
    with state.guard():
        emb_b = sel.embeddings("B")
    try:
        ch = confusion_change(emb_b, emb_a)
    except StdclError as e:
        st.warning(f"A and B cannot be compared sample by sample: {e}")
        return
    st.caption(f"A = {la}, B = {lb}, on the same {ch['n']:,} samples. Positive changes: A does better. With A the "
               "STD-CL checkpoint and B the baseline of the same encoder, this is what the decoupling loss buys.")
    m1, m2, m3 = st.columns(3)
    m1.metric("top-1 of A", f"{ch['top1']['b']:.1%}", f"{ch['top1']['delta'] * 100:+.1f} points vs B")
    m2.metric("samples fixed by A", len(ch["fixed"]), help="wrong in B, right in A")
    m3.metric("samples broken by A", len(ch["broken"]), help="right in B, wrong in A")
    normalise = st.session_state.get("conf_normalise", True)
    mat_a, mat_b = confusion(emb_a)["matrix"], confusion(emb_b)["matrix"]
    delta = figures.normalise_rows(mat_a) - figures.normalise_rows(mat_b) if normalise else ch["matrix_delta"]
    st.plotly_chart(figures.confusion_change_figure(delta, ch["class_names"],
                                                    title="A − B" + (" (shares of each row)" if normalise else
                                                                     " (counts)")), key="conf_change")
    st.caption("Blue: more samples in that cell with A, red: fewer. A better model gains on the diagonal and "
               "loses off it.")
    c1, c2 = st.columns(2)
    cols = {"name": "class", "support": "samples", "b": "accuracy B", "a": "accuracy A", "delta": "change"}

    def table(rows: list[dict], key: str) -> None:
        df = pd.DataFrame(rows, columns=list(cols)).rename(columns=cols)
        st.dataframe(df, hide_index=True, width="stretch", key=key,
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("accuracy A", "accuracy B", "change")})

    # confusion_change(b=B, a=A) reports "a" for its first argument: swap the labels back to A / B.
    helped = [{**r, "a": r["b"], "b": r["a"]} for r in ch["helped"]]
    hurt = [{**r, "a": r["b"], "b": r["a"]} for r in ch["hurt"]]
    with c1:
        st.markdown(f"**Classes A helps** ({len(helped)})")
        table(helped, "conf_helped")
    with c2:
        st.markdown(f"**Classes A hurts** ({len(hurt)})")
        table(hurt, "conf_hurt")
    names = emb_a.class_names
    row_a = {n: i for i, n in enumerate(emb_a.names)}
    pa, pb = emb_a.predictions, emb_b.predictions
    row_b = {n: i for i, n in enumerate(emb_b.names)}
    listing = [{"sample": n, "change": what, "true": names[emb_a.labels[row_a[n]]], "B predicts": names[pb[row_b[n]]],
                "A predicts": names[pa[row_a[n]]], "row": row_a[n]}
               for what, group in (("fixed", ch["fixed"]), ("broken", ch["broken"])) for n in group]
    st.markdown("**Samples whose prediction changed from wrong to right (fixed) or right to wrong (broken)**")
    st.dataframe(pd.DataFrame(listing[:MAX_LISTED], columns=["sample", "change", "true", "B predicts", "A predicts",
                                                             "row"]),
                 hide_index=True, width="stretch", height=min(38 + 35 * max(len(listing), 1), 320),
                 key="conf_fixed_broken")
    if listing:
        ss = st.session_state
        options = [None] + [r["row"] for r in listing]
        if ss.get("conf_change_inspect") not in options:
            ss["conf_change_inspect"] = None
        row = st.selectbox("Open one in the inspector (model A)", options, key="conf_change_inspect",
                           format_func=lambda r: "—" if r is None else f"row {r}: {emb_a.names[r]}")
        if row is not None:
            ss["inspect_row"], ss["inspect_model"] = int(row), "A"
            show_inspector(sel, int(row), "A", key_prefix="change_")


st.title("Confusion: which classes the model mixes up")
st.markdown("Rows are the true class, columns the predicted one; the diagonal holds the correctly classified "
            "samples. **Click a cell** (or pick it below) to list its samples and open one in the inspector.")
sel = state.current_selection()
state.subset_notice(sel)
which = _pick_model(sel)
with state.guard():
    emb = sel.embeddings(which)
    conf = confusion(emb)
names = conf["class_names"]
c1, c2, c3, c4 = st.columns(4)
c1.metric("top-1 accuracy", f"{conf['top1']:.1%}")
c2.metric("top-5 accuracy", f"{conf['top5']:.1%}")
c3.metric("samples", f"{conf['n']:,}")
normalise = c4.toggle("Normalise rows", value=True, key="conf_normalise",
                      help="Show each row as shares of its true class (the diagonal is then per-class accuracy); "
                           "off: raw counts.")

key = chart_key(which)
_adopt_click(key, names)
pairs = most_confused(emb, 1)
default = (pairs[0]["true"], pairs[0]["predicted"]) if pairs else (0, 0)
left, right = st.columns([3, 2])
with right:  # first: the pickers decide which cell the matrix outlines
    st.subheader("Samples of a cell")
    cell, inspect = _cell_panel(emb, default)
with left:
    fig = figures.confusion_figure(conf["matrix"], names, normalise, clickable=True, marked=cell)
    st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("points",))
    st.caption("Numbers are " + ("shares of each true class (rows sum to 1)" if normalise else "sample counts")
               + "; hover a cell for its count. The outlined cell is the one listed on the right.")
if inspect is not None:
    st.session_state["inspect_row"], st.session_state["inspect_model"] = int(inspect), which
    show_inspector(sel, int(inspect), which)

_pairs_and_classes(emb, conf)
if sel.other is not None:
    _change(sel, sel.embeddings("A"))
else:
    st.info("Choose a second checkpoint (e.g. the baseline of the same encoder) on the **Models and data** page to "
            "see which classes STD-CL helps or hurts.")
