"""The Embeddings page and the sample inspector on the bundled demo (AppTest): linked charts, selection
handling, the inspector's label, top classes and nearest neighbours.

The charts are one linked-chart component each (:mod:`app.linked_charts`): the browser highlights a
selection in all of them and reports it as the component's trigger event; AppTest runs no JavaScript, so
:mod:`tests.app.linked_charts_support` sends that event as the browser does and reads what the page hands
the browser (the figures, which a selection must leave unchanged, and the selection element's rows, from
which the highlighted points of each chart follow by their link ids).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from analysis.confusion import align
from analysis.embeddings import POOLED_DEFINITION
from analysis.neighbours import nearest_neighbours, top_classes
from analysis.projections import project, project_embeddings
from app.inspector import NEIGHBOUR_COLUMNS
from tests.app.linked_charts_support import chart_data, charts, highlighted, links, selection, send_select
from tests.support.app import arr, module_env, open_app, reference_pair, rerun, tables
from tests.support.app import charts as plotly_charts

SPACES = ("global", "spatial", "temporal")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory)


@pytest.fixture(scope="module")
def ref(env):
    """The embeddings the page analyses, computed independently: A = STD-CL demo, B = its baseline."""
    out = {which: r.emb for which, r in reference_pair().items()}
    return {**out, "b_rows": align(out["A"], out["B"])}


@pytest.fixture(scope="module")
def app(env):
    """One AppTest on the Embeddings page, PCA projections for speed."""
    return open_app("embeddings")


def _points(spec: dict) -> list[dict]:
    """Every scatter point: trace number, point index, x, y, row (customdata) and marker size."""
    out = []
    for ci, tr in enumerate(spec["data"]):
        if "customdata" not in tr:
            continue
        xs, ys = arr(tr["x"]), arr(tr["y"])
        rows = arr(tr["customdata"]).reshape(len(xs), -1)[:, 0].astype(int)  # B's charts: [row, A's row]
        size = tr["marker"]["size"]
        sizes = np.full(len(rows), float(size)) if np.isscalar(size) else arr(size)
        out += [{"curve": ci, "index": i, "x": float(xs[i]), "y": float(ys[i]), "row": int(rows[i]),
                 "size": float(sizes[i])} for i in range(len(rows))]
    return out


def _highlighted(at: AppTest) -> dict[str, set[int]]:
    """The rows each chart highlights (see :func:`tests.app.linked_charts_support.highlighted`)."""
    return {key: highlighted(at, key) for key in chart_data(at)}


def _neighbour_tables(at: AppTest) -> list:
    return tables(at, *NEIGHBOUR_COLUMNS)


def test_page_draws_each_space_of_a_and_b_with_every_row(app, ref):
    at = rerun(app, selected_rows=[], emb_spaces=["spatial", "temporal"])
    drawn = charts(at)
    emb_keys = sorted(k for k in drawn if k.startswith("emb_"))
    assert emb_keys == ["emb_A_spatial", "emb_A_temporal", "emb_B_spatial", "emb_B_temporal"]
    for key in emb_keys:
        which, space = key.split("_")[1:]
        emb = ref[which]
        pts = _points(drawn[key])
        assert sorted(p["row"] for p in pts) == list(range(len(emb)))  # every sample once, row ids intact
        # the coordinates are the PCA of that model's space (PCA is unique up to the sign of each axis)
        want = project(emb.space(space), "pca")
        got = np.zeros_like(want)
        for p in pts:
            got[p["row"]] = p["x"], p["y"]
        for d in range(2):
            assert np.allclose(got[:, d], want[:, d], atol=1e-4) or np.allclose(got[:, d], -want[:, d], atol=1e-4)
    assert selection(at)["rows"] == [] and not any(_highlighted(at).values())
    # linked: A's charts link their own rows, B's charts A's row of the same sample (by name)
    data = chart_data(at)
    assert all(data[k]["linked"] and data[k]["group"] == data["emb_A_spatial"]["group"] for k in emb_keys)
    for key in emb_keys:
        rows, ids = links(drawn[key])
        if key.startswith("emb_A"):
            assert (ids == rows).all()
        else:
            assert [ref["B"].names[r] for r in rows] == [ref["A"].names[i] for i in ids]
    # the in-browser highlight: selected points larger than the base size + 2, the others smaller and fainter
    style = drawn["emb_A_spatial"]["layout"]["meta"]["highlight"]
    assert style["on"]["size"] > style["size"] + 2 and style["off"]["size"] < style["size"]
    assert style["on"]["opacity"] == 1.0 and style["off"]["opacity"] < style["opacity"]
    assert all(t["marker"]["size"] == style["size"] for t in drawn["emb_A_spatial"]["data"] if "customdata" in t)
    # the baseline (B) is shown: the page says what its spatial / temporal spaces are
    assert any(POOLED_DEFINITION in m.value for m in at.markdown)
    assert "Click a point to inspect that sample" in " ".join(i.value for i in at.info)
    # layout: the selection line is there before any selection (a new one does not push the charts down),
    # every chart of a row keeps the same right margin and only the last holds the legend (equal widths),
    # the charts start in pan mode (a click selects), the projection is named as on every page
    assert any(m.value.startswith("No selection yet") for m in at.markdown)
    assert at.button(key="emb_clear").disabled
    for which in ("A", "B"):
        row = [drawn[f"emb_{which}_{s}"]["layout"] for s in ("spatial", "temporal")]
        assert [lay["margin"]["r"] for lay in row] == [row[0]["margin"]["r"]] * 2 and row[0]["margin"]["r"] >= 150
        assert [lay.get("showlegend", True) for lay in row] == [False, True]
        assert all(lay["dragmode"] == "pan" for lay in row)
    assert at.selectbox(key="_w_projection_method").format_func("tsne") == "t-SNE"


def test_stored_selection_is_highlighted_in_every_chart(app, ref):
    chosen = [0, 3, 57, 129]
    before = chart_data(rerun(app, selected_rows=[]))
    at = rerun(app, selected_rows=chosen)
    assert selection(at)["rows"] == chosen
    assert chart_data(at) == before  # the browser highlights it: no figure rebuilt or re-sent
    lit = _highlighted(at)
    for space in ("spatial", "temporal"):
        assert lit[f"emb_A_{space}"] == set(chosen)
        assert lit[f"emb_B_{space}"] == set(ref["b_rows"][chosen].tolist())
    # rows of B are lined up by name: the highlighted samples are the same samples
    assert {ref["B"].names[r] for r in ref["b_rows"][chosen]} == {ref["A"].names[r] for r in chosen}
    assert any(m.value.startswith(f"**{len(chosen)} selected**") for m in at.markdown)
    # several selected: the inspector offers them in a selectbox
    pick = at.selectbox(key="_emb_inspect_pick")
    assert list(pick.options) and len(pick.options) == len(chosen)
    # Clear selection empties it and the charts go back to normal
    at.button(key="emb_clear").click().run()
    assert not at.exception
    assert at.session_state["selected_rows"] == [] and selection(at)["rows"] == []
    assert not any(_highlighted(at).values()) and chart_data(at) == before


def test_box_selection_on_spatial_chart_highlights_the_same_rows_everywhere(app, ref):
    at = rerun(app, selected_rows=[])
    before = chart_data(at)
    pts = _points(charts(at)["emb_A_spatial"])
    xs, ys = np.array([p["x"] for p in pts]), np.array([p["y"] for p in pts])
    x0, x1, y0, y1 = np.quantile(xs, 0.2), np.quantile(xs, 0.7), np.quantile(ys, 0.2), np.quantile(ys, 0.8)
    inside = [p for p in pts if x0 <= p["x"] <= x1 and y0 <= p["y"] <= y1]
    assert 5 < len(inside) < len(pts)
    want = sorted(p["row"] for p in inside)
    at = send_select(at, "emb_A_spatial", want, seq=1, epoch="box")  # what the browser reports for that box
    assert at.session_state["selected_rows"] == want
    assert selection(at) == {"kind": "selection", "group": before["emb_A_spatial"]["group"], "rows": want,
                             "seq": 1, "epoch": "box", "extra": {}}  # handed back with the browser's count: nothing newer is undone
    lit = _highlighted(at)
    assert lit["emb_A_spatial"] == lit["emb_A_temporal"] == set(want)
    assert lit["emb_B_temporal"] == set(ref["b_rows"][want].tolist())
    assert chart_data(at) == before  # no chart redrawn
    assert any(m.value.startswith(f"**{len(want)} selected**") for m in at.markdown)
    # a rerun without a new selection, or an empty one reported (a click beside the points), keeps it
    at = rerun(at)
    assert at.session_state["selected_rows"] == want
    at = send_select(at, "emb_A_temporal", [], seq=2, epoch="box")
    assert at.session_state["selected_rows"] == want and selection(at)["rows"] == want

    # a click on one point of B's temporal chart selects that sample: the browser reports the point's link id,
    # A's row of the same sample
    b_rows, b_ids = links(charts(at)["emb_B_temporal"])
    link = int(b_ids[list(b_rows).index(int(ref["b_rows"][42]))])
    assert link == 42
    at = send_select(at, "emb_B_temporal", [link], click=True, seq=3, epoch="box")
    assert at.session_state["selected_rows"] == [42] and at.session_state["inspect_row"] == 42
    assert _highlighted(at)["emb_A_spatial"] == {42}
    assert any(h.value.startswith(f"Sample {ref['A'].names[42]}") for h in at.subheader)  # opened in the inspector


def test_selection_reported_from_the_browser_is_validated(app, ref):
    """Rows outside A's rows (a stale page) are dropped; a selection set in Python (search, another page) goes
    to the browser with the last reported count, so the browser applies it over its own."""
    at = rerun(app, selected_rows=[])
    n = len(ref["A"])
    at = send_select(at, "emb_A_temporal", [5, 77, n, -1], seq=4, epoch="e")
    assert at.session_state["selected_rows"] == [5, 77]
    assert _highlighted(at)["emb_A_spatial"] == {5, 77}
    at = rerun(at, selected_rows=[9])
    assert selection(at)["rows"] == [9] and (selection(at)["seq"], selection(at)["epoch"]) == (4, "e")


def test_inspector_shows_label_prediction_and_nearest_neighbours(app, ref):
    row = 17
    emb = ref["A"]
    at = rerun(app, selected_rows=[row])
    assert at.session_state["inspect_row"] == row
    names = emb.class_names
    label, pred = names[emb.labels[row]], names[emb.predictions[row]]
    assert any(m.value.startswith(f"**Label:** {label}  \n**Prediction:** {pred}") for m in at.markdown)
    top = next(d.value for d in at.dataframe if "probability" in d.value.columns)
    want = top_classes(emb, row, 5)
    assert top["class"].tolist() == [t["name"] for t in want]
    np.testing.assert_allclose(top["probability"], [t["probability"] for t in want], rtol=1e-9)
    tables = _neighbour_tables(at)
    assert len(tables) == 3
    for space, table in zip(SPACES, tables):
        nb = nearest_neighbours(emb, row, space, 5)
        assert table["row"].tolist() == nb.rows.tolist()
        assert table["name"].iloc[0] == emb.names[nb.rows[0]]
        assert table["class"].iloc[0] == names[emb.labels[nb.rows[0]]]
        np.testing.assert_allclose(table["cosine"], np.round(nb.sims, 4), atol=1e-9)
    skeleton = plotly_charts(at)["inspector_A_skeleton"]
    assert len(skeleton["frames"]) == 32 and skeleton["layout"]["sliders"]  # animated, one frame per step

    # inspect the same sample in B: its row in B, B's neighbours
    at = rerun(at, selected_rows=[row, 90])
    at.selectbox(key="_emb_inspect_pick").set_value(row)
    at.radio(key="_emb_inspect_model").set_value("B").run()
    assert not at.exception and at.session_state["inspect_model"] == "B"
    b_row = int(ref["b_rows"][row])
    tables = _neighbour_tables(at)
    assert len(tables) == 3
    for space, table in zip(SPACES, tables):
        assert table["row"].tolist() == nearest_neighbours(ref["B"], b_row, space, 5).rows.tolist()
    at.radio(key="_emb_inspect_model").set_value("A").run()


def test_spaces_colouring_and_compare_toggle(app, ref):
    at = rerun(app, selected_rows=[], emb_spaces=["global", "spatial_pooled", "temporal_pooled"],
                emb_color_by="correct")
    keys = sorted(k for k in charts(at) if k.startswith("emb_"))
    assert keys == sorted(f"emb_{w}_{s}" for w in "AB" for s in ("global", "spatial_pooled", "temporal_pooled"))
    spec = charts(at)["emb_A_global"]
    wrong = {p["row"] for p in _points(spec) if spec["data"][p["curve"]]["name"] == "wrong"}
    assert wrong == set(np.flatnonzero(~ref["A"].correct).tolist())
    assert "twin pair (synthetic set)" in at.selectbox(key="_w_emb_color_by").options
    assert "spatial, pooled" in at.multiselect(key="_w_emb_spaces").options  # A is an STD-CL checkpoint
    at.toggle(key="emb_compare").set_value(False).run()
    assert not at.exception
    assert sorted(k for k in charts(at) if k.startswith("emb_")) == [
        "emb_A_global", "emb_A_spatial_pooled", "emb_A_temporal_pooled"]
    at.toggle(key="emb_compare").set_value(True)
    rerun(at, emb_spaces=["spatial", "temporal"], emb_color_by="label")


def test_umap_projection_is_the_default_method(app, ref):
    """UMAP (seeded) on one space: the chart's coordinates are analysis.projections' UMAP of that space
    (for the demo pair, the precomputed one shipped in checkpoints/cache)."""
    at = rerun(app, selected_rows=[], projection_method="umap", emb_spaces=["spatial"], emb_compare=False)
    assert at.selectbox(key="_w_projection_method").value == "umap"
    pts = _points(charts(at)["emb_A_spatial"])
    got = np.zeros((len(ref["A"]), 2))
    for p in pts:
        got[p["row"]] = p["x"], p["y"]
    np.testing.assert_allclose(got, project_embeddings(ref["A"], "spatial", "umap"), atol=1e-4)
    rerun(at, projection_method="pca", emb_spaces=["spatial", "temporal"], emb_compare=True)
