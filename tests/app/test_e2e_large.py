"""The Embeddings page on a whole split of 5,300 samples in a real browser (Playwright, Debian's Chromium,
``streamlit run app/main.py``): every point drawn by WebGL in both linked views, a box selection shown in
both, a sample found by name highlighted in both and opened in the inspector, and the selection's CSV.

The server reads a cache this module fills first: stand-in embeddings of the split
(:mod:`tests.support.large_split`) and their UMAP coordinates (here their PCA, stored under UMAP's key),
so the page draws at once; the split is chosen on the Models page as a user chooses it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis.cache import load_arrays, save_arrays
from analysis.datasets import open_analysis_data
from analysis.embedding_figure import drawn_mask, hover_texts
from analysis.projections import project, project_embeddings, projection_key
from tests.support.app import bundled_model
from tests.support.browser import CHROMIUM, ROOT, StreamlitServer, exceptions, launch_chromium, screenshot, wait_idle

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from analysis.bench_app import (  # noqa: E402
    TITLES,
    box_select,
    chart,
    highlighted,
    open_embeddings,
    run_after,
    set_up_models_page,
    wait_linked,
)
from tests.support.large_split import write_split  # noqa: E402

N_TEST = 5300  # above the WebGL and density thresholds (5,000)
LIMIT_S = 180.0
#: Rows (customdata) of the points of a chart inside a data-space box {x: [lo, hi], y: [lo, hi]}.
ROWS_IN_RANGE_JS = """(gd, r) => {
  const rows = [];
  for (const t of gd._fullData) {
    if (!t.customdata) continue;
    for (let i = 0; i < t.x.length; i++)
      if (t.x[i] >= r.x[0] && t.x[i] <= r.x[1] && t.y[i] >= r.y[0] && t.y[i] <= r.y[1]) rows.push(t.customdata[i][0]);
  }
  return rows.sort((a, b) => a - b);
}"""
#: Trace types and WebGL canvases of a chart.
DRAWN_JS = """gd => ({types: gd._fullData.map(t => t.type), names: gd._fullData.map(t => t.name),
                     canvases: gd.querySelectorAll('canvas.gl-canvas-context').length})"""

#: How many times the linked-chart component has drawn a chart (app/linked_charts.js): a selection must not
#: redraw it.
DRAWS_JS = "gd => Number(gd.getAttribute('data-stdcl-drawn'))"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The split on disk, and a cache holding its (stand-in) embeddings and projections."""
    from analysis.embeddings import extract_embeddings
    from tests.support.large_split import standin_embeddings

    tmp = tmp_path_factory.mktemp("large")
    path = write_split(tmp / "data", N_TEST)
    model = bundled_model("A")
    data = open_analysis_data(model, "test", "numpy", path)  # what the Models page opens for this file
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("analysis.embeddings.compute_embeddings", standin_embeddings)
        emb = extract_embeddings(model, data, cache_root=tmp / "cache")
    for space in ("spatial", "temporal"):
        save_arrays("projections", projection_key(emb.key, space, "umap"), {"coords": project(emb.space(space), "pca")},
                    tmp / "cache")
    return {"tmp": tmp, "path": path, "emb": emb}


@pytest.fixture(scope="module")
def page(prepared):
    tmp = prepared["tmp"]
    env = {"STDCL_RUNS": str(tmp / "runs"), "STDCL_CACHE": str(tmp / "cache")}
    srv = StreamlitServer(ROOT / "app" / "main.py", env, tmp / "server.log")
    try:
        srv.wait_healthy()
        with sync_api.sync_playwright() as p:
            browser = launch_chromium(p)
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            pg = context.new_page()
            pg.set_default_timeout(LIMIT_S * 1000)
            pg.goto(srv.url + "/models")
            wait_idle(pg, LIMIT_S)
            set_up_models_page(pg, prepared["path"], 100_000, LIMIT_S)
            open_embeddings(pg, len(prepared["emb"]), LIMIT_S)
            try:
                yield pg
            finally:
                if exceptions(pg):
                    screenshot(pg, tmp, "failed")
                browser.close()
    finally:
        print(srv.tail())
        srv.stop()


def test_every_point_is_drawn_with_webgl_in_both_views(page, prepared):
    n = len(prepared["emb"])
    assert not exceptions(page)
    for title in TITLES:
        drawn = chart(page, title).evaluate(DRAWN_JS)
        assert drawn["types"][0] == "heatmap" and drawn["names"][0] == "density"  # the density layer, under the points
        assert set(drawn["types"][1:]) == {"scattergl"} and drawn["canvases"] >= 1
        rows = chart(page, title).evaluate(ROWS_IN_RANGE_JS, {"x": [-1e9, 1e9], "y": [-1e9, 1e9]})
        assert rows == list(range(n))  # every sample, once
    assert highlighted(page, TITLES[1], n) == []


def test_box_selection_shows_in_both_views_and_downloads(page, prepared):
    emb = prepared["emb"]
    n = len(emb)
    draws = [chart(page, t).evaluate(DRAWS_JS) for t in TITLES]
    assert min(draws) >= 1
    result = box_select(page, n, LIMIT_S, box=(0.3, 0.7))
    expected = result["picked"]  # the rows plotly selected in the spatial chart
    assert 0 < len(expected) < n and result["runs"] >= 1  # the page's rerun (count, table, CSV) followed
    assert [chart(page, t).evaluate(DRAWS_JS) for t in TITLES] == draws  # highlighted in place, not redrawn
    assert highlighted(page, TITLES[0], n) == expected == highlighted(page, TITLES[1], n)
    # ... which are the spatial points inside the box dragged (up to a pixel at its edges)
    (x0, x1), (y0, y1) = result["range"]["x"], result["range"]["y"]
    pad = 0.01 * max(x1 - x0, y1 - y0)
    inside = chart(page, TITLES[0]).evaluate(ROWS_IN_RANGE_JS, {"x": [x0 - pad, x1 + pad], "y": [y0 - pad, y1 + pad]})
    core = chart(page, TITLES[0]).evaluate(ROWS_IN_RANGE_JS, {"x": [x0 + pad, x1 - pad], "y": [y0 + pad, y1 - pad]})
    assert set(core) <= set(expected) <= set(inside)
    count = page.get_by_text(re.compile(r"[\d,]+ selected")).first.inner_text()
    assert int(re.search(r"([\d,]+) selected", count).group(1).replace(",", "")) == len(expected)

    with page.expect_download() as download:
        page.get_by_test_id("stDownloadButton").get_by_role("button", name="Download the selection (CSV)").click()
    csv = pd.read_csv(download.value.path())
    names, preds = emb.class_names, emb.predictions
    assert csv["row"].tolist() == expected
    assert csv["name"].tolist() == [emb.names[r] for r in expected]
    assert csv["label"].tolist() == [names[emb.labels[r]] for r in expected]
    assert csv["prediction"].tolist() == [names[preds[r]] for r in expected]
    assert download.value.suggested_filename == f"selection-{len(expected)}-samples.csv"


def test_search_highlights_the_sample_in_both_views_and_opens_it(page, prepared):
    emb = prepared["emb"]
    n = len(emb)
    row = int(np.flatnonzero(emb.labels == 5)[17])
    name = emb.names[row]
    box = page.locator('[data-testid="stTextInput"]').filter(has_text="Find a sample by name").locator("input")
    draws = [chart(page, t).evaluate(DRAWS_JS) for t in TITLES]
    box.fill(name.lower())
    run_after(page, lambda: box.press("Enter"), LIMIT_S)
    wait_linked(page, n, LIMIT_S, [row])  # both charts highlight the sample found ...
    assert [chart(page, t).evaluate(DRAWS_JS) for t in TITLES] == draws  # ... in place
    assert not exceptions(page)
    assert highlighted(page, TITLES[0], n) == [row] == highlighted(page, TITLES[1], n)
    page.locator('[data-testid="stHeading"]', has_text=f"Sample {name}").first.wait_for()
    assert page.get_by_text("1 selected").count() >= 1
    # the hover of that point names it
    hover = chart(page, TITLES[1]).evaluate("""(gd, row) => { for (const t of gd._fullData) {
        if (!t.customdata) continue;
        const i = t.customdata.findIndex(c => c[0] === row); if (i >= 0) return t.hovertext[i]; } }""", row)
    assert hover.split("<br>")[0] == name


def test_a_projection_not_cached_runs_in_the_background_and_replaces_pca(page, prepared):
    """The global space has no cached UMAP: its chart shows PCA with a progress bar that updates by itself,
    and the page switches to the UMAP when the background job is done, without a reload."""
    n = len(prepared["emb"])
    spaces = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Spaces").locator("input")
    spaces.click()
    spaces.press_sequentially("global")  # typing opens the menu, filtered (a click alone may only focus it)
    run_after(page, lambda: page.get_by_role("option", name="global (classifier input)").click(), LIMIT_S)
    page.keyboard.press("Escape")
    waiting = chart(page, "A: global (classifier input) (PCA until UMAP is ready)")
    assert waiting.evaluate(ROWS_IN_RANGE_JS, {"x": [-1e9, 1e9], "y": [-1e9, 1e9]}) == list(range(n))
    page.locator('[data-testid="stProgress"]').filter(has_text="UMAP of the global embeddings").first.wait_for()
    done = page.locator(".js-plotly-plot").filter(has_text="A: global (classifier input)").filter(
        has_not_text="PCA until")
    done.first.wait_for(timeout=LIMIT_S * 1000)  # the fragment polled the job and redrew the page
    wait_idle(page, LIMIT_S)
    assert page.locator('[data-testid="stProgress"]').count() == 0 and not exceptions(page)
    want = project_embeddings(prepared["emb"], "global", "umap", cache_root=prepared["tmp"] / "cache")  # its result
    got = done.first.evaluate("""gd => { const out = {}; for (const t of gd._fullData) if (t.customdata)
        for (let i = 0; i < t.x.length; i++) out[t.customdata[i][0]] = [t.x[i], t.y[i]]; return out; }""")
    np.testing.assert_allclose([got[str(r)] for r in range(n)], want, atol=1e-4)


#: The highlight canvas's alpha at a data-space point (x, y) of a chart.
ALPHA_AT_JS = """(gd, [x, y]) => {
  const fl = gd._fullLayout, canvas = gd.parentElement.querySelector('canvas.stdcl-highlight');
  const ratio = canvas.width / fl.width;
  const px = (fl._size.l + fl.xaxis.l2p(x)) * ratio, py = (fl._size.t + fl.yaxis.l2p(y)) * ratio;
  return canvas.getContext('2d').getImageData(Math.round(px), Math.round(py), 1, 1).data[3];
}"""
#: The page (client) position of a data-space point (x, y) of a chart.
CLIENT_AT_JS = """(gd, [x, y]) => {
  const fl = gd._fullLayout, at = gd.getBoundingClientRect();
  return [at.left + fl._size.l + fl.xaxis.l2p(x), at.top + fl._size.t + fl.yaxis.l2p(y)];
}"""


def test_a_sample_the_subsample_leaves_out_is_found_and_drawn_in_both_views(page, prepared):
    """Points budget 1,000 (the box beside the search): each chart draws a stratified sample; a sample found by
    name that neither chart draws is painted highlighted in both, where its projection puts it; hovering it
    names it and a click selects it. (Last: it changes the budget.)"""
    emb = prepared["emb"]
    n, budget = len(emb), 1000
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text="Points drawn per chart").locator("input")
    box.fill(str(budget))
    run_after(page, lambda: box.press("Enter"), LIMIT_S)
    for title in TITLES:
        chart(page, title).filter(has_text=f"showing {drawn_mask(emb, budget).sum():,} of {n:,} points").wait_for()
    wait_idle(page, LIMIT_S)
    shown = chart(page, TITLES[0]).evaluate(ROWS_IN_RANGE_JS, {"x": [-1e9, 1e9], "y": [-1e9, 1e9]})
    assert shown == np.flatnonzero(drawn_mask(emb, budget)).tolist()
    coords = {space: load_arrays("projections", projection_key(emb.key, space, "umap"), prepared["tmp"] / "cache")
              ["coords"] for space in ("spatial", "temporal")}
    # the sample left out with the nearest drawn neighbour in the spatial chart: plotly's click there picks the
    # neighbour, and the click must pick this sample
    inside, outside = np.flatnonzero(drawn_mask(emb, budget)), np.flatnonzero(~drawn_mask(emb, budget))
    xy = coords["spatial"]
    i, j = np.unravel_index(np.linalg.norm(xy[outside, None] - xy[None, inside], axis=2).argmin(),
                            (outside.size, inside.size))
    row, neighbour = int(outside[i]), int(inside[j])
    search = page.locator('[data-testid="stTextInput"]').filter(has_text="Find a sample by name").locator("input")
    search.fill(emb.names[row])
    run_after(page, lambda: search.press("Enter"), LIMIT_S)
    wait_linked(page, n, LIMIT_S, [row])  # both charts draw it highlighted
    assert not exceptions(page)
    for title, space in zip(TITLES, ("spatial", "temporal")):
        assert chart(page, title).evaluate(ALPHA_AT_JS, coords[space][row].tolist()) > 0  # painted where it lies
        x, y = chart(page, title).evaluate(CLIENT_AT_JS, coords[space][row].tolist())
        page.mouse.move(x, y)
        label = chart(page, title).locator("xpath=..").locator(".stdcl-extra-hover")
        label.wait_for(state="visible")
        assert label.inner_text().splitlines() == hover_texts(emb, [row])[0].split("<br>")
        page.mouse.move(x + 60, y + 60)  # away from it (3 px beyond its radius would do)
        label.wait_for(state="hidden")
    # a click on it selects it (not the drawn neighbour plotly's own click would pick, a few pixels away)
    first = chart(page, TITLES[0])
    x, y = first.evaluate(CLIENT_AT_JS, coords["spatial"][row].tolist())
    nx, ny = first.evaluate(CLIENT_AT_JS, coords["spatial"][neighbour].tolist())
    assert np.hypot(nx - x, ny - y) < 10  # within plotly's hover distance (20 px)
    seq = "() => Object.values(window.__stdclLinkedCharts).map(g => g.seq)"
    before = page.evaluate(seq)
    page.mouse.move(x, y)
    page.locator(".stdcl-extra-hover").first.wait_for(state="visible")
    run_after(page, lambda: (page.mouse.down(), page.mouse.up()), LIMIT_S)
    wait_linked(page, n, LIMIT_S, [row])
    assert sum(page.evaluate(seq)) == sum(before) + 1  # one selection made by the click
    page.locator('[data-testid="stHeading"]', has_text=f"Sample {emb.names[row]}").first.wait_for()
