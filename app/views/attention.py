"""Attention: where a model looks for one sample (exact decomposition, Grad-CAM, attention, relations).

Everything shown is computed by :mod:`analysis.attributions` and drawn by :mod:`analysis.figures`;
this page picks the sample, the model and the class, and explains how to read each view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from analysis import figures
from analysis.attributions import class_centroids, sample_attributions
from analysis.embeddings import Embeddings
from analysis.models import LoadedModel
from app import state
from app.glossary import GLOSSARY
from app.widgets import class_and_sample, present_classes, publish_widget, sum_check, sync_widget

BRANCHES = ("spatial", "temporal")


# -- cached computations (keys are explicit strings; arrays are never hashed) ------------------------

@st.cache_data(show_spinner=False, max_entries=16)
def _centroids(emb_key: str, _emb: Embeddings) -> dict[str, np.ndarray]:
    """Class centroids of the spatial and temporal embeddings (the cosine references)."""
    return {b: class_centroids(_emb, b) for b in BRANCHES}


@st.cache_data(show_spinner="Computing attributions…", max_entries=64)
def _attributions(model_digest: str, emb_key: str, row: int, class_index: int, _model: LoadedModel,
                  _x: np.ndarray, _centroids: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """:func:`analysis.attributions.sample_attributions` of one row for one class."""
    return sample_attributions(_model, _x, _centroids, class_index)


@st.cache_resource(show_spinner=False, max_entries=64)
def _skeleton(key: str, frame: int, value_label: str, _x: np.ndarray, _layout: Any, _values: np.ndarray):
    """The skeleton at the page slider's frame (one frame control per page: the slider, no play button)."""
    return figures.skeleton_figure(_x, _layout, joint_values=_values, frame=frame, animate=False,
                                   value_label=value_label)


# -- pickers (kept in step with the session keys other pages set) -------------------------------------

def _pick_model(sel: state.Selection) -> str:
    options = ["A", "B"] if sel.other is not None else ["A"]
    names = {"A": f"A: {sel.model.label}", "B": f"B: {sel.other.label}" if sel.other is not None else "B"}
    if st.session_state.get("inspect_model") == "B" and sel.other is None:
        st.caption("No second checkpoint is chosen (Models and data page), so model A is shown.")
    sync_widget("att_model", st.session_state.get("inspect_model"), options, "A")
    st.radio("Model", options, key="att_model", format_func=names.get, horizontal=True)
    publish_widget("att_model", "inspect_model", st.session_state["att_model"])
    return st.session_state["att_model"]


def _pick_row(emb: Embeddings) -> int:
    """Class + instance pickers over the embeddings' rows, starting from ``inspect_row`` when set."""
    shared = st.session_state.get("inspect_row")
    seen = st.session_state.get("_att_row_seen")
    if isinstance(shared, (int, np.integer)) and 0 <= int(shared) < len(emb) and (
            int(shared) != seen or st.session_state.get("att_class") not in present_classes(emb)):
        st.session_state["att_class"] = int(emb.labels[int(shared)])
        st.session_state["att_row"] = int(shared)
    _, row = class_and_sample(emb, "att_class", "att_row", "True class", row_numbers=True)
    st.session_state["inspect_row"] = row
    st.session_state["_att_row_seen"] = row
    return row


def _pick_class(names: list[str], label: int, prediction: int) -> int:
    c1, c2 = st.columns([2, 3])
    which = c1.radio("Grad-CAM class", ["predicted", "true", "any class"], key="att_cam_class", horizontal=True,
                     help="The class whose logit Grad-CAM explains (the decomposition always uses the true class).")
    if which == "predicted":
        return prediction
    if which == "true":
        return label
    return int(c2.selectbox("Class", list(range(len(names))), index=prediction, key="att_other_class",
                            format_func=lambda k: f"{k}: {names[k]}"))


# -- sections --------------------------------------------------------------------------------------

def _norms_caption(res: dict[str, Any], vec: str, positions: list[str]) -> None:
    """Norms of the embedding, its largest / smallest term and the bias; ``positions`` names the terms."""
    norms = res["term_norms"]
    big, small = int(norms.argmax()), int(norms.argmin())
    name = (lambda i: positions[i]) if len(positions) == len(norms) else (lambda i: f"position {i}")
    st.caption(f"|{vec}| = {res['embedding_norm']:.4f}; term norms: largest {float(norms[big]):.4f} "
               f"({name(big)}), smallest {float(norms[small]):.4f} ({name(small)}), bias |b| = "
               f"{res['bias_norm']:.4f}. The terms are vectors, so their norms add up to more than |{vec}| "
               "(they partly cancel); the cosine parts above are the ones that add up exactly.")


def _marked(fig, frame: int):
    fig.add_vline(x=frame, line=dict(color="#d62728", width=2, dash="dot"))
    return fig


def _decomposition(res: dict[str, Any], x: np.ndarray, model: LoadedModel, cls_name: str, frame: int,
                   frames: int, key: str) -> None:
    """The exact decomposition of s (skeleton, bars, norms) and of t (curve); ``key`` names the sample."""
    sp, tp = res["spatial"], res["temporal"]
    layout = model.layout
    st.subheader("Per-joint contributions to the spatial embedding")
    st.caption(
        "The STD-CL head is linear after pooling, so the spatial embedding is exactly s = Σⱼ aⱼ + b, one "
        "term per joint j plus the projection bias. Projecting each term on the centroid c of the sample's "
        "true class (the mean of the normalised embeddings of that class, over the samples analysed) splits the cosine the same way: "
        "cos(s, c) = Σⱼ aⱼ·c / (|s||c|) + b·c / (|s||c|). A positive part pulls s towards the class, a negative one "
        "away. On the skeleton a joint's colour is its part (see the colour bar) and its size the part's "
        "magnitude; in the bar chart positive parts are blue, negative ones red.")
    sum_check(sp, "spatial", "s", cls_name)
    left, right = st.columns([3, 2])
    with left:
        if len(sp["contributions"]) == layout.num_joints:
            st.plotly_chart(_skeleton(f"{model.digest}|{key}|contributions", frame, "part of cos(s, c)", x, layout,
                                      sp["contributions"]), key="att_skeleton")
            st.caption("The skeleton at the frame the slider above chooses (the colours are per joint, the same "
                       "in every frame: the spatial embedding averages over time).")
        else:
            st.info(f"The encoder's map has {len(sp['contributions'])} joints, the layout {layout.num_joints}: "
                    "the contributions are shown as bars only.")
    with right:
        tab_c, tab_n = st.tabs(["contributions", "term norms"])
        if len(sp["contributions"]) == layout.num_joints:
            tab_c.plotly_chart(figures.joint_bar(sp["contributions"], layout, value_label="part of cos(s, c)",
                                                 height=420), key="att_joint_bar")
            tab_n.plotly_chart(figures.joint_bar(sp["term_norms"], layout, value_label="|aⱼ|", height=420),
                               key="att_joint_norms")
        else:
            tab_c.dataframe({"position": np.arange(len(sp["contributions"])), "part": sp["contributions"]})
            tab_n.dataframe({"position": np.arange(len(sp["term_norms"])), "norm": sp["term_norms"]})
    _norms_caption(sp, "s", list(layout.joints))

    st.subheader("Per-frame contributions to the temporal embedding")
    st.caption("The same split over time: t = Σ_f a_f + b, one term per frame of the encoder's map. The curve "
               "shows each frame's part of cos(t, c); peaks are the moments that make the sample look like "
               "its class, dips (below 0) the moments that argue against it. The dotted line is the frame "
               "chosen with the slider.")
    sum_check(tp, "temporal", "t", cls_name)
    n_map = len(tp["contributions"])
    xs = np.linspace(0, frames - 1, n_map) if n_map > 1 else np.zeros(1)
    if n_map != frames:
        st.caption(f"The map has {n_map} frames for {frames} input frames; each point is drawn at the input "
                   "frame it summarises.")
    st.plotly_chart(_marked(figures.contribution_curve(tp["contributions"], x=xs, value_label="part of cos(t, c)",
                                                       xlabel="input frame"), frame), key="att_curve")
    _norms_caption(tp, "t", [f"map frame {i}" for i in range(n_map)])


def _grad_cam(res: dict[str, Any], model: LoadedModel, cls_name: str, frame: int) -> None:
    st.subheader(f"Grad-CAM for “{cls_name}” (frames × joints)")
    st.caption(f"Grad-CAM: {GLOSSARY['Grad-CAM']}. The gradient of the class logit with respect to the encoder's last feature map weights its "
               "channels; the weighted map, clipped at 0 and scaled to [0, 1], says which joints at which "
               "frames raise that logit. It is resampled from the map's frames to the input frames. Unlike "
               "the decomposition it is a local, gradient-based explanation: it does not add up to anything.")
    st.plotly_chart(_marked(figures.frames_joints_heatmap(res["grad_cam_frames"], model.layout,
                                                          value_label="Grad-CAM", height=560), frame),
                    key="att_heatmap")


def _attention(res: dict[str, Any], model: LoadedModel, frames: int) -> None:
    st.subheader("Head attention weights")
    if model.head is None:
        st.caption("A baseline has no STD-CL head, so there are no head weights.")
        return
    att = res["attention"]
    if att is None:
        st.info(f"This head pools with a plain mean ({model.head.pooling} pooling, as in the released method "
                "and every bundled head): each joint and each frame gets the same weight, so there is no "
                "attention map to show. Heads trained with `pooling: attention` show their softmax weights here.")
        return
    st.caption("Softmax weights the head gives each joint (spatial branch) and each frame (temporal branch) "
               "before its projection, per person; they sum to 1 over the axis.")
    persons = att["spatial"].shape[0]
    p = st.radio("Person", list(range(persons)), format_func=lambda i: f"person {i + 1}", horizontal=True,
                 key="att_person") if persons > 1 else 0
    c1, c2 = st.columns(2)
    w_sp = att["spatial"][p]
    if len(w_sp) == model.layout.num_joints:
        c1.plotly_chart(figures.joint_bar(w_sp, model.layout, value_label="weight", title="spatial branch"),
                        key="att_weights_spatial")
    w_tp = att["temporal"][p]
    c2.plotly_chart(figures.contribution_curve(w_tp, x=np.linspace(0, frames - 1, len(w_tp)), value_label="weight",
                                               xlabel="input frame", title="temporal branch"),
                    key="att_weights_temporal")


def _relations(res: dict[str, Any], model: LoadedModel) -> None:
    st.subheader("Encoder joint-relation maps")
    rel = res["joint_relations"]
    if rel is None:
        st.info(f"{model.encoder.name.upper()} learns no joint-relation maps: its convolutions mix joints through "
                "channels rather than through a joint × joint graph (graph encoders such as 2s-AGCN and CTR-GCN, "
                "and Hyperformer's attention, have one per block).")
        return
    st.caption("Row i, column j: the weight with which joint j feeds joint i in that block (learned adjacency "
               "or attention for this sample, averaged over its persons and, where the encoder has several, over "
               "heads, frames or channels). The skeleton's own bones are only part of it: strong cells between "
               "distant joints are relations the encoder learned.")
    layer = st.slider("Block", 1, len(rel), 1, key="att_layer") if len(rel) > 1 else 1
    st.plotly_chart(figures.relation_heatmap(rel[layer - 1], model.layout, title=f"block {layer} of {len(rel)}"),
                    key="att_relations")


# -- the page --------------------------------------------------------------------------------------

st.title("Attention over joints and frames")
st.markdown("Where does a model look? For one sample: the exact split of the STD-CL embeddings into one "
            "part per joint and one per frame, Grad-CAM over the encoder's last feature map, the head's "
            "attention and the encoder's joint relations.")

sel = state.current_selection()
which = _pick_model(sel)
model = sel.model if which == "A" else sel.other
with state.guard():
    data = sel.data if which == "A" else state.get_data(model.digest, sel.data_json, model)
    emb = sel.embeddings(which)
if emb is None or not len(emb):
    st.warning("The chosen split has no samples.")
    st.stop()
state.subset_notice(sel)
row = _pick_row(emb)
label, prediction = int(emb.labels[row]), int(emb.predictions[row])
names = emb.class_names
with state.guard():
    x = np.asarray(data.dataset[int(emb.indices[row])][0], dtype=np.float32)
cls = _pick_class(names, label, prediction)
cents = _centroids(emb.key, emb) if model.head is not None else None
with state.guard():
    # the decomposition compares with the sample's own (true) class centroid; Grad-CAM explains `cls`
    res = _attributions(model.digest, emb.key, row, label, model, x, cents)
    cam = res if cls == label else _attributions(model.digest, emb.key, row, cls, model, x, cents)

prob = res["probabilities"]
c1, c2, c3, c4 = st.columns(4)
c1.metric("True class", names[label])
c2.metric("Predicted", names[prediction], "correct" if prediction == label else "wrong",
          delta_color="green" if prediction == label else "red", delta_arrow="off")
c3.metric("P(predicted)", f"{prob[prediction]:.3f}")
c4.metric("Grad-CAM class", names[cls], f"P = {prob[cls]:.3f}", delta_color="off", delta_arrow="off")

frames = x.shape[1]
frame = st.slider("Frame", 0, frames - 1, frames // 2, key="att_frame",
                  help="The one frame control of this page: the skeleton shows this frame, and the per-frame "
                       "curve and the Grad-CAM map mark it.")

if model.head is None:
    st.warning(f"**{model.label} is a baseline: it has no STD-CL head**, so its embeddings have no exact per-joint / "
               "per-frame decomposition. Only Grad-CAM (below) explains it. Pick the STD-CL checkpoint to see "
               "the decomposition.")
    st.plotly_chart(_skeleton(f"{model.digest}|{emb.key}|{row}|grad-cam {cls}", frame, "Grad-CAM", x, model.layout,
                              cam["grad_cam_frames"]), key="att_skeleton")
    st.caption(f"Joints coloured by this frame's Grad-CAM for “{names[cls]}”; the Frame slider above moves through "
               "the frames.")
else:
    _decomposition(res, x, model, names[label], frame, frames, f"{emb.key}|{row}")
_grad_cam(cam, model, names[cls], frame)
_attention(res, model, frames)
_relations(res, model)
