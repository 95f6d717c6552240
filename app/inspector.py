"""The sample inspector other pages open for one row of the embeddings: the animated skeleton the
model reads, its label and most probable classes, and its nearest neighbours in each space.

Call :func:`show_inspector` with the page's :class:`~app.state.Selection`, a row of the chosen
model's :class:`~analysis.embeddings.Embeddings` and which model (``"A"`` or ``"B"``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import figures
from analysis.embeddings import POOLED_DEFINITION, SPACES
from analysis.neighbours import neighbours_by_space, top_classes
from app import state

NEIGHBOURS = 5
NEIGHBOUR_COLUMNS = ["name", "class", "cosine", "predicted", "row"]
SPACE_HELP = {
    "global": "the classifier's input: what the logits are read from",
    "spatial": "which joints move (the frame-pooled, per-joint view)",
    "temporal": "how the movement unfolds over time (the joint-pooled, per-frame view)",
}


def show_inspector(sel: state.Selection, row: int, which: str = "A", key_prefix: str = "") -> None:
    """Draw the inspector for sample ``row`` of model ``which`` (``"A"``: ``sel.model``, ``"B"``: ``sel.other``)."""
    model = sel.model if which == "A" else sel.other
    if model is None:
        st.info("No second checkpoint is chosen (Models and data page), so there is nothing to inspect for B.")
        return
    emb = sel.embeddings(which)
    n = len(emb)
    if not 0 <= int(row) < n:
        st.warning(f"Sample row {row} is not among the {n} analysed samples; choose another one.")
        return
    row = int(row)
    data = sel.data if which == "A" else state.get_data(model.digest, sel.data_json, model)
    names, label, pred = emb.class_names, int(emb.labels[row]), int(emb.predictions[row])
    with state.guard():
        x = data.dataset[int(emb.indices[row])][0]
        top = top_classes(emb, row, NEIGHBOURS)
        neighbours = neighbours_by_space(emb, row, NEIGHBOURS, SPACES)

    st.subheader(f"Sample {emb.names[row]}")
    st.caption(f"Model {which}: {model.label} · row {row} of the analysed samples · item {int(emb.indices[row])} "
               f"of {data.describe()}")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figures.skeleton_figure(x, data.layout, title="what the model reads (press play)"),
                        key=f"{key_prefix}inspector_{which}_skeleton")
        st.caption("The skeleton exactly as the model receives it (after the evaluation transform: window, "
                   "normalisation). Each person has its own colour; use the slider to step through frames.")
    with right:
        ok = label == pred
        st.markdown(f"**Label:** {names[label]}  \n**Prediction:** {names[pred]} "
                    f"{':material/check: correct' if ok else ':material/close: wrong'}")
        st.dataframe(pd.DataFrame([{"class": t["name"], "probability": t["probability"],
                                    "true label": "✓" if t["true"] else ""} for t in top]),
                     hide_index=True, width="stretch", key=f"{key_prefix}inspector_{which}_top",
                     column_config={"probability": st.column_config.ProgressColumn(
                         "probability", min_value=0.0, max_value=1.0, format="%.3f")})
        st.caption(f"The {len(top)} most probable classes (softmax of the logits).")

    st.markdown(f"**Nearest neighbours** ({NEIGHBOURS} per space, cosine similarity among the {n} analysed samples; "
                "the cosine of two embeddings is 1 when they point the same way, 0 when unrelated)")
    counts = {space: sum(r["same_class"] for r in recs) for space, recs in neighbours.items()}
    tabs = st.tabs([f"{space}: {counts[space]}/{len(recs)} of the same class" for space, recs in neighbours.items()])
    for tab, (space, recs) in zip(tabs, neighbours.items()):  # one tab each: the whole width, no sideways scroll
        with tab:
            st.dataframe(pd.DataFrame([{"name": r["name"], "class": r["class"], "cosine": round(r["cosine"], 4),
                                        "predicted": r["predicted_class"], "row": r["row"]} for r in recs],
                                      columns=NEIGHBOUR_COLUMNS),
                         hide_index=True, width="stretch", key=f"{key_prefix}inspector_{which}_neighbours_{space}",
                         column_config={"cosine": st.column_config.NumberColumn(format="%.4f", width="small"),
                                        "row": st.column_config.NumberColumn(width="small")})
            st.caption(SPACE_HELP.get(space, ""))
    if emb.st_source == "pooled":
        st.caption(f"{model.label} has no STD-CL head, so its spatial and temporal spaces are the pooled ones. "
                   + POOLED_DEFINITION)
    st.caption("How to read them: a neighbour of another class in one space but not in the other shows what that "
               "space ignores. On the synthetic set a temporal twin (same poses in another order or tempo) may sit "
               "close in the spatial space, which pools over frames, but should be far in the temporal one; a "
               "spatial twin (the mirror image, same timing) the other way round.")
