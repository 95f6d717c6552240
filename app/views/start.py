"""Start: spatial-temporal decoupling explained on a real sample, step by step.

Everything shown is computed by :mod:`analysis.walkthrough` (one sample through the encoder and
the head; hardest positives and negatives over the split) and drawn by :mod:`analysis.figures`
and the small builders in :mod:`analysis.walkthrough`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis import walkthrough as wt
from analysis.embeddings import POOLED_DEFINITION, Embeddings
from analysis.models import LoadedModel
from app import state
from app.glossary import GLOSSARY, glossary_markdown, term
from app.widgets import class_and_sample, present_classes

SPACES = ("spatial", "temporal")


# -- cached computations (explicit keys, no hashing of arrays) ---------------------------------------

@st.cache_data(show_spinner=False, max_entries=64)
def _walk(model_digest: str, data_json: str, index: int, _model: LoadedModel, _x: np.ndarray) -> wt.SampleWalk:
    return wt.walk_sample(_model, _x)


@st.cache_data(show_spinner=False, max_entries=128)
def _partners(emb_key: str, row: int, space: str, _emb: Embeddings) -> dict[str, Any]:
    return wt.contrast_partners(_emb, row, space, k=5)


@st.cache_data(show_spinner=False, max_entries=128)
def _twin_data(emb_key: str, row: int, _emb: Embeddings) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
    return wt.twin_contrast(_emb, row), {s: wt.class_similarity(_emb, row, s) for s in SPACES if s in _emb.spaces}


# -- pickers ------------------------------------------------------------------------------------------

def _model_key(refs: dict) -> tuple[str, str]:
    """``(key of model A, key picked here)``: the checkpoint to explain, model A unless the user picks another."""
    a_default, _ = state.default_pair(refs)
    a_key = st.session_state.get("model_a", a_default)
    a_key = a_key if a_key in refs else a_default
    options = list(refs)
    if st.session_state.get("_start_a_seen") != a_key or st.session_state.get("start_model") not in options:
        st.session_state["start_model"] = a_key  # follow model A when it changes on the Models page
    st.session_state["_start_a_seen"] = a_key
    st.selectbox("Checkpoint to explain", options, key="start_model",
                 format_func=lambda k: f"{k} (model A)" if k == a_key else k,
                 help="Model A of the Models and data page by default; any other checkpoint can be explained too.")
    return a_key, st.session_state["start_model"]


def _pick_row(emb: Embeddings) -> int:
    kept = st.session_state.get("_start_kept", (None, None))  # widget state is dropped on other pages
    if "start_class" not in st.session_state and kept[0] in present_classes(emb):
        st.session_state["start_class"], st.session_state["start_row"] = kept
    cls, row = class_and_sample(emb, "start_class", "start_row")
    st.session_state["_start_kept"] = (cls, row)
    return row


# -- sections -----------------------------------------------------------------------------------------

def _input(x: np.ndarray, model: LoadedModel, emb: Embeddings, row: int) -> None:
    label = int(emb.labels[row])
    meta = emb.class_meta[label] if emb.class_meta and label < len(emb.class_meta) else {}
    st.subheader("1 · The input: a skeleton sequence")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figures.skeleton_figure(x, model.layout, animate=True), key="start_skeleton")
    with right:
        c, t, v, m = x.shape
        st.markdown(f"**{emb.names[row]}**: *{emb.class_names[label]}*")
        if meta.get("description"):
            st.markdown(f"> {meta['description']}")
        st.markdown(f"The model reads **{c} × {t} × {v} × {m}**: {c} coordinates of {v} joints "
                    f"({model.layout.name}) in {t} frames, for up to {m} persons.")
        st.caption("Press play to run the sequence (a person that is not there is all zeros and not drawn). "
                   "This is the evaluation input: the split's test transform (cropping and resizing to the "
                   "model's window) has been applied.")


def _feature_map(walk: wt.SampleWalk, model: LoadedModel) -> None:
    c, t, v = walk.feature_shape
    st.subheader("2 · The encoder's feature map X")
    cols = st.columns(4)
    cols[0].metric("channels C'", c)
    cols[1].metric("frames T'", t)
    cols[2].metric("joints V'", v)
    cols[3].metric("persons M", walk.persons)
    st.markdown(
        f"The encoder ({model.encoder.name}) turns the input into a map **X** of shape "
        f"**C' × T' × V' = {c} × {t} × {v}** per person: a {c}-number description of every joint at every "
        "time step. The ordinary classifier only ever sees X averaged over frames, joints and persons. "
        "STD-CL adds a training-only head that reads X in two other ways, below.")
    if v == model.layout.num_joints:
        st.plotly_chart(figures.frames_joints_heatmap(walk.activity, model.layout, value_label="mean |X|",
                                                      height=420), key="start_activity")
        st.caption("Where the map is active: the mean absolute value of X over its channels (and persons), "
                   "for every frame T' (across) and joint V' (down).")


def _pooled(walk: wt.SampleWalk, model: LoadedModel) -> None:
    c, t, v = walk.feature_shape
    st.subheader("3 · Decoupling: pool over frames, pool over joints")
    st.caption(f"Decoupling is {term('pooling')}, done twice: once over frames, once over joints.")
    center = st.toggle("Subtract each channel's mean", value=True, key="start_center",
                       help="On: the colours show how joints (frames) differ within each channel. Off: the raw "
                            "pooled values, where differences between channels dominate.")
    left, right = st.columns(2)
    joints = list(model.layout.joints) if v == model.layout.num_joints else None
    label = "difference from channel mean" if center else "mean activation"
    with left:
        st.markdown(f"**Mean over the {t} frames → one C'-vector per joint ({c} × {v})**")
        st.plotly_chart(wt.channel_heatmap(walk.per_joint, joints, "joint", height=440, center=center,
                                           value_label=label), key="start_per_joint")
        st.caption("Each column is what one joint does *on average over time*: when a joint moves, and in "
                   "which order, is gone; which joints move, and how, stays. This is what the **spatial** "
                   "branch reads.")
    with right:
        st.markdown(f"**Mean over the {v} joints → one C'-vector per frame ({c} × {t})**")
        st.plotly_chart(wt.channel_heatmap(walk.per_frame, None, "frame", height=440, center=center,
                                           value_label=label), key="start_per_frame")
        st.caption("Each column is what the whole body looks like *at one time step*: which joint did it "
                   "is blurred, the course of the motion over time stays. This is what the **temporal** "
                   "branch reads.")


def _embeddings(walk: wt.SampleWalk, model: LoadedModel) -> None:
    st.subheader("4 · The two embeddings")
    if model.head is not None:
        h = model.head
        st.markdown(
            f"The STD-CL head maps each pooled matrix to one vector: a 1×1 linear reduction "
            f"C' = {h.feature_shape[0]} → C'/r = {h.reduced} shared by all joints (frames), flattened, then a "
            f"linear map to **D = {h.dim}**; persons are projected separately and averaged. No activation: each "
            "branch is linear after pooling, which is why the Attention page can split s exactly into one "
            "part per joint and t into one part per frame.")
        vectors = {"s (spatial)": walk.spatial, "t (temporal)": walk.temporal}
    else:
        st.markdown(f"**{model.label} is a baseline**: it was trained without the head, so there is no learned "
                    "s and t. The analysis uses the parameter-free counterparts instead:")
        st.info(POOLED_DEFINITION)
        vectors = {f"spatial ({len(walk.spatial)})": walk.spatial, f"temporal ({len(walk.temporal)})": walk.temporal}
    st.plotly_chart(wt.embedding_strips(vectors, height=200), key="start_strips")
    st.caption("Each strip is one embedding of this sample, one coloured cell per dimension. On its own a strip "
               "means little: what matters is how it compares with other samples' strips, next.")


def _partner_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"sample": r["name"], "class": r["class"], "cosine": round(r["cosine"], 4),
                          "predicted": r["predicted_class"]} for r in records])


def _contrast(emb: Embeddings, row: int, model: LoadedModel) -> None:
    st.subheader("5 · What the contrastive loss pulls together and pushes apart")
    how = "the trained head's s and t" if emb.st_source == "head" else "the pooled embeddings (a baseline has no head)"
    st.markdown(
        f"During training each embedding, {term('L2-normalised')}, is compared with a {term('memory bank')}. "
        "The loss **pulls** it towards its **hardest positives**, the samples of its own class it "
        "is *least* similar to, and **pushes** it away from its **hardest negatives**, the samples of other "
        f"classes it is *most* similar to. Here the bank is the analysed split and the embeddings are {how}; "
        f"similarity is the {term('cosine')}.")
    cols = st.columns(len(SPACES))
    for col, space in zip(cols, SPACES):
        res = _partners(emb.key, row, space, emb)
        with col:
            st.markdown(f"#### {space.capitalize()} space")
            m1, m2 = st.columns(2)
            m1.metric("mean cosine, same class", f"{res['mean_positive']:.3f}",
                      help=f"over the {res['num_positives']} other samples of this class")
            m2.metric("mean cosine, other classes", f"{res['mean_negative']:.3f}",
                      help=f"over the {res['num_negatives']} samples of other classes")
            narrow = {"cosine": st.column_config.NumberColumn(format="%.4f", width="small")}
            st.markdown("**Hardest positives** (pulled closer)")
            st.dataframe(_partner_table(res["positives"]), hide_index=True, width="stretch", column_config=narrow)
            st.markdown("**Hardest negatives** (pushed away)")
            st.dataframe(_partner_table(res["negatives"]), hide_index=True, width="stretch", column_config=narrow)
            twin = (emb.class_meta[int(emb.labels[row])].get("twin")
                    if emb.class_meta and int(emb.labels[row]) < len(emb.class_meta) else None)
            if twin is not None and any(r["label"] == twin for r in res["negatives"]):
                st.caption(f"Its twin class *{emb.class_names[twin]}* is among the hardest negatives here: in "
                           f"this space the two are close, see step 6.")
            loss = res["loss"]
            if loss is not None:
                st.caption(f"Hard-mined InfoNCE of this sample against the split: **{loss['loss']:.3f}** "
                           f"(P = {loss['num_pos']} hardest positives, K = {loss['num_neg']} hardest and K random "
                           f"negatives, τ = {loss['tau']:g}"
                           + ("; P and K capped by the split's size, training uses 128 and 512" if loss["capped"]
                              else "") + "). Lower is better separated.")
    st.caption(f"InfoNCE: {GLOSSARY['InfoNCE']}. P / K: {GLOSSARY['P / K']}.")


def _twins(emb: Embeddings, row: int) -> None:
    info, sims = _twin_data(emb.key, row, emb)
    st.subheader("6 · Why two spaces: twin actions")
    has_twins = bool(emb.class_meta) and any(m.get("twin") is not None for m in emb.class_meta)
    if not has_twins:
        st.caption("This dataset has no twin classes (the synthetic teaching set, the bundled demo's data, has "
                   "them). The chart still shows how similar this sample is to each class in each space.")
    st.markdown(
        "The synthetic teaching set pairs classes into twins. **Spatial twins** (e.g. *wave left hand* / "
        "*wave right hand*) do the same motion with the same timing on mirrored sides of the body: frame by "
        "frame the whole body looks alike, so per-frame (temporal) features hardly differ, but *which* joints "
        "move differs, so the **spatial** embedding tells them apart. **Temporal twins** (e.g. *sit down* / "
        "*stand up*) pass through the same poses in opposite order: averaged over time every joint looks "
        "alike, so per-joint (spatial) features hardly differ, but the course over time differs, so the "
        "**temporal** embedding tells them apart.")
    st.page_link("views/evolution.py", label="Watch the twins part during training: Training evolution",
                 icon=":material/timeline:")
    label = int(emb.labels[row])
    twin = info["twin"] if info else None
    st.plotly_chart(wt.class_similarity_figure(sims, emb.class_names, label, twin, height=380), key="start_class_sims")
    st.caption("Mean cosine of this sample to the samples of each class, per space; its own class is outlined in "
               "black" + (", its twin in red." if twin is not None else "."))
    if info is None and has_twins:
        st.info(f"*{emb.class_names[label]}* has no twin class; pick e.g. a *wave*, *sit down* or *stand up* sample "
                "of the synthetic set to see the effect.")
    if info is None:
        return
    tname = emb.class_names[twin]
    st.markdown(f"**{emb.class_names[label]}** and **{tname}** are **{info['twin_type']} twins**: "
                f"{info['contrast']}.")
    table = pd.DataFrame([{"space": s, "to own class": round(v["own"], 4), f"to {tname}": round(v["twin"], 4),
                           "margin (own − twin)": round(v["margin"], 4)} for s, v in info["spaces"].items()])
    st.dataframe(table, hide_index=True)
    if info["spaces"]:
        best = max(info["spaces"], key=lambda s: info["spaces"][s]["margin"])
        expected = info["twin_type"]
        verdict = ("as expected" if best == expected else
                   f"not the {expected} space one would expect: this checkpoint or sample is an exception")
        st.caption(f"The larger margin is in the **{best}** space ({verdict}). A margin near 0 means the space "
                   "cannot tell the twins apart for this sample.")


# -- the page -----------------------------------------------------------------------------------------

st.title("Spatial-temporal decoupling, step by step")
st.markdown(
    "A skeleton encoder turns a sequence of joints into a feature map over **channels × frames × joints**. "
    "STD-CL (spatial-temporal decoupling contrastive learning) adds a head, used only while training, that "
    "reads this map twice: **averaged over time** (what each joint does → a *spatial* embedding) and "
    "**averaged over joints** (what each moment looks like → a *temporal* embedding), and trains both with "
    "a contrastive loss: same class together, other classes apart. At test time the head is dropped; the "
    "encoder keeps what it learned, at no extra cost. Follow one sample through these steps.")
PIPELINE = """\
input x  C×T×V×M ──encoder──▶ X  C'×T'×V' per person ──mean over T',V'──▶ classifier (kept at test time)
                                   ├─ mean over T' ▶ C'×V' per joint  ▶ reduce, flatten, linear ▶ s (spatial)
                                   └─ mean over V' ▶ C'×T' per frame  ▶ reduce, flatten, linear ▶ t (temporal)"""
st.code(PIPELINE, language=None)

sel = state.current_selection()
refs = state.model_options()
a_key, key = _model_key(refs)
if key == a_key:
    model, data = sel.model, sel.data
    with state.guard():
        emb = sel.embeddings("A")
else:
    with state.guard():
        model = state.get_model(str(refs[key].path))
        data = state.get_data(model.digest, sel.data_json, model)
        emb = state.get_embeddings(model.digest, sel.data_json, sel.max_samples, model, data)
if emb is None or not len(emb):
    st.warning("The chosen split has no samples.")
    st.stop()
st.caption(f"{model.describe()} · data: {data.describe()}")
state.subset_notice(sel)
row = _pick_row(emb)
index = int(emb.indices[row])
with state.guard():
    x = np.asarray(data.dataset[index][0], dtype=np.float32)
    walk = _walk(model.digest, sel.data_json, index, model, x)

_input(x, model, emb, row)
_feature_map(walk, model)
_pooled(walk, model)
_embeddings(walk, model)
_contrast(emb, row, model)
_twins(emb, row)
with st.expander("Glossary: the terms of this app in one line each"):
    st.markdown(glossary_markdown())
