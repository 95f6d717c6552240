"""Widget helpers several pages share: widgets kept in step with session keys other pages set, and
the class + sample pickers over an embeddings' rows.

Presentation only: nothing here computes; the values come from :mod:`analysis` objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from analysis.embeddings import Embeddings


def sync_widget(widget_key: str, shared: Any, options: list, default: Any) -> None:
    """Put the ``shared`` value into a widget when another page changed it (or the widget is unset).

    ``_<widget_key>_seen`` remembers the shared value last published from this widget
    (:func:`publish_widget`), so a value this page set itself does not override the user's new choice.
    """
    seen = st.session_state.get(f"_{widget_key}_seen")
    if shared in options and (shared != seen or st.session_state.get(widget_key) not in options):
        st.session_state[widget_key] = shared
    elif st.session_state.get(widget_key) not in options:
        st.session_state[widget_key] = default


def publish_widget(widget_key: str, shared_key: str, value: Any) -> None:
    """Store ``value`` (the widget's choice, as the other pages read it) under ``shared_key``."""
    st.session_state[shared_key] = value
    st.session_state[f"_{widget_key}_seen"] = st.session_state[widget_key]


def present_classes(emb: Embeddings) -> list[int]:
    """The classes with at least one row in ``emb``, in class order."""
    return [k for k in range(len(emb.class_names)) if np.any(emb.labels == k)]


def class_and_sample(emb: Embeddings, class_key: str, row_key: str, class_label: str = "Class",
                     row_numbers: bool = False) -> tuple[int, int]:
    """A class picker and, beside it, a picker of that class's rows (name, prediction, ✓ / ✗).

    Each picker keeps its session value while it is still an option, else starts at the first one;
    ``row_numbers`` puts the row number before each sample's name. Returns ``(class, row)``.
    """
    names, preds = emb.class_names, emb.predictions
    present = present_classes(emb)
    if st.session_state.get(class_key) not in present:
        st.session_state[class_key] = present[0]
    c1, c2 = st.columns([1, 2])
    cls = c1.selectbox(class_label, present, key=class_key, format_func=lambda k: f"{k}: {names[k]}")
    rows = [int(r) for r in np.flatnonzero(emb.labels == cls)]
    if st.session_state.get(row_key) not in rows:
        st.session_state[row_key] = rows[0]
    c2.selectbox("Sample", rows, key=row_key,
                 format_func=lambda r: f"{f'row {r}: ' if row_numbers else ''}{emb.names[r]} (predicted "
                                       f"{names[preds[r]]}{' ✓' if preds[r] == emb.labels[r] else ' ✗'})")
    return int(cls), int(st.session_state[row_key])


def sum_check(res: dict[str, Any], part: str, vec: str, cls_name: str) -> None:
    """The exact-decomposition check of an attribution (``analysis.attributions.sample_attributions``
    branch): per-position parts + bias part = the cosine; a negative cosine is explained."""
    parts = res["contributions"]
    unit = "joint" if res["axis"] == "joint" else "frame"
    st.markdown(
        f"**Check ({part}):** sum of the {len(parts)} {unit} contributions = {float(parts.sum()):.4f}, "
        f"plus the bias part {res['bias_contribution']:.4f}, gives **{res['cosine']:.4f} = "
        f"cos({vec}, centroid of “{cls_name}”)**.")
    if res["cosine"] < 0:
        st.caption(f"The cosine is negative: {vec} points more than 90° away from the centroid of “{cls_name}”, "
                   f"so the parts add up to less than zero. The sample is unlike the typical “{cls_name}” in this "
                   f"space even if the classifier picks that class; the {unit}s with the most negative parts pull it "
                   "away most. Common for a sequence unlike the model's training data.")
