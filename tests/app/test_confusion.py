"""The Confusion page on the bundled demo (AppTest): matrix values, a clicked cell's samples, the
inspector, most-confused pairs, per-class accuracy and the A-vs-B change.

A click on a cell is simulated as the browser reports it (streamlit 1.67): plotly.js emits no
selection for heatmap cells, so the page lays an invisible marker on each cell whose ``customdata``
is ``[true, predicted, count, share]``; a click selects that marker and Streamlit receives
``{"selection": {"points": [{"curve_number", "point_index", "x", "y", "customdata": {"0": t, "1": p,
...}}], ...}}``. :func:`_click` sends that JSON in the next run's widget states
(:func:`tests.support.app.send_selection`: the path the browser takes, through Streamlit's
deserialiser); the public ``at.session_state[<chart key>] = payload`` route is used for the
heatmap-style payload (``x`` / ``y`` class names only).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from analysis.confusion import confusion, most_confused
from analysis.neighbours import nearest_neighbours
from app.inspector import NEIGHBOUR_COLUMNS
from tests.support.app import arr, chart, module_env, open_app, reference_pair, rerun, send_selection, tables

CELL_COLUMNS = ["row", "name", "index", "confidence"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory)


@pytest.fixture(scope="module")
def ref(env):
    return {which: r.emb for which, r in reference_pair().items()}


@pytest.fixture(scope="module")
def app(env):
    return open_app("confusion")


def _heatmap(spec: dict) -> dict:
    return next(d for d in spec["data"] if d["type"] == "heatmap")


def _cell_table(at: AppTest):
    return tables(at, *CELL_COLUMNS)[0]


def _click(at: AppTest, key: str, t: int, p: int) -> AppTest:
    """Send a click on cell (true ``t``, predicted ``p``) of chart ``key`` as the browser reports it."""
    spec, _ = chart(at, key)
    cells = next(d for d in spec["data"] if d["type"] == "scatter")
    cd = arr(cells["customdata"]).reshape(-1, 4)
    i = int(np.flatnonzero((cd[:, 0] == t) & (cd[:, 1] == p))[0])
    point = {"curve_number": spec["data"].index(cells), "point_number": i, "point_index": i, "x": cells["x"][i],
             "y": cells["y"][i], "customdata": {str(j): float(v) for j, v in enumerate(cd[i])}}
    return send_selection(at, key, [point])


def _expected_cell(emb, t: int, p: int) -> list[str]:
    """Names of the samples of class ``t`` predicted ``p``, most confident first (independent reference)."""
    pred = emb.logits.argmax(1)
    rows = [i for i in range(len(emb)) if emb.labels[i] == t and pred[i] == p]
    conf = softmax(emb.logits.astype(np.float64), axis=1).max(1)
    return [emb.names[i] for i in sorted(rows, key=lambda i: (-conf[i], i))]


def test_matrix_counts_and_shares_equal_the_analysis(app, ref):
    emb = ref["A"]
    want = confusion(emb)["matrix"]
    at = rerun(app, conf_normalise=False)
    spec, _ = chart(at, "confusion_A")
    hm = _heatmap(spec)
    np.testing.assert_array_equal(arr(hm["z"]).reshape(want.shape), want)
    assert hm["x"] == emb.class_names and hm["y"] == emb.class_names
    # independent count: labels vs argmax of the logits
    pred = emb.logits.argmax(1)
    for t, p in [(0, 0), (0, 4), (8, 9), (12, 12)]:
        assert want[t, p] == np.sum((emb.labels == t) & (pred == p))
    # every cell carries a clickable marker with its (true, predicted, count)
    cells = arr(next(d for d in spec["data"] if d["type"] == "scatter")["customdata"]).reshape(-1, 4)
    assert len(cells) == want.size
    np.testing.assert_array_equal(cells[:, 2], want[cells[:, 0].astype(int), cells[:, 1].astype(int)])
    at = rerun(at, conf_normalise=True)
    z = arr(_heatmap(chart(at, "confusion_A")[0])["z"]).reshape(want.shape)
    np.testing.assert_allclose(z, want / want.sum(1, keepdims=True), rtol=1e-12)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["top-1 accuracy"] == f"{np.mean(pred == emb.labels):.1%}"
    assert metrics["samples"] == str(len(emb))


def test_clicked_cell_lists_exactly_its_samples_and_opens_the_inspector(app, ref):
    emb = ref["A"]
    pair = most_confused(emb, 1)[0]
    t, p = pair["true"], pair["predicted"]
    at = rerun(app)
    at.selectbox(key="conf_true").set_value(2)
    at.selectbox(key="conf_pred").set_value(2).run()  # start from another cell
    at = _click(at, "confusion_A", t, p)
    assert (at.session_state["conf_true"], at.session_state["conf_pred"]) == (t, p)
    table = _cell_table(at)
    assert table["name"].tolist() == _expected_cell(emb, t, p) and len(table) >= 1
    assert [emb.names[r] for r in table["row"]] == table["name"].tolist()
    shape = next(s for s in chart(at, "confusion_A")[0]["layout"]["shapes"] if s.get("name") == "chosen-cell")
    assert (shape["x0"] + 0.5, shape["y0"] + 0.5) == (p, t)  # the clicked cell is outlined
    # the chart redraws (outline moved) and reports no selection: the chosen cell stays
    at = rerun(at)
    assert (at.session_state["conf_true"], at.session_state["conf_pred"]) == (t, p)

    # open the first sample in the inspector
    row = int(table["row"].iloc[0])
    at.selectbox(key="conf_inspect").set_value(row).run()
    assert not at.exception
    assert at.session_state["inspect_row"] == row and at.session_state["inspect_model"] == "A"
    names = emb.class_names
    assert any(m.value.startswith(f"**Label:** {names[t]}  \n**Prediction:** {names[p]} :material/close: wrong")
               for m in at.markdown)
    nb_tables = tables(at, *NEIGHBOUR_COLUMNS)
    assert len(nb_tables) == 3
    for space, nb_table in zip(("global", "spatial", "temporal"), nb_tables):
        assert nb_table["name"].iloc[0] == emb.names[nearest_neighbours(emb, row, space, 5).rows[0]]
    at.selectbox(key="conf_inspect").set_value(None).run()


def test_diagonal_cell_from_a_heatmap_style_payload(app, ref):
    """A payload with only the cell's class names (what a heatmap point carries) selects that cell."""
    emb = ref["A"]
    at = rerun(app)
    k = 5
    at.session_state["confusion_A"] = {"selection": {"points": [{"curve_number": 0, "x": emb.class_names[k],
                                                                 "y": emb.class_names[k], "z": 1.0}],
                                                     "point_indices": [], "box": [], "lasso": []}}
    at = rerun(at)
    assert (at.session_state["conf_true"], at.session_state["conf_pred"]) == (k, k)
    assert _cell_table(at)["name"].tolist() == _expected_cell(emb, k, k)
    del at.session_state["confusion_A"]


def test_pairs_per_class_accuracy_and_the_change_from_b_to_a(app, ref):
    a, b = ref["A"], ref["B"]
    at = rerun(app)
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}
    pairs = frames[("true", "predicted as", "count", "share of the class", "examples")]
    want = most_confused(a, 10)
    assert list(zip(pairs["true"], pairs["predicted as"], pairs["count"])) == [
        (r["true_name"], r["predicted_name"], r["count"]) for r in want]
    per_class = frames[("class", "accuracy", "samples")].set_index("class")
    pred_a, pred_b = a.logits.argmax(1), b.logits.argmax(1)
    for k, name in enumerate(a.class_names):
        mask = a.labels == k
        assert per_class.loc[name, "samples"] == mask.sum()
        assert per_class.loc[name, "accuracy"] == pytest.approx(np.mean(pred_a[mask] == k))
    # fixed / broken: same names in A and B (same data and subset), wrong in B and right in A, or the reverse
    assert a.names == b.names
    ok_a, ok_b = pred_a == a.labels, pred_b == b.labels
    listing = frames[("sample", "change", "true", "B predicts", "A predicts", "row")]
    assert set(listing.loc[listing["change"] == "fixed", "sample"]) == {a.names[i] for i in np.flatnonzero(ok_a & ~ok_b)}
    assert set(listing.loc[listing["change"] == "broken", "sample"]) == {a.names[i] for i in np.flatnonzero(~ok_a & ok_b)}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["samples fixed by A"] == str(int(np.sum(ok_a & ~ok_b)))
    helped_hurt = tables(at, "class", "samples", "accuracy B", "accuracy A", "change")
    assert len(helped_hurt) == 2
    for table, sign in zip(helped_hurt, (1, -1)):
        for _, r in table.iterrows():
            k = a.class_names.index(r["class"])
            acc_a, acc_b = np.mean(pred_a[a.labels == k] == k), np.mean(pred_b[b.labels == k] == k)
            assert r["accuracy A"] == pytest.approx(acc_a) and r["accuracy B"] == pytest.approx(acc_b)
            assert np.sign(r["change"]) == sign and r["change"] == pytest.approx(acc_a - acc_b)
    spec, _ = chart(at, "conf_change")
    delta = arr(_heatmap(spec)["z"]).reshape(len(a.class_names), -1)
    ma, mb = confusion(a)["matrix"], confusion(b)["matrix"]
    np.testing.assert_allclose(delta, ma / ma.sum(1, keepdims=True) - mb / mb.sum(1, keepdims=True), atol=1e-12)


def test_model_b_matrix(app, ref):
    at = rerun(app, conf_normalise=False)
    at.radio(key="conf_model").set_value("B").run()
    assert not at.exception
    spec, _ = chart(at, "confusion_B")
    want = confusion(ref["B"])["matrix"]
    np.testing.assert_array_equal(arr(_heatmap(spec)["z"]).reshape(want.shape), want)
    at.radio(key="conf_model").set_value("A")
    rerun(at, conf_normalise=True)
