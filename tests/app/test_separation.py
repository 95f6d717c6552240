"""The Separation page on the bundled demo (AppTest): metric tables equal analysis.metrics, twin table,
baseline-vs-STD-CL comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from analysis.embeddings import SPACES  # noqa: E402
from analysis.metrics import METRIC_INFO, compare_metrics, metric_name, space_metrics  # noqa: E402
from analysis.twins import twin_separation  # noqa: E402
from tests.support.app import module_env, open_app, reference_pair  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory, umap_warm_up=False)  # this page draws no projection


@pytest.fixture(scope="module")
def reference(env):
    """Embeddings of A (STD-CL demo) and B (its baseline) on the page's samples, and their metrics
    computed here without the cache."""
    return {w: (r.model, r.emb, space_metrics(r.emb, use_cache=False)) for w, r in reference_pair().items()}


def _table(at: AppTest, column: str) -> pd.DataFrame:
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a column {column!r}"
    return found[0]


def _close(got, want) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray([np.nan if v is None else v for v in want],
                                                                        dtype=float), rtol=1e-9, atol=1e-12)


def _check_overall_and_per_class(at: AppTest, metrics: dict, class_names: list[str]) -> None:
    (overall,) = [d.value for d in at.dataframe if d.value.index.name == "metric"]
    assert list(overall.columns) == [*SPACES, "better"]  # no long text column cut off at the edge
    assert list(overall.index) == [metric_name(m) for m in METRIC_INFO]  # names, not snake_case keys
    listed = [m.value for m in at.markdown if m.value.startswith("- **")]
    assert len(listed) == 1 and all(f"**{metric_name(m)}** ({i.better} is better): {i.description}" in listed[0]
                                    for m, i in METRIC_INFO.items())
    for s in SPACES:
        _close(overall[s], [metrics[s]["overall"][m] for m in METRIC_INFO])
    assert list(overall["better"]) == [i.better for i in METRIC_INFO.values()]
    per_class = _table(at, "centroid margin")
    assert list(per_class.index) == class_names
    space = at.selectbox(key="sep_space").value
    for col in ("knn_accuracy", "silhouette", "centroid_margin", "alignment"):
        _close(per_class[metric_name(col)], metrics[space]["per_class"][col])
    assert list(per_class["samples"]) == metrics[space]["per_class"]["n"]


def test_metric_tables_equal_analysis_metrics(reference):
    model_a, emb_a, met_a = reference["A"]
    model_b, emb_b, met_b = reference["B"]
    at = open_app("separation")
    assert any("never on the 2-D coordinates" in m.value for m in at.markdown)
    _check_overall_and_per_class(at, met_a, emb_a.class_names)
    # per class: a bar chart; per pair: the centroid-similarity and pair-separation heatmaps
    assert len(at.get("vega_lite_chart")) == 1
    assert len(at.get("plotly_chart")) == 5  # 2 pair heatmaps, the A-vs-B bars, 2 twin bar charts

    # another space for the per-class table
    at.selectbox(key="sep_space").set_value("temporal").run()
    assert not at.exception
    _check_overall_and_per_class(at, met_a, emb_a.class_names)

    # baseline vs STD-CL: every compare_metrics row, both models named
    cmp = _table(at, "B − A")
    rows = compare_metrics(met_a, met_b)
    assert f"A: {model_a.label}" in cmp.columns and f"B: {model_b.label}" in cmp.columns
    assert list(zip(cmp["space"], cmp["metric"])) == [(r["space"], metric_name(r["metric"])) for r in rows]
    _close(cmp[f"A: {model_a.label}"], [r["a"] for r in rows])
    _close(cmp[f"B: {model_b.label}"], [r["b"] for r in rows])
    who = {"a": f"A: {model_a.label}", "b": f"B: {model_b.label}", "=": "equal", None: "–"}
    assert list(cmp["better"]) == [who[r["better"]] for r in rows]
    assert {"A: synthetic_hcn_stdcl", "B: synthetic_hcn_baseline"} <= set(cmp["better"])

    # twin pairs: 6 rows, 3 spatial and 3 temporal, values of twin_separation for both models
    twins = _table(at, "type")
    assert len(twins) == 6
    assert sorted(twins["type"]) == ["spatial"] * 3 + ["temporal"] * 3
    for which, emb in (("A", emb_a), ("B", emb_b)):
        ref = twin_separation(emb, SPACES)
        assert list(twins["pair"]) == [r["pair"] for r in ref]
        for s in SPACES:
            _close(twins[f"{which} {s}"], [r["spaces"][s]["knn_accuracy"] for r in ref])
    at.selectbox(key="sep_twin_metric").set_value("centroid_cosine").run()
    assert not at.exception
    ref = twin_separation(emb_b, SPACES)
    _close(_table(at, "type")["B spatial"], [r["spaces"]["spatial"]["centroid_cosine"] for r in ref])

    # the pooled spaces compared on equal terms
    at.checkbox(key="sep_pooled").check().run()
    assert not at.exception
    pooled = _table(at, "B − A")
    assert set(pooled["space"]) == set(SPACES) | {"spatial_pooled", "temporal_pooled"}
    want = space_metrics(emb_b, spaces=("spatial_pooled",), use_cache=False)["spatial_pooled"]["overall"]["fisher"]
    got = pooled[(pooled["space"] == "spatial_pooled") & (pooled["metric"] == "Fisher ratio")][f"B: {model_b.label}"]
    _close(got, [want])

    # model B's own tables
    at.radio(key="sep_model").set_value("B").run()
    assert not at.exception
    _check_overall_and_per_class(at, met_b, emb_b.class_names)
    assert any("is a baseline (no STD-CL head)" in c.value for c in at.caption)


def test_single_checkpoint_has_no_comparison(reference):
    _, emb_a, met_a = reference["A"]
    at = open_app("separation", model_b=None)
    _check_overall_and_per_class(at, met_a, emb_a.class_names)
    assert not [d for d in at.dataframe if "B − A" in d.value.columns]
    assert any("Choose a second checkpoint" in i.value for i in at.info)
    twins = _table(at, "type")
    assert len(twins) == 6 and not any(c.startswith("B ") for c in twins.columns)
