"""The Embeddings page on a whole split of thousands of samples (AppTest): every point drawn with WebGL
over a density layer, point size scaled to N, a box selection highlighted in both views, a sample found
by name (selected and opened in the inspector), the selection's CSV, and a UMAP / t-SNE that runs in the
background while PCA is shown.

The split is the synthetic set written as plain numpy (:mod:`tests.support.large_split`); its embeddings
are stand-ins with class structure (the encoder over 6,000 samples would take minutes), patched in for
``compute_embeddings`` so the app's own cache path stores and reads them.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

from analysis.cache import entry_path  # noqa: E402
from analysis.datasets import open_analysis_data, stratified_subset  # noqa: E402
from analysis.embedding_figure import color_of, drawn_mask, marker_scale  # noqa: E402
from analysis.embeddings import extract_embeddings  # noqa: E402
from analysis.projections import project, project_embeddings, projection_key  # noqa: E402
from analysis.selection import find_samples  # noqa: E402
from tests.app.linked_charts_support import chart_data, charts, highlighted, selection, send_select  # noqa: E402
from tests.support.app import BUNDLED, arr, bundled_model, module_env, open_app, rerun  # noqa: E402
from tests.support.large_split import standin_embeddings, write_split  # noqa: E402

N_TEST = 6000  # above the WebGL and density thresholds (5,000)
BIG = {"max_samples": 100_000, "projection_method": "pca", "model_b": None, "selected_rows": [], "emb_search": "",
       "emb_spaces": ["spatial", "temporal"], "emb_max_points": 60_000}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    for folders in module_env(tmp_path_factory, umap_warm_up=False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("analysis.embeddings.compute_embeddings", standin_embeddings)
            yield folders


@pytest.fixture(scope="module")
def split(env, tmp_path_factory):
    path = write_split(tmp_path_factory.mktemp("split"), N_TEST)
    model = bundled_model("A")
    data = open_analysis_data(model, "test", "numpy", path)
    return {"path": path, "data": data, "emb": extract_embeddings(model, data),
            "choice": {"dataset": "numpy", "path": str(path), "split": "test"}}


@pytest.fixture(scope="module")
def app(split):
    return open_app("embeddings", data_choice=split["choice"], **BIG)


def _traces(spec: dict) -> list[dict]:
    return [t for t in spec["data"] if "customdata" in t]


def _rows(spec: dict) -> np.ndarray:
    return np.concatenate([arr(t["customdata"]).reshape(-1).astype(int) for t in _traces(spec)])


def _coords(spec: dict, n: int) -> np.ndarray:
    out = np.full((n, 2), np.nan)
    for t in _traces(spec):
        rows = arr(t["customdata"]).reshape(-1).astype(int)
        out[rows, 0], out[rows, 1] = arr(t["x"]), arr(t["y"])
    return out


def test_whole_split_is_drawn_with_webgl_density_and_scaled_points(app, split):
    at = rerun(app, **BIG)
    emb = split["emb"]
    n = len(emb)
    assert n >= N_TEST
    drawn = charts(at)
    size, opacity = marker_scale(n)
    assert 2.0 <= size < 6.0 and 0.25 <= opacity < 0.8
    for space in ("spatial", "temporal"):
        spec = drawn[f"emb_A_{space}"]
        assert sorted(_rows(spec).tolist()) == list(range(n))  # every sample once: no subset drawn
        assert {t["type"] for t in _traces(spec)} == {"scattergl"}
        density = [t for t in spec["data"] if t.get("name") == "density"]
        assert len(density) == 1 and density[0]["type"] == "heatmap" and density[0]["hoverinfo"] == "skip"
        z = np.nan_to_num(arr(density[0]["z"]))
        assert np.expm1(z).sum() == pytest.approx(n, rel=1e-4)  # the cells count every point (log scale)
        for t in _traces(spec):
            assert t["marker"]["size"] == pytest.approx(size) and t["marker"]["opacity"] == pytest.approx(opacity)
            rows = arr(t["customdata"]).reshape(-1).astype(int)
            assert [h.split("<br>")[0] for h in t["hovertext"]] == [emb.names[r] for r in rows]  # hover names it
        want = project(emb.space(space), "pca")
        got = _coords(spec, n)
        for d in range(2):
            assert np.allclose(got[:, d], want[:, d], atol=1e-4) or np.allclose(got[:, d], -want[:, d], atol=1e-4)
    assert any("grey shading shows where they pile up" in c.value for c in at.caption)
    assert not any("stratified subset" in c.value for c in at.caption)  # the budget covers the whole split


def test_box_selection_reaches_both_views_and_downloads_as_csv(app, split, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    made: dict[str, object] = {}  # deferred download id -> the callable the server runs when it is clicked
    real = MediaFileManager.add_deferred

    def recording(self, data_callable, *args, **kwargs):
        file_id = real(self, data_callable, *args, **kwargs)
        made[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", recording)
    emb = split["emb"]
    at = rerun(app, **BIG)
    spec = charts(at)["emb_A_spatial"]
    xy = _coords(spec, len(emb))
    x0, x1 = np.quantile(xy[:, 0], [0.2, 0.8])
    y0, y1 = np.quantile(xy[:, 1], [0.2, 0.8])
    points = []
    for ci, t in enumerate(spec["data"]):
        if "customdata" not in t:
            continue
        rows, xs, ys = arr(t["customdata"]).reshape(-1).astype(int), arr(t["x"]), arr(t["y"])
        inside = np.flatnonzero((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
        points += [{"curve_number": ci, "point_number": int(i), "point_index": int(i), "x": float(xs[i]),
                    "y": float(ys[i]), "customdata": {"0": int(rows[i])}} for i in inside]
    want = sorted(p["customdata"]["0"] for p in points)
    assert 600 < len(want) < len(emb)  # more than the table lists (500)
    before = chart_data(at)
    at = send_select(at, "emb_A_spatial", want)  # what the browser reports for that box
    assert at.session_state["selected_rows"] == want and selection(at)["rows"] == want
    assert highlighted(at, "emb_A_spatial") == set(want)
    assert highlighted(at, "emb_A_temporal") == set(want)  # linked: the other view highlights the same samples
    assert chart_data(at) == before  # highlighted in the browser: no figure rebuilt or re-sent
    assert any(c.value == f"Listing the first 500 of {len(want):,} selected samples." for c in at.caption)
    # a group selected: no sample opens by itself (its skeleton would slow every selection); one is picked
    assert not any(h.value.startswith("Sample ") for h in at.subheader)
    pick = at.selectbox(key="_emb_inspect_pick")
    assert pick.value is None and len(pick.options) == 500  # the first 500 selected, none chosen yet
    assert [o.split(":")[0] for o in pick.options] == [f"row {r}" for r in want[:500]]
    assert pick.options[0].startswith(f"row {want[0]}: {emb.names[want[0]]} (")
    pick.set_value(want[7]).run()
    assert any(h.value == f"Sample {emb.names[want[7]]}" for h in at.subheader)
    assert at.session_state["selected_rows"] == want and at.session_state["inspect_row"] == want[7]

    (button,) = at.get("download_button")
    assert button.proto.label == "Download the selection (CSV)"
    assert button.proto.ignore_rerun and button.proto.deferred_file_id  # made on the click, not on every run
    csv = pd.read_csv(io.BytesIO(made[button.proto.deferred_file_id]()))
    assert list(csv.columns) == ["row", "name", "label", "prediction", "correct"]
    assert csv["row"].tolist() == want
    names, preds = emb.class_names, emb.predictions
    assert csv["name"].tolist() == [emb.names[r] for r in want]
    assert csv["label"].tolist() == [names[emb.labels[r]] for r in want]
    assert csv["prediction"].tolist() == [names[preds[r]] for r in want]
    assert csv["correct"].tolist() == [bool(preds[r] == emb.labels[r]) for r in want]


def test_search_finds_a_sample_and_opens_it_like_a_click(app, split):
    emb = split["emb"]
    row = len(emb) // 2
    name = emb.names[row]
    at = rerun(app, **BIG)
    at.text_input(key="emb_search").set_value(f"  {name.lower()} ").run()  # case and spaces do not matter
    assert not at.exception
    assert at.session_state["selected_rows"] == [row] and at.session_state["inspect_row"] == row
    assert selection(at)["rows"] == [row]
    assert highlighted(at, "emb_A_spatial") == {row} == highlighted(at, "emb_A_temporal")
    assert any(h.value == f"Sample {name}" for h in at.subheader)  # the inspector opened on it
    assert any(c.value == f"Found {name} (row {row})." for c in at.caption)

    # part of a name: every match offered, the first selected; picking another selects that one
    part = name.rsplit("_", 1)[0]  # subject and action: one sample per repetition
    matches = find_samples(emb.names, part).tolist()
    assert len(matches) > 1 and all(part in emb.names[r] for r in matches)
    at.text_input(key="emb_search").set_value(part).run()
    pick = at.selectbox(key="_emb_match_pick")
    assert list(pick.options) == [f"{emb.names[r]} (row {r})" for r in matches]
    assert at.session_state["selected_rows"] == [matches[0]]
    pick.set_value(matches[-1]).run()
    assert at.session_state["selected_rows"] == [matches[-1]]
    assert highlighted(at, "emb_A_temporal") == {matches[-1]}

    at.text_input(key="emb_search").set_value("no such sample").run()
    assert any("No analysed sample's name contains “no such sample”" in w.value for w in at.warning)
    assert at.session_state["selected_rows"] == [matches[-1]]  # a failed search keeps the selection


def test_a_sample_outside_the_drawn_subsample_is_highlighted_all_the_same(app, split):
    """Above the points budget each chart draws a stratified sample; a selected sample it leaves out travels
    with the selection (its coordinates in that chart's projection) and is drawn highlighted on top."""
    emb = split["emb"]
    n, budget = len(emb), 1000
    at = rerun(app, **{**BIG, "emb_max_points": budget})
    assert at.number_input(key="_w_emb_max_points").value == budget
    drawn = charts(at)
    shown = drawn_mask(emb, budget)
    for space in ("spatial", "temporal"):
        assert sorted(_rows(drawn[f"emb_A_{space}"]).tolist()) == np.flatnonzero(shown).tolist()
        (note,) = [a for a in drawn[f"emb_A_{space}"]["layout"]["annotations"] if a.get("name") == "subset-note"]
        assert f"showing {shown.sum():,} of {n:,} points" in note["text"]
    row = int(np.flatnonzero(~shown)[11])
    at.text_input(key="emb_search").set_value(emb.names[row]).run()
    assert not at.exception and at.session_state["selected_rows"] == [row]
    extra = selection(at)["extra"]
    data = chart_data(at)
    for space in ("spatial", "temporal"):
        key = f"emb_A_{space}"
        assert highlighted(at, key) == {row}  # drawn on top, though the chart has no point for it
        got = extra[key]
        assert got["rows"] == got["ids"] == [row] and got["sig"] == data[key]["sig"]
        want = project_embeddings(emb, space, "pca", use_cache=True)[row]
        np.testing.assert_allclose([got["x"][0], got["y"][0]], want, rtol=1e-5)
        assert got["color"] == [color_of(int(emb.labels[row]))]
    assert any(f"Sample {emb.names[row]}" == h.value for h in at.subheader)  # and opened in the inspector
    assert any("1 of them is not among the 1,000 points each chart draws" in m.value for m in at.markdown)
    # model B below (its baseline): linked by name, its own subsample; the sample is drawn on top there too
    at = rerun(at, model_b=f"bundled: {BUNDLED['B']}", emb_compare=True)
    data, extra = chart_data(at), selection(at)["extra"]
    b_row = int(np.flatnonzero(np.asarray(split["emb"].names) == emb.names[row])[0])
    for space in ("spatial", "temporal"):
        key = f"emb_B_{space}"
        assert key in data and highlighted(at, key) == {b_row}
        assert extra[key]["ids"] == [row] and extra[key]["rows"] == [b_row] and extra[key]["sig"] == data[key]["sig"]
    at = rerun(at, model_b=None)

    # a whole class selected: the drawn members highlighted in the figure, the others on top
    members = np.flatnonzero(emb.labels == 2).tolist()
    at = rerun(at, selected_rows=members, emb_search="")
    assert highlighted(at, "emb_A_spatial") == set(members) == highlighted(at, "emb_A_temporal")
    assert set(selection(at)["extra"]["emb_A_spatial"]["rows"]) == set(members) - set(np.flatnonzero(shown).tolist())
    # every sample drawn again: nothing travels with the selection
    at = rerun(at, emb_max_points=60_000)
    assert selection(at)["extra"] == {} and highlighted(at, "emb_A_spatial") == set(members)
    # the box is offered whenever the budget can matter (a budget set on a large split stays changeable)
    at = rerun(at, emb_max_points=budget, max_samples=2000, selected_rows=[])
    assert [w.value for w in at.number_input if w.key == "_w_emb_max_points"] == [budget]
    assert len(_rows(charts(at)["emb_A_spatial"])) < 2000
    at = rerun(at, max_samples=600)
    assert not [w for w in at.number_input if w.key == "_w_emb_max_points"]
    assert len(_rows(charts(at)["emb_A_spatial"])) == len(stratified_subset(split["data"].labels, 600))  # all drawn
    rerun(at, **BIG)


def test_a_large_projection_runs_in_the_background_while_pca_is_shown(app, split, monkeypatch):
    from app import state

    monkeypatch.setattr(state, "BACKGROUND_ABOVE", 400)  # a small subset keeps the t-SNE short
    model = bundled_model("A")
    sub = extract_embeddings(model, split["data"], stratified_subset(split["data"].labels, 600))
    at = rerun(app, **{**BIG, "max_samples": 600, "projection_method": "tsne"})
    drawn = charts(at)
    assert drawn["emb_A_spatial"]["layout"]["title"]["text"].endswith("(PCA until t-SNE is ready)")
    want = project(sub.space("spatial"), "pca")
    got = _coords(drawn["emb_A_spatial"], len(sub))
    assert np.allclose(np.abs(got), np.abs(want), atol=1e-4)
    bars = at.get("progress")
    assert len(bars) == 2 and all("t-SNE of the" in b.proto.text for b in bars)
    jobs = state.projection_jobs()
    for space in ("spatial", "temporal"):
        job = jobs.get(projection_key(sub.key, space, "tsne"))
        assert job is not None and job.wait(300) and job.state == "done", job
    at = rerun(at)  # what the progress fragment does when the jobs are finished
    drawn = charts(at)
    for space, title in (("spatial", "A: spatial s"), ("temporal", "A: temporal t")):
        assert drawn[f"emb_A_{space}"]["layout"]["title"]["text"] == title
        # the job's result is in the on-disk cache, and that is what is drawn
        assert entry_path("projections", projection_key(sub.key, space, "tsne")).is_file()
        np.testing.assert_allclose(_coords(drawn[f"emb_A_{space}"], len(sub)),
                                   project_embeddings(sub, space, "tsne", use_cache=True), atol=1e-5)
    assert not at.get("progress")
    rerun(at, **BIG)

