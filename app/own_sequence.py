"""The Models and data page's "Your own sequence" section: one uploaded sequence, its prediction,
its place among the analysed split and its attention maps. The maths is in :mod:`analysis.query`
and :mod:`analysis.attributions`; this module only arranges the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis import query
from analysis import walkthrough as wt
from analysis.attributions import class_centroids, sample_attributions
from analysis.cache import file_digest
from analysis.embeddings import Embeddings
from analysis.models import LoadedModel
from analysis.projections import METHODS
from app import state
from app import uploads as up
from app.glossary import term
from app.widgets import sum_check
from stdcl.errors import DataError, StdclError

@st.cache_data(show_spinner="Analysing your sequence…", max_entries=16)
def _analyse(model_digest: str, file_key: str, emb_key: str, _model: LoadedModel, _x: np.ndarray,
             _emb: Embeddings, _source: Path) -> query.SequenceAnalysis:
    return query.analyse_sequence(_model, _x, _emb, k=5, source=_source)


@st.cache_data(show_spinner="Computing attention maps…", max_entries=16)
def _attributions(model_digest: str, file_key: str, emb_key: str, _model: LoadedModel, _x: np.ndarray,
                  _emb: Embeddings) -> dict[str, Any]:
    cents = {b: class_centroids(_emb, b) for b in ("spatial", "temporal")} if _model.head is not None else None
    return sample_attributions(_model, _x, cents)


def _neighbour_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"sample": r["name"], "class": r["class"], "cosine": round(r["cosine"], 4),
                          "same as prediction": "✓" if r["same_class"] else ""} for r in records])


def sequence_section(sel: state.Selection) -> None:
    """Upload one sequence and show what model A (or B) makes of it."""
    st.header("Your own sequence")
    st.markdown("Upload one sequence: a raw NTU RGB+D **.skeleton**, an NW-UCLA **.json**, or a **.npy** "
                "array (C, T, V, M) or (T, V, C). It is read as the dataset would read it (NTU: the CTR-GCN "
                "actor selection and centring), put through the split's evaluation transform and the modality, "
                "and shown to the model.")
    c1, c2 = st.columns([3, 2])
    f = c1.file_uploader("Sequence file", type=["skeleton", "json", "npy"], key="models_seq_file")
    which = c2.radio("Model", ["A", "B"] if sel.other is not None else ["A"], key="models_seq_model",
                     format_func=lambda w: f"{w}: {(sel.model if w == 'A' else sel.other).label}", horizontal=True)
    pre = c2.checkbox("The .npy is already preprocessed (skip the transform)", key="models_seq_pre")
    if f is None:
        return
    model = sel.model if which == "A" else sel.other
    spec = state.data_choice()
    path = None
    try:
        up.check_upload_size(f.name, f.size)
        path = up.save_upload(up.session_folder(st.session_state, "sequences"), f.name, f.getvalue())
        seq = query.sequence_input(path, model, spec.get("dataset"), spec.get("modality"), transformed=pre)
        with state.guard():
            emb = sel.embeddings(which)
        file_key = file_digest([path]) + f":{pre}:{spec}"
        res = _analyse(model.digest, file_key, emb.key, model, seq.x, emb, path)
    except DataError as e:  # name the file as the user knows it, not its copy in the upload folder
        st.error(str(up.as_uploaded(e, {path: f.name})))
        return
    except StdclError as e:
        st.error(str(e))
        return
    names = model.class_names
    pred = res.prediction
    m1, m2, m3 = st.columns(3)
    m1.metric("Predicted class", names[pred])
    m2.metric("Probability", f"{res.probabilities[pred]:.3f}")
    if seq.label is not None:
        m3.metric("True class (from the file name)", names[seq.label],
                  "correct" if seq.label == pred else "wrong", delta_color="normal" if seq.label == pred else "inverse")
    notice = query.origin_notice(seq, model)
    if notice:
        st.warning(notice, icon=":material/travel_explore:")
    st.caption(f"{seq.name}: read as {seq.format}, raw shape {' × '.join(map(str, seq.raw.shape))}, model input "
               f"{' × '.join(map(str, seq.x.shape))}; transform of {seq.dataset}: {seq.transform}; modality "
               f"{seq.modality}.")
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Top-5 prediction**")
        st.dataframe(pd.DataFrame([{"class": r.name, "probability": round(r.probability, 4)}
                                   for r in res.top]), hide_index=True)
    with right:
        st.plotly_chart(figures.skeleton_figure(seq.x, model.layout, animate=True),
                        key="models_seq_skeleton")
    _sequence_spaces(res, emb, model)
    _sequence_attention(model, seq, emb, file_key)


def _sequence_spaces(res: query.SequenceAnalysis, emb: Embeddings, model: LoadedModel) -> None:
    st.subheader("Where it falls in the two embedding spaces")
    src = "the STD-CL head's s and t" if emb.st_source == "head" else "the pooled embeddings (baseline)"
    st.caption(f"Nearest samples of the analysed split by cosine similarity, in the spatial and temporal spaces "
               f"({src}). “same as prediction” marks neighbours of the predicted class.")
    methods = list(METHODS)
    if st.session_state.get("models_seq_projection") not in methods:  # start from the Embeddings page's choice
        shared = st.session_state.get("projection_method", "umap")
        st.session_state["models_seq_projection"] = shared if shared in methods else methods[0]
    method = st.radio("Projection", methods, key="models_seq_projection", horizontal=True,
                      format_func=lambda m: state.METHOD_NAMES.get(m, m))
    cols = st.columns(2)
    for col, space in zip(cols, ("spatial", "temporal")):
        if space not in res.neighbours:
            continue
        with col:
            st.markdown(f"**{space.capitalize()} space**")
            recs = res.neighbours[space]
            st.dataframe(_neighbour_table(recs), hide_index=True, width="stretch")
            if recs and not any(r["same_class"] for r in recs):
                st.caption(f"None of the {len(recs)} nearest samples is of the predicted class: in this space the "
                           "sequence sits among other classes, so the prediction rests on little here.")
            with state.guard():
                coords = state.get_projection(emb.key, space, method, emb)
                xy = query.place_by_neighbours(coords, emb, space, res.spaces[space], k=10)
            fig = figures.embedding_scatter(coords, emb, "label", height=420,
                                            title=f"{space} ({state.METHOD_NAMES.get(method, method)})")
            st.plotly_chart(wt.add_query_marker(fig, xy), key=f"models_seq_proj_{space}")
    st.caption("The star is placed, not projected: the projection is fitted on the split alone (the same "
               "picture as on the Embeddings page), and the star sits at the mean position of your sequence's "
               "10 nearest neighbours in that space, weighted by their cosine similarity.")


def _sequence_attention(model: LoadedModel, seq: query.SequenceInput, emb: Embeddings, file_key: str) -> None:
    st.subheader("Attention maps")
    with state.guard():
        att = _attributions(model.digest, file_key, emb.key, model, seq.x, emb)
    names = model.class_names
    cls = att["class_index"]
    st.caption(f"{term('Grad-CAM')} for the predicted class “{names[cls]}”: which joints at which frames raise "
               "its logit (scaled to [0, 1]). The Attention page explains each view in detail.")
    st.plotly_chart(figures.frames_joints_heatmap(att["grad_cam_frames"], model.layout, value_label="Grad-CAM",
                                                  height=480), key="models_seq_cam")
    sp, tp = att["spatial"], att["temporal"]
    if sp is None or sp.get("contributions") is None:
        st.caption("A baseline has no STD-CL head, so there is no exact per-joint / per-frame decomposition.")
        return
    c1, c2 = st.columns(2)
    if len(sp["contributions"]) == model.layout.num_joints:
        c1.plotly_chart(figures.joint_bar(sp["contributions"], model.layout, value_label="part of cos(s, c)",
                                          title="per joint (spatial)"), key="models_seq_joints")
    frames = seq.x.shape[1]
    n = len(tp["contributions"])
    c2.plotly_chart(figures.contribution_curve(tp["contributions"], x=np.linspace(0, frames - 1, n) if n > 1 else None,
                                               value_label="part of cos(t, c)", xlabel="input frame",
                                               title="per frame (temporal)"), key="models_seq_frames")
    st.caption("Exact split of cos(s, c) and cos(t, c), c the centroid of the predicted class (the mean of the "
               "normalised embeddings of that class over the analysed samples); the Attention page explains it.")
    cls_name = names[cls]
    sum_check(sp, "spatial", "s", cls_name)
    sum_check(tp, "temporal", "t", cls_name)
