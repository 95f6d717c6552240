"""Separation: how well each embedding space separates the classes, overall, per class and per class
pair; baseline vs STD-CL; and, on the synthetic set, which branch separates which twin pairs.

Every number comes from :mod:`analysis.metrics` (on the embeddings themselves, never on 2-D
coordinates); the charts from :mod:`analysis.figures`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis.embeddings import POOLED_DEFINITION, SPACES, Embeddings
from analysis.metrics import METRIC_INFO, TWIN_METRICS, compare_metrics, metric_name, space_metrics
from analysis.twins import twin_separation
from app import state

POOLED = ("spatial_pooled", "temporal_pooled")
PER_CLASS = ("n", "knn_accuracy", "silhouette", "centroid_margin", "alignment")
PAIR_VIEWS = {"centroid_similarity": "centroid cosine similarity (high: the two classes point the same way)",
              "pair_fisher": "pairwise Fisher ratio (high: the two classes are well separated)",
              "pair_silhouette": "two-class silhouette (high: the two classes are well separated)"}
TWIN_INFO = {"knn_accuracy": "leave-one-out 5-NN accuracy using only the two classes' samples (0.5 is chance, "
                             "1 means every sample's neighbours are of its own class)",
             "silhouette": "two-class silhouette, cosine distance (-1 to 1, higher: more separated)",
             "fisher": "Fisher ratio of the two classes (between / within scatter, higher: more separated)",
             "centroid_cosine": "cosine of the two class centroids (lower: more separated)"}
FMT = "%.4f"


# -- cached computations (explicit keys; arrays never hashed) -------------------------------------------

@st.cache_data(show_spinner="Comparing the pooled encoder spaces…", max_entries=16)
def _pooled_metrics(emb_key: str, _emb: Embeddings) -> dict[str, Any]:
    return space_metrics(_emb, spaces=POOLED)


@st.cache_data(show_spinner="Separating the twin pairs…", max_entries=16)
def _twins(emb_key: str, _emb: Embeddings) -> list[dict[str, Any]]:
    return twin_separation(_emb, SPACES)


# -- tables ------------------------------------------------------------------------------------------

def _metric_help(metric: str) -> str:
    info = METRIC_INFO.get(metric)
    return "" if info is None else info.description


def overall_metrics(metrics: dict[str, Any]) -> list[str]:
    """The overall metrics present, in :data:`METRIC_INFO` order."""
    return [m for m in METRIC_INFO if any(m in v["overall"] for v in metrics.values())]


def overall_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Metrics down (by name), spaces across, and which direction is better (descriptions: below the table)."""
    names = overall_metrics(metrics)
    df = pd.DataFrame({s: [v["overall"].get(m) for m in names] for s, v in metrics.items()},
                      index=[metric_name(m) for m in names], dtype=float)
    df["better"] = [METRIC_INFO[m].better for m in names]
    df.index.name = "metric"
    return df


def per_class_table(metrics: dict[str, Any], space: str, class_names: list[str]) -> pd.DataFrame:
    pc = metrics[space]["per_class"]
    df = pd.DataFrame({metric_name(k): pc[k] for k in PER_CLASS if k in pc}, index=list(class_names))
    df.index.name = "class"
    return df.astype({k: float for k in df.columns if k != metric_name("n")})


def comparison_table(rows: list[dict[str, Any]], label_a: str, label_b: str) -> pd.DataFrame:
    who = {"a": f"A: {label_a}", "b": f"B: {label_b}", "=": "equal", None: "–"}
    return pd.DataFrame({
        "space": [r["space"] for r in rows], "metric": [metric_name(r["metric"]) for r in rows],
        f"A: {label_a}": [r["a"] for r in rows], f"B: {label_b}": [r["b"] for r in rows],
        "B − A": [r["delta"] for r in rows], "better": [who.get(r["better"], r["better"]) for r in rows],
        "higher or lower is better": [METRIC_INFO[r["metric"]].better for r in rows]}).astype(
        {f"A: {label_a}": float, f"B: {label_b}": float, "B − A": float})


def twin_table(twins: dict[str, list[dict[str, Any]]], metric: str) -> pd.DataFrame:
    """One row per twin pair; one column per model and space holding ``metric``."""
    first = next(iter(twins.values()))
    data: dict[str, list] = {"pair": [r["pair"] for r in first], "type": [r["type"] for r in first]}
    for which, rows in twins.items():
        for s in SPACES:
            data[f"{which} {s}"] = [r["spaces"].get(s, {}).get(metric) for r in rows]
    df = pd.DataFrame(data)
    return df.astype({c: float for c in df.columns if c not in ("pair", "type")})


def _number_columns(df: pd.DataFrame) -> dict[str, Any]:
    return {c: st.column_config.NumberColumn(c, format=FMT) for c in df.columns
            if pd.api.types.is_float_dtype(df[c])}


# -- sections ----------------------------------------------------------------------------------------

def _space_note(emb: Embeddings, label: str) -> None:
    if emb.st_source == "pooled":
        st.caption(f"{label} is a baseline (no STD-CL head): its spatial and temporal spaces are the pooled "
                   f"feature maps. {POOLED_DEFINITION}")


def _overall(metrics: dict[str, Any], emb: Embeddings, label: str) -> None:
    st.subheader("Overall, per space")
    o = next(iter(metrics.values()))["overall"]
    st.caption(f"{label}: {o['n']:,} samples of {o['classes']} classes. Each metric is computed in each space on "
               "the L2-normalised embeddings (cosine geometry). Read across a row to see which space separates "
               "the classes best; the *better* column says which direction is good.")
    df = overall_table(metrics)
    st.dataframe(df, column_config=_number_columns(df), key="sep_overall")
    st.markdown("\n".join(f"- **{metric_name(m)}** ({METRIC_INFO[m].better} is better): {_metric_help(m)}"
                           for m in overall_metrics(metrics)))
    _space_note(emb, label)


def _per_class(metrics: dict[str, Any], emb: Embeddings) -> None:
    st.subheader("Per class")
    names = emb.class_names
    c1, c2 = st.columns(2)
    space = c1.selectbox("Space for the table", list(metrics), index=list(metrics).index("spatial")
                         if "spatial" in metrics else 0, key="sep_space")
    metric = c2.selectbox("Metric for the bars", [m for m in PER_CLASS if m != "n"], key="sep_class_metric",
                          format_func=metric_name,
                          help="Per-class k-NN accuracy is the recall of the leave-one-out k-NN classifier.")
    st.caption("samples: of the class, analysed; k-NN accuracy: share of its samples whose 5 nearest neighbours "
               "vote for it; silhouette and centroid margin: their class means (how far inside its own cluster a "
               "sample sits; the centroid is the mean of the class's normalised embeddings); alignment: mean "
               "squared distance between its samples (lower is tighter). Empty cells: the class has no sample here.")
    df = per_class_table(metrics, space, names)
    st.dataframe(df, column_config=_number_columns(df), key="sep_per_class")
    bars = pd.DataFrame({s: metrics[s]["per_class"][metric] for s in metrics}, index=list(names), dtype=float)
    st.markdown(f"**{metric_name(metric)} per class in every space** ({_metric_help(metric) or 'see above'})")
    st.bar_chart(bars, stack=False, horizontal=True, sort=False, height=max(300, 22 * len(names) + 80),
                 x_label="class", y_label=metric_name(metric))  # horizontal: x is the class axis, drawn vertically


def _per_pair(metrics: dict[str, Any], emb: Embeddings) -> None:
    st.subheader("Per class pair")
    st.caption("Which classes a space keeps close. Left: the cosine similarity of the class centroids (near 1: "
               "the two classes point the same way; 0 or below: unrelated or opposite). Right: a separation score "
               "of each pair computed on that pair's samples alone (Fisher ratio or two-class silhouette; low: "
               "hard to tell apart). Twin classes that a space cannot tell apart show up off the diagonal as a "
               "high similarity on the left and a low score on the right. The colour bars give the values; hover "
               "for each cell.")
    c1, c2 = st.columns(2)
    space = c1.selectbox("Space", list(metrics), index=list(metrics).index("spatial") if "spatial" in metrics else 0,
                         key="sep_pair_space")
    view = c2.selectbox("Pair separation", [k for k in PAIR_VIEWS if k != "centroid_similarity"],
                        format_func=lambda k: PAIR_VIEWS[k].split(" (")[0], key="sep_pair_view")
    left, right = st.columns(2)
    for col, key in ((left, "centroid_similarity"), (right, view)):
        m = np.asarray(metrics[space][key], dtype=float)
        col.plotly_chart(figures.similarity_matrix_figure(m, emb.class_names,
                                                          title=f"{space}: {PAIR_VIEWS[key].split(' (')[0]}",
                                                          value_label=metric_name(key), height=520),
                         key=f"sep_pair_{key}")


def _comparison(sel: state.Selection, ma: dict[str, Any], mb: dict[str, Any], ea: Embeddings,
                eb: Embeddings) -> None:
    a, b = sel.model, sel.other
    st.header("Baseline vs STD-CL (A vs B)")
    st.caption(f"A = {a.describe()}. B = {b.describe()}. Same samples, same metrics; *better* names the "
               "checkpoint with the better value (by the metric's direction). The global space is the "
               "classifier's input in both.")
    if ea.st_source != eb.st_source:
        st.caption("Only one of the two has an STD-CL head, so its spatial / temporal spaces are the head's "
                   "embeddings and the other's are pooled feature maps. Tick the box below to also compare the "
                   "pooled spaces of both encoders, which are defined the same way for both (equal terms).")
    if st.checkbox("Also compare the pooled encoder spaces (equal terms)", key="sep_pooled"):
        with state.guard():
            ma = {**ma, **_pooled_metrics(ea.key, ea)}
            mb = {**mb, **_pooled_metrics(eb.key, eb)}
        st.caption(POOLED_DEFINITION)
    rows = compare_metrics(ma, mb)
    df = comparison_table(rows, a.label, b.label)
    st.dataframe(df, column_config=_number_columns(df), hide_index=True, key="sep_compare")
    st.plotly_chart(figures.metrics_bar(rows, f"A: {a.label}", f"B: {b.label}", height=380), key="sep_compare_bar")


def _twin_section(sel: state.Selection, embs: dict[str, Embeddings]) -> None:
    st.header("Spatial twins vs temporal twins")
    st.markdown(
        "The synthetic teaching set pairs classes into **twins**. *Spatial twins* move the same way at the same "
        "time but with different body parts (left vs right hand): only *where* differs. *Temporal twins* use "
        "the same joints in the same poses but differ in order or speed (sit down vs stand up, clap slowly vs "
        "fast): only *when* differs. For each pair the table measures how well each space tells the two "
        "classes apart, using only their samples. **How to read it:** a space that encodes where the motion "
        "is should separate the spatial twins (values near 1 for k-NN accuracy) and barely the temporal "
        "twins (near 0.5, chance); a space that encodes how the motion unfolds should do the opposite. The "
        "decoupling works when, in the STD-CL checkpoint, the *spatial* column is high on the spatial rows "
        "and the *temporal* column is high on the temporal rows, while the global space separates both; a row "
        "that breaks the pattern is a difference that branch does not capture. Compare with the baseline's "
        "pooled spaces to see what the contrastive head adds.")
    metric = st.selectbox("Twin metric", list(TWIN_METRICS), key="sep_twin_metric", format_func=metric_name,
                          help="; ".join(f"{metric_name(k)}: {v}" for k, v in TWIN_INFO.items()))
    st.caption(f"{metric_name(metric)}: {TWIN_INFO.get(metric, '')}. Columns: model (A, B) and space.")
    with state.guard():
        twins = {w: _twins(e.key, e) for w, e in embs.items()}
    df = twin_table(twins, metric)
    st.dataframe(df, column_config=_number_columns(df), hide_index=True, key="sep_twins")
    labels = {"A": sel.model.label, "B": sel.other.label if sel.other is not None else ""}
    cols = st.columns(len(twins))
    for col, (w, rows) in zip(cols, twins.items()):
        col.plotly_chart(figures.twin_pairs_figure(rows, metric, title=f"{w}: {labels[w]}", height=380),
                         key=f"sep_twin_bar_{w}")


# -- the page ----------------------------------------------------------------------------------------

st.title("Separation")
st.markdown("How well does each embedding space separate the classes? Silhouette, k-NN accuracy, Davies-Bouldin, "
            "Calinski-Harabasz, Fisher ratio, alignment / uniformity and the centroid margin, per space "
            "(global, spatial, temporal), per class and per class pair. **All of them are computed on the "
            "embeddings themselves** (full dimension, L2-normalised), never on the 2-D coordinates of the "
            "UMAP / PCA maps, which distort distances.")

sel = state.current_selection()
state.subset_notice(sel)
with state.guard():
    emb_a = sel.embeddings("A")
    emb_b = sel.embeddings("B")
if emb_a is None or not len(emb_a):
    st.warning("The chosen split has no samples.")
    st.stop()
with state.guard():
    met = {"A": state.get_metrics(emb_a.key, emb_a)}
    if emb_b is not None:
        met["B"] = state.get_metrics(emb_b.key, emb_b)
embs = {"A": emb_a} if emb_b is None else {"A": emb_a, "B": emb_b}
models = {"A": sel.model, "B": sel.other}

st.header("One checkpoint")
which = st.radio("Checkpoint", list(embs), key="sep_model", horizontal=True,
                 format_func=lambda w: f"{w}: {models[w].label} ({'STD-CL' if models[w].stdcl else 'baseline'})")
_overall(met[which], embs[which], models[which].label)
_per_class(met[which], embs[which])
_per_pair(met[which], embs[which])

if emb_b is not None:
    _comparison(sel, met["A"], met["B"], emb_a, emb_b)
else:
    st.info("Choose a second checkpoint (B) on the **Models and data** page to compare baseline and STD-CL.")

if emb_a.class_meta and any((m or {}).get("twin") is not None for m in emb_a.class_meta):
    _twin_section(sel, embs)
