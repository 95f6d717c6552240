"""analysis.figures: the plotly figures the report and the app draw (pure functions of arrays)."""

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import figures as F
from analysis.embeddings import Embeddings
from stdcl.data.layouts import NTU25, UCLA20
from stdcl.data.synthetic import class_meta, class_names
from stdcl.errors import ConfigError


@pytest.fixture(scope="module")
def emb():
    """Embeddings-shaped data with the synthetic classes: 13 classes, 12 samples each, some wrong."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(13), 12)
    logits = rng.normal(size=(len(labels), 13)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += 4.0
    logits[::17, 0] += 20.0  # a few confident mistakes (and some rows of class 0 stay right)
    names = [f"SYN_{i:04d}" for i in range(len(labels))]
    return Embeddings({"global": rng.normal(size=(len(labels), 8)).astype(np.float32)}, logits, labels, names,
                      np.arange(len(labels)) * 2, class_names(), class_meta(), "pooled", "k")


def rows_of(fig):
    return [np.asarray(t.customdata)[:, 0].astype(int) for t in fig.data]


@pytest.mark.parametrize("color_by", F.COLOR_BY)
def test_scatter_custom_data_maps_every_row_once(emb, color_by):
    coords = np.random.default_rng(1).normal(size=(len(emb), 2))
    fig = F.embedding_scatter(coords, emb, color_by=color_by)
    per_trace = rows_of(fig)
    allrows = np.concatenate(per_trace)
    assert sorted(allrows.tolist()) == list(range(len(emb)))  # every row exactly once
    for t, rows in zip(fig.data, per_trace):
        np.testing.assert_allclose(t.x, coords[rows, 0])  # point i of a trace is row customdata[i]
        np.testing.assert_allclose(t.y, coords[rows, 1])
        assert all(emb.names[r] in h for r, h in zip(rows, t.hovertext))
        if color_by == "label":
            assert set(emb.labels[rows]) == {class_names().index(t.name)}
        elif color_by == "prediction":
            assert set(emb.predictions[rows]) == {class_names().index(t.name)}
        elif color_by == "correct":
            assert set(emb.correct[rows]) == {t.name == "correct"}
    if color_by == "correct":
        assert {t.name for t in fig.data} == {"correct", "wrong"}
        assert len(rows_of(fig)[[t.name for t in fig.data].index("wrong")]) == int((~emb.correct).sum())


def test_twin_colours_pairs_and_greys_the_untwinned(emb):
    fig = F.embedding_scatter(np.zeros((len(emb), 2)), emb, color_by="twin")
    meta = class_meta()
    by_class = {}
    for t, rows in zip(fig.data, rows_of(fig)):
        classes = set(emb.labels[rows].tolist())
        if t.name == "no twin":
            assert classes == {k for k, m in enumerate(meta) if m["twin"] is None} and t.marker.color == F.GREY
        else:
            (k,) = classes
            by_class[k] = t.marker.color
    for k, m in enumerate(meta):
        if m["twin"] is not None:
            assert by_class[k] == by_class[m["twin"]] != F.GREY  # twins share a colour
    pair_colours = {by_class[k] for k in by_class}
    assert len(pair_colours) == 6  # six twin pairs, six colours


def test_highlight_dims_the_others(emb):
    hl = [0, 5, 40, 100]
    fig = F.embedding_scatter(np.zeros((len(emb), 2)), emb, highlight_rows=hl)
    for t, rows in zip(fig.data, rows_of(fig)):
        expected = np.where(np.isin(rows, hl), 1.0, 0.12)
        np.testing.assert_allclose(t.marker.opacity, expected)
        assert (np.asarray(t.marker.size)[np.isin(rows, hl)] > np.asarray(t.marker.size)[~np.isin(rows, hl)].max(
            initial=0)).all()
    with pytest.raises(ConfigError, match="highlighted rows"):
        F.embedding_scatter(np.zeros((len(emb), 2)), emb, highlight_rows=[len(emb)])
    with pytest.raises(ConfigError, match="expected"):
        F.embedding_scatter(np.zeros((3, 2)), emb)


def test_subset_is_stratified_keeps_highlights_and_says_so(emb):
    fig = F.embedding_scatter(np.zeros((len(emb), 2)), emb, max_points=39, highlight_rows=[1, 2])
    rows = np.concatenate(rows_of(fig))
    assert len(rows) == len(set(rows)) and {1, 2} <= set(rows.tolist())
    counts = np.bincount(emb.labels[rows], minlength=13)
    assert counts.min() >= 3 and counts.max() <= 5  # 3 per class, +2 highlighted rows in class 0
    (note,) = [a for a in fig.layout.annotations if a.name == "subset-note"]
    assert f"showing {len(rows)} of {len(emb)} points" in note.text
    full = F.embedding_scatter(np.zeros((len(emb), 2)), emb, max_points=len(emb))
    assert not full.layout.annotations and len(np.concatenate(rows_of(full))) == len(emb)
    assert isinstance(F.embedding_scatter(np.zeros((len(emb), 2)), emb, webgl=True).data[0], go.Scattergl)


def test_selected_rows_reads_both_payload_shapes():
    as_lists = {"selection": {"points": [{"curve_number": 0, "point_index": 3, "customdata": [17]},
                                         {"curve_number": 2, "point_index": 0, "customdata": [4, "x"]},
                                         {"curve_number": 1, "point_index": 1, "customdata": [17]}]}}
    as_dicts = {"selection": {"points": [{"customdata": {"0": 9}}, {"customdata": {"0": 2}}, {"x": 1.0}]}}
    np.testing.assert_array_equal(F.selected_rows(as_lists), [4, 17])
    np.testing.assert_array_equal(F.selected_rows(as_dicts), [2, 9])
    np.testing.assert_array_equal(F.selected_rows(as_lists["selection"]), [4, 17])  # the selection itself
    assert F.selected_rows(None).size == 0 and F.selected_rows({"selection": {"points": []}}).size == 0

    class Event:  # attribute access, as Streamlit's event object also allows
        selection = type("S", (), {"points": [{"customdata": [5]}]})()

    np.testing.assert_array_equal(F.selected_rows(Event()), [5])


def test_selected_rows_round_trip_through_a_figure(emb):
    """A selection made of (trace, point index) pairs maps back to the rows drawn there."""
    fig = F.embedding_scatter(np.zeros((len(emb), 2)), emb)
    picks = [(0, 1), (3, 0), (5, 2)]
    payload = {"selection": {"points": [{"curve_number": c, "point_index": i,
                                         "customdata": list(fig.data[c].customdata[i])} for c, i in picks]}}
    expected = sorted(int(fig.data[c].customdata[i][0]) for c, i in picks)
    np.testing.assert_array_equal(F.selected_rows(payload), expected)


def skeleton_sample(t=40, persons=1):
    rng = np.random.default_rng(0)
    x = np.zeros((3, t, 25, 2), np.float32)
    x[..., :persons] = rng.normal(size=(3, t, 25, persons))
    return x


def segments(values):
    """Line segments of a bones trace: (start, end) pairs separated by NaN (a gap in the line)."""
    vals = np.asarray(values, dtype=np.float64)
    assert len(vals) % 3 == 0 and np.isnan(vals[2::3]).all() and np.isfinite(vals[0::3]).all()
    return list(zip(vals[0::3].tolist(), vals[1::3].tolist()))


def test_skeleton_frames_and_bones():
    x = skeleton_sample(t=100, persons=2)
    fig = F.skeleton_figure(x, NTU25, joint_values=np.arange(25.0))
    expected_frames = np.unique(np.linspace(0, 99, 64).round().astype(int))
    assert [f.name for f in fig.frames] == [str(t) for t in expected_frames]
    assert len(fig.layout.sliders[0].steps) == len(fig.frames) == 64
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["play", "pause"]
    assert len(fig.data) == 4  # bones + joints per person (two persons with data)
    frame = fig.frames[10]
    t = int(frame.name)
    bones = frame.data[0]
    segs_x, segs_up = segments(bones.x), segments(bones.z)
    assert len(segs_x) == len(NTU25.edges)
    for (c, p), (a, b), (u, w) in zip(NTU25.edges, segs_x, segs_up):
        assert (a, b) == pytest.approx((x[0, t, c, 0], x[0, t, p, 0]))
        assert (u, w) == pytest.approx((x[1, t, c, 0], x[1, t, p, 0]))  # y is drawn up
    joints = frame.data[1]
    np.testing.assert_allclose(joints.x, x[0, t, :, 0], rtol=1e-6)
    np.testing.assert_allclose(joints.z, x[1, t, :, 0], rtol=1e-6)
    assert joints.marker.color is None  # constant values: frames carry only the coordinates
    first = fig.data[1]  # the drawn traces carry the joint values
    np.testing.assert_allclose(first.marker.color, np.arange(25.0))
    assert np.argmax(first.marker.size) == 24 and np.argmin(first.marker.size) == 0  # size follows |value|
    np.testing.assert_allclose(first.x, x[0, 0, :, 0], rtol=1e-6)  # the first frame is drawn initially


def test_skeleton_one_person_static_2d_and_errors():
    x = skeleton_sample(t=20, persons=1)
    fig = F.skeleton_figure(x, NTU25, animate=False, frame=7)
    assert not fig.frames and len(fig.data) == 2  # the empty second person is not drawn
    np.testing.assert_allclose(fig.data[1].x, x[0, 7, :, 0], rtol=1e-6)
    short = F.skeleton_figure(x, NTU25)
    assert len(short.frames) == 20  # fewer frames than the cap: all of them
    flat = F.skeleton_figure(np.zeros((2, 10, 20, 1), np.float32) + np.arange(20)[None, None, :, None], UCLA20)
    assert isinstance(flat.data[0], go.Scatter) and len(segments(flat.data[0].x)) == len(UCLA20.edges)
    per_frame = np.random.default_rng(2).random((20, 25))
    fig = F.skeleton_figure(x, NTU25, joint_values=per_frame)
    np.testing.assert_allclose(fig.frames[5].data[1].marker.color, per_frame[5])
    with pytest.raises(ConfigError, match="expected"):
        F.skeleton_figure(x[:, :, :20], NTU25)
    with pytest.raises(ConfigError, match="joint values"):
        F.skeleton_figure(x, NTU25, joint_values=np.ones(3))
    with pytest.raises(ConfigError, match="outside"):
        F.skeleton_figure(x, NTU25, animate=False, frame=20)


def test_confusion_figure_values():
    m = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    names = ["a", "b", "c"]
    fig = F.confusion_figure(m, names)
    expected = np.array([[0.8, 0.2, 0], [0.25, 0.75, 0], [0, 0, 0]])
    np.testing.assert_allclose(fig.data[0].z, expected)
    np.testing.assert_array_equal(fig.data[0].customdata, m)
    assert list(fig.data[0].x) == names and list(fig.data[0].y) == names
    assert fig.data[0].text[1][1] == "0.75"
    assert fig.data[0].text[0][2] == "" and fig.data[0].text[2][2] == ""  # empty cells stay blank
    raw = F.confusion_figure(m, names, normalise=False)
    np.testing.assert_allclose(raw.data[0].z, m)
    with pytest.raises(ConfigError):
        F.confusion_figure(m, ["a", "b"])
    delta = F.confusion_change_figure(expected - expected.T, names)
    assert delta.data[0].zmid == 0 and delta.data[0].zmax == pytest.approx(0.05)


def test_clickable_confusion_cells_round_trip():
    m = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 5]])
    names = ["a", "b", "c"]
    fig = F.confusion_figure(m, names, clickable=True, marked=(1, 0))
    cells = fig.data[1]
    assert cells.type == "scatter" and cells.marker.opacity == 0 and len(cells.x) == 9
    cd = np.asarray(cells.customdata)
    for (t, p, count, share), x, y in zip(cd, cells.x, cells.y):
        assert (names[int(t)], names[int(p)]) == (y, x) and count == m[int(t), int(p)]
        assert share == pytest.approx(m[int(t), int(p)] / m[int(t)].sum())
    (rect,) = fig.layout.shapes
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (-0.5, 0.5, 0.5, 1.5)  # column 0 (predicted), row 1 (true)
    # a click comes back as a list, a dict keyed "0"/"1" (Streamlit), or only x / y names
    assert F.selected_cell({"selection": {"points": [{"customdata": list(cd[5])}]}}, names) == (1, 2)
    assert F.selected_cell({"points": [{"customdata": {"0": 2, "1": 0, "2": 0}}]}, names) == (2, 0)
    assert F.selected_cell({"points": [{"x": "c", "y": "a"}]}, names) == (0, 2)
    assert F.selected_cell({"points": []}, names) is None and F.selected_cell(None, names) is None
    assert F.confusion_figure(m, names).layout.shapes == () and len(F.confusion_figure(m, names).data) == 1


def test_heatmaps_bars_and_curves():
    vals = np.random.default_rng(3).normal(size=(30, 25))
    hm = F.frames_joints_heatmap(vals, NTU25, "cam")
    np.testing.assert_allclose(hm.data[0].z, vals.T)
    assert list(hm.data[0].y) == list(NTU25.joints) and hm.data[0].zmid == 0  # signed values: diverging around 0
    bar = F.joint_bar(vals[0], NTU25)
    assert list(bar.data[0].x) == list(NTU25.joints)
    assert list(bar.data[0].marker.color) == ["#1f77b4" if v >= 0 else "#d62728" for v in vals[0]]
    curve = F.contribution_curve(vals[:, 0], "t")
    np.testing.assert_allclose(curve.data[0].y, vals[:, 0])
    rel = F.relation_heatmap(vals[:25, :25], NTU25)
    np.testing.assert_allclose(rel.data[0].z, vals[:25, :25])
    sim = F.similarity_matrix_figure(np.eye(3), ["a", "b", "c"])
    np.testing.assert_allclose(sim.data[0].z, np.eye(3))
    with pytest.raises(ConfigError):
        F.joint_bar(np.ones(20), NTU25)
    with pytest.raises(ConfigError):
        F.relation_heatmap(np.ones((20, 20)), NTU25)


def test_metrics_bar_and_twin_pairs():
    rows = [{"space": s, "metric": m, "a": i, "b": i + 0.5, "delta": 0.5, "better": "b"}
            for i, (s, m) in enumerate((s, m) for m in ("silhouette", "knn_accuracy")
                                       for s in ("global", "spatial", "temporal"))]
    fig = F.metrics_bar(rows, "baseline", "stdcl")
    assert [t.name for t in fig.data] == ["baseline", "stdcl"] * 2
    assert list(fig.data[2].x) == ["global", "spatial", "temporal"] and list(fig.data[3].y) == [3.5, 4.5, 5.5]
    assert [a.text for a in fig.layout.annotations] == ["silhouette", "k-NN accuracy"]  # named, not snake_case
    # every overall metric: at most PANELS_PER_ROW panels a row, so the titles have room (no overlap)
    from analysis.metrics import METRIC_INFO, metric_name

    many = [dict(r, metric=m) for m in METRIC_INFO for r in rows[:3]]
    fig = F.metrics_bar(many)
    ann = list(fig.layout.annotations)
    assert [a.text for a in ann] == [metric_name(m) for m in METRIC_INFO] and len(ann) == 8
    by_row = {}
    for a in ann:
        by_row.setdefault(round(a.y, 3), []).append(a.x)
    assert len(by_row) == 2 and all(len(xs) == F.PANELS_PER_ROW for xs in by_row.values())
    assert all(b - a >= 0.24 for xs in by_row.values() for a, b in zip(sorted(xs), sorted(xs)[1:]))
    assert "_" not in "".join(a.text for a in ann)
    twins = [{"pair": "wave left hand / wave right hand", "type": "spatial", "classes": [0, 1],
              "spaces": {"spatial": {"knn_accuracy": 0.9}, "temporal": {"knn_accuracy": 0.6}}},
             {"pair": "sit down / stand up", "type": "temporal", "classes": [6, 7],
              "spaces": {"spatial": {"knn_accuracy": 0.7}, "temporal": {"knn_accuracy": 0.95}}}]
    tf = F.twin_pairs_figure(twins)
    assert [t.name for t in tf.data] == ["spatial", "temporal"]
    assert list(tf.data[1].y) == [0.6, 0.95]
