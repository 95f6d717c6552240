"""The Training evolution page (AppTest) on two tiny runs trained here with probes (an STD-CL run and its
baseline, snapshots at epochs 0, 1, 2) and a copy of the STD-CL run without probes.

Every drawn coordinate is checked against :func:`analysis.evolution.load_evolution` computed here without the
app; twin-pair distances against the class centroids of the stored probes. Selections are sent as the browser
sends them (:func:`tests.support.app.send_selection`, see tests/app/test_embeddings.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("streamlit")

from analysis.evolution import load_evolution
from analysis.metrics import unit_rows
from stdcl.train.engine import train
from stdcl.train.probes import read_probes
from tests.support.app import arr, charts, open_app, point_env, rerun, send_selection, tables
from tests.support.training import tiny_config

RUNS = {"A": "tiny_stdcl", "B": "tiny_baseline"}
KEYS = {"A": "runs: tiny_stdcl", "B": "runs: tiny_baseline"}
SPACES = {"A": ("spatial", "temporal"), "B": ("spatial_pooled", "temporal_pooled")}
PAIR_COLUMNS = ("run", "space", "centroid distance (1 − cos)", "k-NN accuracy (pair)")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """STDCL_RUNS with the two tiny probe runs and ``tiny_noprobe`` (no probes), an empty cache."""
    with pytest.MonkeyPatch.context() as mp:
        folders = point_env(mp, {n: tmp_path_factory.mktemp(n) for n in ("cache", "runs")}, umap_warm_up=False)
        root = folders["runs"]
        train(tiny_config("train.epochs=2"), root / RUNS["A"])
        train(tiny_config("train.epochs=2", stdcl="off"), root / RUNS["B"])
        shutil.copytree(root / RUNS["A"], root / "tiny_noprobe", ignore=shutil.ignore_patterns("probes"))
        yield folders


@pytest.fixture(scope="module")
def ref(env):
    """The evolutions the page shows, computed without the app (no cache)."""
    return {w: load_evolution(env["runs"] / name, "procrustes", use_cache=False) for w, name in RUNS.items()}


@pytest.fixture(scope="module")
def app(env):
    """The page on the tiny STD-CL run (model A) and its baseline; always model A set, so the bundled
    checkpoints' probes (when present) are never computed here."""
    return open_app("evolution", model_a=KEYS["A"])


def _points(spec: dict) -> dict[int, tuple[float, float, float]]:
    """Row (customdata) -> (x, y, marker size) of every point of a scatter chart."""
    out = {}
    for tr in spec["data"]:
        if "customdata" not in tr:
            continue
        rows = arr(tr["customdata"]).reshape(-1).astype(int)
        size = tr["marker"]["size"]
        sizes = np.full(len(rows), float(size)) if np.isscalar(size) else arr(size)
        out.update({int(r): (x, y, s) for r, x, y, s in zip(rows, arr(tr["x"]), arr(tr["y"]), sizes)})
    return out


def _coords(spec: dict, n: int) -> np.ndarray:
    pts = _points(spec)
    assert sorted(pts) == list(range(n))  # every probe sample once, row ids intact
    return np.array([pts[r][:2] for r in range(n)])


def _highlighted(spec: dict) -> set[int]:
    pts = _points(spec)
    big = max(p[2] for p in pts.values())
    return set() if all(p[2] == big for p in pts.values()) else {r for r, p in pts.items() if p[2] == big}


def _markers(spec: dict) -> list[float]:
    """x of the vertical epoch markers (shapes) of a figure."""
    return sorted({float(s["x0"]) for s in spec["layout"].get("shapes", []) if s["x0"] == s["x1"]})


def test_page_lists_the_runs_with_probes_and_draws_both_runs(app, ref, env):
    at = rerun(app, evo_i=0)
    labels = [o.removesuffix(" (model A)") for o in at.selectbox(key="evo_run").options]
    assert {o for o in labels if o.startswith("runs: ")} == set(KEYS.values())  # tiny_noprobe is not offered
    assert at.selectbox(key="evo_run").value == KEYS["A"]  # model A has probes: it is the default
    assert at.selectbox(key="evo_method").value == "procrustes"
    drawn = charts(at)
    assert sorted(k for k in drawn if k.startswith(("evo_A", "evo_B"))) == [
        "evo_A_spatial", "evo_A_temporal", "evo_B_spatial_pooled", "evo_B_temporal_pooled"]  # the paired row
    for which, spaces in SPACES.items():
        n = len(ref[which].series.labels)
        for space in spaces:
            np.testing.assert_allclose(_coords(drawn[f"evo_{which}_{space}"], n), ref[which].coords[space][0],
                                       atol=1e-5)
    captions = " ".join(c.value for c in at.caption)
    assert "A = tiny_stdcl (STD-CL, hcn): epoch 0" in captions and "B = tiny_baseline (baseline, hcn)" in captions
    assert not at.info  # model A has probes: no notice


def test_slider_moves_every_chart_and_the_curves_marker(app, ref):
    at = rerun(app, evo_i=0)
    at.select_slider(key="evo_i").set_value(2).run()
    assert not at.exception
    drawn = charts(at)
    for which, spaces in SPACES.items():
        n = len(ref[which].series.labels)
        for space in spaces:
            spec = drawn[f"evo_{which}_{space}"]
            np.testing.assert_allclose(_coords(spec, n), ref[which].coords[space][2], atol=1e-5)
            assert spec["layout"]["title"]["text"].endswith("epoch 2")
    assert ref["A"].epochs[2] == 2.0
    assert _markers(drawn["evo_curves"]) == [2.0] and _markers(drawn["evo_accuracy"]) == [2.0]
    # the curves: one line per shown space and run, the metric of every snapshot (baseline dashed)
    lines = {tr["name"]: tr for tr in drawn["evo_curves"]["data"] if tr.get("showlegend", True)}
    sil = lines["tiny_stdcl: spatial (head s)"]
    np.testing.assert_allclose(arr(sil["y"]), ref["A"].curve("spatial", "silhouette"), atol=1e-9)
    assert lines["tiny_baseline: temporal, pooled"]["line"]["dash"] == "dash"
    top1 = {tr["name"]: arr(tr["y"]) for tr in drawn["evo_accuracy"]["data"]}
    np.testing.assert_allclose(top1["tiny_stdcl"], 100 * np.asarray(ref["A"].accuracy))
    at.select_slider(key="evo_i").set_value(0).run()


def test_play_steps_through_the_epochs_and_stops_at_the_last(app, ref):
    at = rerun(app, evo_i=0)
    at.button(key="evo_play").click().run()
    assert not at.exception
    assert at.session_state["evo_playing"] and at.session_state["evo_i"] == 1
    assert at.button(key="evo_play").label == "Pause"
    at.run()  # the timer's next run: the last snapshot, and playing stops there
    assert not at.session_state["evo_playing"] and at.session_state["evo_i"] == 2
    assert at.button(key="evo_play").label == "Play"
    n = len(ref["A"].series.labels)
    np.testing.assert_allclose(_coords(charts(at)["evo_A_temporal"], n), ref["A"].coords["temporal"][2], atol=1e-5)
    at.button(key="evo_play").click().run()  # Play at the last epoch starts again from the first
    assert at.session_state["evo_playing"] and at.session_state["evo_i"] == 0
    at.button(key="evo_play").click().run()  # Pause
    assert not at.session_state["evo_playing"] and at.session_state["evo_i"] == 0


def test_twin_pair_highlights_exactly_its_samples_with_its_table(app, ref, env):
    at = rerun(app, evo_i=1, evo_selected=[])
    meta = ref["A"].series.class_meta
    pair = (0, int(meta[0]["twin"]))
    at.selectbox(key="evo_twin").set_value(pair).run()
    assert not at.exception
    drawn = charts(at)
    for which, spaces in SPACES.items():
        want = set(np.flatnonzero(np.isin(ref[which].series.labels, pair)).tolist())
        assert want and all(_highlighted(drawn[f"evo_{which}_{s}"]) == want for s in spaces)
    (table,) = tables(at, *PAIR_COLUMNS)
    assert len(table) == len(ref["A"].spaces) + len(ref["B"].spaces)
    # the spatial row of A: 1 - cos of the two classes' centroids of the stored (unit) probe rows at epoch 1
    probes = read_probes(env["runs"] / RUNS["A"])
    x = unit_rows(probes.snapshots[1].spaces["spatial"].astype(np.float64))
    ca, cb = (x[probes.labels == c].mean(0) for c in pair)
    row = table[(table["run"] == "A: tiny_stdcl") & (table["space"] == "spatial (head s)")]
    assert float(row["centroid distance (1 − cos)"].iloc[0]) == pytest.approx(
        1 - ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb), abs=1e-4)
    knn = {r["space"]: r["knn_accuracy"] for r in ref["B"].pair_at(pair, 1)}
    b_rows = table[table["run"] == "B: tiny_baseline"]
    np.testing.assert_allclose(b_rows["k-NN accuracy (pair)"], [round(knn[s], 4) for s in ref["B"].spaces])
    at.selectbox(key="evo_twin").set_value(None).run()
    assert not _highlighted(charts(at)["evo_A_spatial"]) and not tables(at, *PAIR_COLUMNS)


def test_box_selection_in_one_chart_highlights_the_same_samples_everywhere(app, ref):
    at = rerun(app, evo_i=2, evo_selected=[])
    spec = charts(at)["evo_A_spatial"]
    pts = _points(spec)
    xs = np.array([p[0] for p in pts.values()])
    x0, x1 = np.quantile(xs, 0.2), np.quantile(xs, 0.7)
    inside = [r for r, p in pts.items() if x0 <= p[0] <= x1]
    assert 3 < len(inside) < len(pts)
    points = []
    for ci, tr in enumerate(spec["data"]):
        for k, r in enumerate(arr(tr.get("customdata", [])).reshape(-1).astype(int)):
            if r in inside:
                points.append({"curve_number": ci, "point_number": k, "point_index": k, "x": pts[r][0],
                               "y": pts[r][1], "customdata": {"0": int(r)}})
    at = send_selection(at, "evo_A_spatial", points, box=[{"xref": "x", "yref": "y", "x": [x0, x1], "y": [-9, 9]}])
    names = sorted(ref["A"].series.names[r] for r in inside)
    assert at.session_state["evo_selected"] == names
    drawn = charts(at)
    assert _highlighted(drawn["evo_A_temporal"]) == set(inside)
    b_rows = {i for i, n in enumerate(ref["B"].series.names) if n in names}  # matched by name
    assert len(b_rows) == len(inside) and _highlighted(drawn["evo_B_temporal_pooled"]) == b_rows
    # the selection stays while the epoch changes (the charts are redrawn and report nothing)
    at.select_slider(key="evo_i").set_value(0).run()
    assert at.session_state["evo_selected"] == names and _highlighted(charts(at)["evo_A_spatial"]) == set(inside)
    # a click on one point of B's chart selects that sample everywhere
    b_row = min(b_rows)
    tr_i, k = next((ci, k) for ci, tr in enumerate(charts(at)["evo_B_spatial_pooled"]["data"])
                   for k, r in enumerate(arr(tr.get("customdata", [])).reshape(-1).astype(int)) if r == b_row)
    at = send_selection(at, "evo_B_spatial_pooled", [{"curve_number": tr_i, "point_number": k, "point_index": k,
                                                      "customdata": {"0": b_row}}])
    assert at.session_state["evo_selected"] == [ref["B"].series.names[b_row]]
    assert _highlighted(charts(at)["evo_A_spatial"]) == {ref["A"].series.names.index(ref["B"].series.names[b_row])}
    at.button(key="evo_clear").click().run()
    assert at.session_state["evo_selected"] == [] and not _highlighted(charts(at)["evo_A_spatial"])


def test_colour_spaces_and_smooth_playback(app, ref):
    at = rerun(app, evo_i=1, evo_selected=[], evo_color_by="correct", evo_spaces=["global", "spatial_pooled"])
    drawn = charts(at)
    assert sorted(k for k in drawn if k.startswith("evo_A")) == ["evo_A_global", "evo_A_spatial_pooled"]
    assert sorted(k for k in drawn if k.startswith("evo_B")) == ["evo_B_global", "evo_B_spatial_pooled"]
    snap = ref["A"].series.snapshots[1]
    wrong = {r for tr in drawn["evo_A_global"]["data"] if tr["name"] == "wrong"
             for r in arr(tr["customdata"]).reshape(-1).astype(int)}
    assert wrong == set(np.flatnonzero(snap.pred != ref["A"].series.labels).tolist())
    at = rerun(at, evo_color_by="label", evo_spaces=["spatial", "temporal"])
    at.toggle(key="evo_smooth").set_value(True).run()
    assert not at.exception
    drawn = charts(at)
    assert sorted(k for k in drawn if k.startswith(("evo_A", "evo_B"))) == ["evo_A_anim", "evo_B_anim"]
    anim = drawn["evo_A_anim"]
    assert len(anim["frames"]) == 3 and anim["layout"]["sliders"][0]["active"] == 1  # starts at the slider's epoch
    assert at.button(key="evo_play").disabled  # the chart plays itself
    frame = anim["frames"][2]
    for k, tr in zip(frame["traces"], frame["data"]):
        rows = arr(anim["data"][k]["customdata"]).reshape(-1).astype(int)
        space = "spatial" if anim["data"][k].get("xaxis", "x") == "x" else "temporal"
        np.testing.assert_allclose(arr(tr["x"]), ref["A"].coords[space][2][rows, 0], atol=1e-5)
    at.toggle(key="evo_smooth").set_value(False).run()


def test_aligned_umap_draws_each_space_from_its_own_alignment(app, ref, monkeypatch):
    """The page asks analysis for AlignedUMAP one space at a time and draws those coordinates; UMAP itself
    (tested in tests/analysis/test_evolution.py, a minute of JIT here) is replaced by a recognisable layout."""
    import analysis.evolution as evolution

    def fake(frames, seed=0, n_neighbors=15):
        return np.stack([np.asarray(f, np.float32)[:, :2] * 10 + 1 for f in frames])

    monkeypatch.setattr(evolution, "aligned_umap", fake)
    at = rerun(app, evo_i=1, evo_selected=[], evo_method="aligned-umap")
    drawn = charts(at)
    probes = read_probes(ref["A"].series.run_dir)
    n = len(probes.labels)
    for space in SPACES["A"]:
        want = probes.snapshots[1].spaces[space][:, :2] * 10 + 1
        np.testing.assert_allclose(_coords(drawn[f"evo_A_{space}"], n), want, atol=1e-4)
    # the metrics do not depend on the projection: the curves are the same
    lines = {tr["name"]: arr(tr["y"]) for tr in drawn["evo_curves"]["data"] if tr.get("showlegend", True)}
    np.testing.assert_allclose(lines["tiny_stdcl: temporal (head t)"], ref["A"].curve("temporal", "silhouette"))
    rerun(at, evo_method="procrustes")


def test_a_model_without_probes_gets_the_explanation(env, ref):
    at = open_app("evolution", model_a="runs: tiny_noprobe", evo_run=KEYS["B"])
    notice = " ".join(i.value for i in at.info)
    assert "Model A (runs: tiny_noprobe) has no training probes" in notice
    assert "probe.enabled=true" in notice and "--with-probes" in notice
    assert at.selectbox(key="evo_run").value == KEYS["B"]  # another run with probes is shown
    # a baseline: its pooled spaces, and its STD-CL partner below in the same spaces (equal terms)
    assert sorted(k for k in charts(at) if k.startswith(("evo_A", "evo_B"))) == [
        "evo_A_spatial_pooled", "evo_A_temporal_pooled", "evo_B_spatial_pooled", "evo_B_temporal_pooled"]
    assert any(c.value.startswith("B = tiny_stdcl (STD-CL, hcn)") for c in at.caption)


def test_unreadable_probes_are_one_line(env, ref):
    """Probes that fail to read (a truncated snapshot) are the user's data: one line naming the file."""
    broken = env["runs"] / "tiny_broken"
    shutil.copytree(env["runs"] / RUNS["A"], broken)
    try:
        snap = sorted((broken / "probes").glob("step-*.npz"))[-1]
        snap.write_bytes(snap.read_bytes()[:100])
        at = open_app("evolution", model_a="runs: tiny_broken")
        assert not at.exception
        (error,) = at.error
        assert snap.name in error.value and "\n" not in error.value.strip()
        assert not any(k.startswith("evo_A") for k in charts(at))
    finally:
        shutil.rmtree(broken)
