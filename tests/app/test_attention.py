"""The Attention page on the bundled demo (AppTest): exact decomposition check, Grad-CAM map, curve, baseline."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from analysis.attributions import class_centroids, grad_cam, sample_attributions  # noqa: E402
from tests.support.app import arr, figures, module_env, open_app, reference  # noqa: E402

ROW = 7


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory, umap_warm_up=False)  # this page draws no projection


@pytest.fixture(scope="module")
def demo(env):
    """The STD-CL demo model, its data and the embeddings the page analyses (same subset)."""
    return reference("A")


def _app() -> AppTest:
    return open_app("attention", inspect_row=ROW)


def _figure_with(at: AppTest, trace_type: str) -> dict:
    figs = [f for f in figures(at) if any(d["type"] == trace_type for d in f["data"])]
    assert figs, f"no {trace_type} chart"
    return figs[0]


def _frame_curve(at: AppTest) -> dict:
    figs = [f for f in figures(at)
            if f["layout"].get("xaxis", {}).get("title", {}).get("text") == "input frame"
            and f["layout"].get("yaxis", {}).get("title", {}).get("text") == "part of cos(t, c)"]
    assert len(figs) == 1
    return figs[0]


def test_decomposition_sum_check_heatmap_and_curve(demo):
    model, data, emb = demo
    at = _app()
    # the page opened the inspected row, with its class and sample pickers on it
    assert at.selectbox(key="att_row").value == ROW
    assert at.selectbox(key="att_class").value == int(emb.labels[ROW])

    x = data.dataset[int(emb.indices[ROW])][0]
    label = int(emb.labels[ROW])
    ref = sample_attributions(model, x, {b: class_centroids(emb, b) for b in ("spatial", "temporal")}, label)
    checks = [m.value for m in at.markdown if m.value.startswith("**Check (")]
    assert len(checks) == 2
    for text, branch, unit in zip(checks, ("spatial", "temporal"), ("joint", "frame")):
        r = ref[branch]
        n = len(r["contributions"])
        assert f"sum of the {n} {unit} contributions = {r['contributions'].sum():.4f}" in text
        assert f"bias part {r['bias_contribution']:.4f}" in text
        assert f"**{r['cosine']:.4f} = cos(" in text
        assert emb.class_names[label] in text
        # the parts really add up to the cosine (the page's claim)
        assert r["contributions"].sum() + r["bias_contribution"] == pytest.approx(r["cosine"], abs=1e-9)

    heat = _figure_with(at, "heatmap")
    cam_pred = grad_cam(model, x[None])  # predicted class by default
    np.testing.assert_allclose(arr(heat["data"][0]["z"]).T, cam_pred["frames"][0], atol=1e-5)
    curve = _frame_curve(at)
    np.testing.assert_allclose(arr(curve["data"][0]["y"]), ref["temporal"]["contributions"], atol=1e-6)
    skel = _figure_with(at, "scatter3d")
    assert not skel.get("frames") and not skel["layout"].get("sliders")  # one frame control: the page slider

    def drawn_frame(fig) -> np.ndarray:  # the joints of person 1 as drawn (plot axes x, depth, up = x, z, y)
        joints = next(t for t in fig["data"] if t.get("mode") == "markers")
        return np.stack([arr(joints["x"]), arr(joints["z"]), arr(joints["y"])])

    np.testing.assert_allclose(drawn_frame(skel), x[:, x.shape[1] // 2, :, 0], atol=1e-5)
    assert any("mean" in i.value and "pooling" in i.value for i in at.info)  # bundled head: mean pooling
    assert any("no joint-relation maps" in i.value for i in at.info)  # HCN has none

    # play through frames: the slider moves the marker on the Grad-CAM map and the curve
    at.slider(key="att_frame").set_value(11).run()
    assert not at.exception
    for fig in (_figure_with(at, "heatmap"), _frame_curve(at)):
        assert [s["x0"] for s in fig["layout"]["shapes"] if s.get("line", {}).get("dash") == "dot"] == [11]
    np.testing.assert_allclose(drawn_frame(_figure_with(at, "scatter3d")), x[:, 11, :, 0], atol=1e-5)

    # Grad-CAM of the true class, and of any class
    at.radio(key="att_cam_class").set_value("any class").run()
    other = (label + 3) % len(emb.class_names)
    at.selectbox(key="att_other_class").set_value(other).run()
    assert not at.exception
    heat = _figure_with(at, "heatmap")
    np.testing.assert_allclose(arr(heat["data"][0]["z"]).T,
                               grad_cam(model, x[None], other)["frames"][0], atol=1e-5)
    # the decomposition still refers to the sample's own class
    assert [m.value for m in at.markdown if m.value.startswith("**Check (")] == checks

    # picking another sample publishes it as the inspected row
    new_row = next(r for r in np.flatnonzero(emb.labels == label) if r != ROW)
    at.selectbox(key="att_row").set_value(int(new_row)).run()
    assert not at.exception
    assert at.session_state["inspect_row"] == int(new_row)


def test_baseline_shows_no_head_note_and_grad_cam_only(demo):
    at = _app()
    at.radio(key="att_model").set_value("B").run()
    assert not at.exception
    assert at.session_state["inspect_model"] == "B"
    assert any("no STD-CL head" in w.value for w in at.warning)
    assert not [m.value for m in at.markdown if m.value.startswith("**Check (")]
    assert not any(s.value.startswith("Per-joint") for s in at.subheader)
    types = {d["type"] for f in figures(at) for d in f["data"]}
    assert "heatmap" in types and "scatter3d" in types
    assert at.selectbox(key="att_row").value == ROW  # the same sample under the other model


def test_attention_weights_and_relation_maps_when_present(demo, monkeypatch):
    """The bundled head pools by the mean and HCN has no relation maps: feed the page attributions that
    have both (as an attention-pooling head on a graph encoder gives) and check it draws exactly them."""
    import streamlit as st

    import analysis.attributions as attributions

    rng = np.random.default_rng(0)
    att = {"spatial": rng.dirichlet(np.ones(25), size=2), "temporal": rng.dirichlet(np.ones(32), size=2)}
    rel = [rng.random((25, 25)) for _ in range(3)]
    real = attributions.sample_attributions

    def with_attention(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "attention": att, "joint_relations": rel}

    monkeypatch.setattr(attributions, "sample_attributions", with_attention)
    st.cache_data.clear()  # drop the page's cached attributions of the earlier tests
    at = _app()
    assert not any("mean pooling" in i.value or "no joint-relation maps" in i.value for i in at.info)

    def titled(title: str) -> dict:
        figs = [f for f in figures(at) if f["layout"].get("title", {}).get("text") == title]
        assert len(figs) == 1, title
        return figs[0]

    np.testing.assert_allclose(arr(titled("spatial branch")["data"][0]["y"]), att["spatial"][0], atol=1e-12)
    np.testing.assert_allclose(arr(titled("temporal branch")["data"][0]["y"]), att["temporal"][0], atol=1e-12)
    np.testing.assert_allclose(arr(titled("block 1 of 3")["data"][0]["z"]), rel[0], atol=1e-12)
    at.radio(key="att_person").set_value(1).run()
    at.slider(key="att_layer").set_value(3).run()
    assert not at.exception
    np.testing.assert_allclose(arr(titled("spatial branch")["data"][0]["y"]), att["spatial"][1], atol=1e-12)
    np.testing.assert_allclose(arr(titled("block 3 of 3")["data"][0]["z"]), rel[2], atol=1e-12)
