"""The embedding scatter at large N (analysis.embedding_figure): points scaled to N, the density layer,
WebGL, compact arrays, hover naming each sample, the highlight and what the app's in-browser highlight reads
(the link column, the highlight style)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis.embedding_figure import (
    DENSITY_ABOVE,
    SMALL_N,
    color_of,
    density_layer,
    drawn_mask,
    embedding_scatter,
    highlight_style,
    hover_texts,
    marker_scale,
    points_outside,
)
from stdcl.errors import ConfigError
from analysis.embeddings import Embeddings


def _emb(n: int, k: int = 5) -> Embeddings:
    y = np.arange(n) % k
    logits = np.eye(k, dtype=np.float32)[np.where(np.arange(n) % 7 == 0, (y + 1) % k, y)]
    return Embeddings({}, logits, y, [f"sample{i:05d}" for i in range(n)], np.arange(n),
                      [f"class {j}" for j in range(k)], None, "pooled", "k")


def test_marker_scale_shrinks_and_fades_with_n():
    assert marker_scale(10) == marker_scale(SMALL_N) == (6.0, 0.8)
    sizes = [marker_scale(n) for n in (2000, 10_000, 50_000, 1_000_000)]
    assert all(a[0] > b[0] or b[0] == 2.0 for a, b in zip(sizes, sizes[1:]))
    assert all(a[1] > b[1] or b[1] == 0.25 for a, b in zip(sizes, sizes[1:]))
    assert sizes[2] == pytest.approx((6.0 * 0.02 ** 0.25, 0.25))
    assert sizes[-1] == (2.0, 0.25)


def test_large_figure_uses_webgl_a_density_layer_and_compact_arrays():
    n = DENSITY_ABOVE + 1000
    emb = _emb(n)
    coords = np.random.default_rng(0).normal(size=(n, 2)) * [3, 1]
    fig = embedding_scatter(coords, emb)
    density, *points = fig.data
    assert density.name == "density" and isinstance(density, go.Heatmap) and density.hoverinfo == "skip"
    assert np.nansum(np.expm1(np.asarray(density.z, float))) == pytest.approx(n, rel=1e-4)
    assert np.asarray(density.x).size > np.asarray(density.y).size  # cells follow the wider axis
    size, opacity = marker_scale(n)
    rows = np.concatenate([np.asarray(t.customdata).reshape(-1) for t in points])
    assert sorted(rows.tolist()) == list(range(n))
    for t in points:
        assert isinstance(t, go.Scattergl) and t.marker.size == size and t.marker.opacity == opacity
        r = np.asarray(t.customdata).reshape(-1)
        assert np.asarray(t.customdata).dtype == np.int32 and np.asarray(t.x).dtype == np.float32
        np.testing.assert_allclose(t.x, coords[r, 0].astype(np.float32))
        lines = [h.split("<br>") for h in t.hovertext]
        assert [f[0] for f in lines] == [emb.names[i] for i in r]  # the hover names the sample
        names = emb.class_names
        assert [f[1] for f in lines] == [f"{names[emb.labels[i]]} ✓" if emb.labels[i] == emb.predictions[i] else
                                         f"{names[emb.labels[i]]}, predicted {names[emb.predictions[i]]} ✗" for i in r]
    assert any("✗" in h for t in points for h in t.hovertext)
    assert embedding_scatter(coords, emb, density=False).data[0].name != "density"
    small = embedding_scatter(coords[:500], _emb(500))
    assert all(isinstance(t, go.Scatter) for t in small.data) and small.data[0].marker.size == 6.0


def test_highlight_at_large_n_is_larger_opaque_and_outlined():
    n = 20_000
    emb = _emb(n)
    hl = np.arange(0, n, 97)
    fig = embedding_scatter(np.random.default_rng(1).normal(size=(n, 2)), emb, highlight_rows=hl)
    size, opacity = marker_scale(n)
    for t in fig.data[1:]:
        r = np.asarray(t.customdata).reshape(-1)
        on = np.isin(r, hl)
        np.testing.assert_allclose(np.asarray(t.marker.size)[on], size + 4, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(t.marker.size)[~on], size - 1, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(t.marker.opacity)[on], 1.0)
        assert np.all(np.asarray(t.marker.opacity)[~on] < opacity / 4)
        assert np.all(np.asarray(t.marker.line.width)[on] > 0) and np.all(np.asarray(t.marker.line.width)[~on] == 0)


def test_link_column_and_highlight_style_for_the_browser():
    """Linked charts highlight in the browser: each point's link id (``customdata[:, 1]``, e.g. A's row of B's
    sample) and, in ``layout.meta``, the same style :func:`embedding_scatter` draws a highlight with."""
    n = 6000
    emb = _emb(n)
    coords = np.random.default_rng(2).normal(size=(n, 2))
    link = np.random.default_rng(3).permutation(n)
    link[5] = -1  # a sample with no counterpart
    fig = embedding_scatter(coords, emb, link_rows=link)
    size, opacity = marker_scale(n)
    style = fig.layout.meta["highlight"]
    assert style == highlight_style(size, opacity)
    assert style["on"]["size"] > size + 2 and style["off"]["size"] < size and style["on"]["opacity"] == 1.0
    seen = []
    for t in fig.data[1:]:
        cd = np.asarray(t.customdata)
        assert cd.dtype == np.int32 and cd.shape == (len(t.x), 2)
        np.testing.assert_array_equal(cd[:, 1], link[cd[:, 0]])
        assert t.marker.size == size  # the figure itself has no highlight: it need not change with the selection
        seen += cd[:, 0].tolist()
    assert sorted(seen) == list(range(n))
    # the server-side highlight (other pages) is drawn with the same style
    hl = embedding_scatter(coords, emb, highlight_rows=[1, 2], link_rows=link)
    t = hl.data[1]
    on = np.isin(np.asarray(t.customdata)[:, 0], [1, 2])
    np.testing.assert_allclose(np.asarray(t.marker.size)[on], style["on"]["size"])
    np.testing.assert_allclose(np.asarray(t.marker.opacity)[~on], style["off"]["opacity"], rtol=1e-6)
    assert np.asarray(embedding_scatter(coords[:50], _emb(50)).data[0].customdata).shape == (10, 1)
    with pytest.raises(ConfigError):
        embedding_scatter(coords, emb, link_rows=link[:-1])


def test_density_layer_of_a_single_point_is_finite():
    layer = density_layer(np.zeros((3, 2), np.float32))
    assert np.nansum(np.expm1(np.asarray(layer.z, float))) == pytest.approx(3)


def _drawn_rows(fig: go.Figure) -> np.ndarray:
    return np.sort(np.concatenate([np.asarray(t.customdata)[:, 0] for t in fig.data if t.customdata is not None]))


def test_points_outside_are_the_selected_samples_the_subsample_leaves_out():
    n, budget = 3000, 400
    emb = _emb(n)
    coords = np.random.default_rng(1).normal(size=(n, 2))
    shown = drawn_mask(emb, budget)
    fig = embedding_scatter(coords, emb, "label", max_points=budget)
    assert np.array_equal(_drawn_rows(fig), np.flatnonzero(shown))  # what the chart draws, exactly
    assert drawn_mask(emb, None).all() and drawn_mask(emb, n).all()
    inside, outside = np.flatnonzero(shown)[:3], np.flatnonzero(~shown)[[0, 5, 9]]
    got = points_outside(coords, emb, "label", np.r_[inside, outside], budget)
    assert got["rows"] == got["ids"] == outside.tolist()
    np.testing.assert_allclose(np.c_[got["x"], got["y"]], coords[outside], rtol=1e-6)
    assert got["color"] == [color_of(int(emb.labels[r])) for r in outside]
    assert got["text"] == hover_texts(emb)[outside].tolist()  # the hover of a drawn point
    assert got["text"][0].startswith(emb.names[outside[0]] + "<br>")
    assert points_outside(coords, emb, "label", inside, budget) is None  # all drawn
    assert points_outside(coords, emb, "label", [], budget) is None
    assert points_outside(coords, emb, "label", outside, None) is None  # no subsample: nothing left out
    wrong = points_outside(coords, emb, "correct", outside, budget)["color"]
    assert wrong == ["#2ca02c" if emb.correct[r] else "#d62728" for r in outside]


def test_points_outside_of_a_linked_chart_follow_its_link_ids():
    """Model B's chart: its rows link to A's rows (here reversed, one B row linked to nothing)."""
    n, budget = 2000, 300
    emb = _emb(n)
    coords = np.random.default_rng(2).normal(size=(n, 2))
    link = np.arange(n)[::-1].copy()
    link[0] = -1
    hidden_b = np.flatnonzero(~drawn_mask(emb, budget))[:4]  # B rows not drawn
    got = points_outside(coords, emb, "label", link[hidden_b], budget, link_rows=link)
    want = sorted(r for r in hidden_b if link[r] >= 0)
    assert got["rows"] == want and got["ids"] == link[want].tolist()
    np.testing.assert_allclose(got["x"], coords[want, 0], rtol=1e-6)
    assert points_outside(coords, emb, "label", [-1], budget, link_rows=link) is None  # -1 links nothing
    with pytest.raises(ConfigError, match="linked rows"):
        points_outside(coords, emb, "label", [1], budget, link_rows=link[:-1])
