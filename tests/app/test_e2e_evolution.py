"""The Training evolution page in a real browser (Playwright + Debian's Chromium, as tests/app/test_e2e.py):
a tiny run trained here with probes, opened by a link (``?run=``), scrubbed to its last epoch, then a box
selection in its spatial chart highlights exactly the same samples in the temporal one.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.evolution import CURVES
from stdcl.train.engine import train
from tests.support.browser import CHROMIUM, ROOT, StreamlitServer, exceptions, launch_chromium, screenshot, wait_idle
from tests.support.plotly_select import box_select
from tests.support.training import tiny_config

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

pytestmark = pytest.mark.slow
SLOW_S = 180.0  # the first visit computes the run's evolution (cached afterwards)
RUN = "runs: tiny_stdcl"
#: Title, row ids (customdata[0]) and marker sizes of a chart's points, and the x of its vertical line shapes.
CHART_JS = """gd => ({
  title: ((gd.layout.title && gd.layout.title.text) || '').replace(/<[^>]+>/g, ''),
  points: gd._fullData.filter(t => t.customdata).flatMap(t => Array.from(t.x, (x, i) => ({
    x, y: t.y[i], row: Number(t.customdata[i][0]),
    size: typeof t.marker.size === 'number' ? t.marker.size : t.marker.size[i]}))),
  vlines: (gd.layout.shapes || []).filter(s => s.x0 === s.x1).map(s => s.x0),
})"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e_evolution")
    torch.set_num_threads(1)
    train(tiny_config("train.epochs=2"), tmp / "runs" / "tiny_stdcl")  # probes at epochs 0, 1, 2
    env = {"STDCL_RUNS": str(tmp / "runs"), "STDCL_CACHE": str(tmp / "cache")}
    srv = StreamlitServer(ROOT / "app" / "main.py", env, tmp / "server.log")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            pg = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            pg.set_default_timeout(SLOW_S * 1000)
            yield pg
        finally:
            browser.close()


#: True once the chart titled ``title`` draws its points in more than one size (a highlight is on).
HIGHLIGHT_JS = """title => [...document.querySelectorAll('.js-plotly-plot')].some(gd => gd._fullData && gd.layout &&
  gd.layout.title && (gd.layout.title.text || '').includes(title) && new Set(gd._fullData.filter(t => t.customdata)
  .flatMap(t => typeof t.marker.size === 'number' ? [t.marker.size] : Array.from(t.marker.size))).size > 1)"""


def _chart(page, title: str):
    return page.locator(".js-plotly-plot").filter(has_text=title)


def _highlighted(chart: dict) -> list[int]:
    sizes = {p["size"] for p in chart["points"]}
    return [] if len(sizes) < 2 else sorted(p["row"] for p in chart["points"] if p["size"] == max(sizes))


def test_scrub_to_the_last_epoch_and_box_select(page, server, tmp_path):
    page.goto(f"{server.url}/evolution?run={urllib.parse.quote(RUN)}")
    wait_idle(page, SLOW_S)
    assert not exceptions(page), server.tail()
    spatial = _chart(page, "A: tiny_stdcl: spatial (head s)")
    temporal = _chart(page, "A: tiny_stdcl: temporal (head t)")
    assert spatial.evaluate(CHART_JS)["title"].endswith("epoch 0")

    # scrub: the slider's keyboard control, to its end (the last probe snapshot)
    page.locator('[data-testid="stSlider"] input[type=range]').first.focus()
    page.keyboard.press("End")
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].some(g => g.layout && "
                           "g.layout.title && g.layout.title.text.includes('temporal (head t), epoch 2'))",
                           timeout=SLOW_S * 1000)
    wait_idle(page, SLOW_S)
    first, second = spatial.evaluate(CHART_JS), temporal.evaluate(CHART_JS)
    assert first["title"].endswith("epoch 2") and second["title"].endswith("epoch 2")
    curves = page.locator(".js-plotly-plot").filter(has_text="silhouette").evaluate(CHART_JS)
    assert curves["vlines"] == [2] * len(CURVES)  # the current-epoch marker in every panel
    assert not _highlighted(second)

    # box select in the spatial chart: the modebar's Box Select tool (the charts start in pan mode), a drag
    box = box_select(page, spatial, (0.05, 0.05, 0.6, 0.95), SLOW_S)
    boxed = sorted(p["row"] for p in first["points"]
                   if box["x"][0] <= p["x"] <= box["x"][1] and box["y"][0] <= p["y"] <= box["y"][1])
    assert 0 < len(boxed) < len(first["points"]), (box, len(boxed))
    page.get_by_text(f"{len(boxed)} selected").first.wait_for()
    wait_idle(page, SLOW_S)
    assert not exceptions(page), server.tail()
    # the temporal chart (still at the last epoch) highlights exactly the samples boxed in the spatial one
    after = temporal.evaluate(CHART_JS)
    assert after["title"].endswith("epoch 2")
    assert _highlighted(after) == boxed and _highlighted(spatial.evaluate(CHART_JS)) == boxed
    screenshot(page, Path(os.environ.get("STDCL_ARTIFACTS") or tmp_path), "evolution-selection",
               os.environ.get("STDCL_SCREENSHOT_FULL", "1") != "0")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """The app as a fresh install opens it: no runs, an empty cache (the demo's evolutions ship precomputed)."""
    tmp = tmp_path_factory.mktemp("e2e_evolution_demo")
    env = {"STDCL_RUNS": str(tmp / "runs"), "STDCL_CACHE": str(tmp / "cache")}
    srv = StreamlitServer(ROOT / "app" / "main.py", env, tmp / "server.log")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def test_the_bundled_demo_opens_on_its_evolution_and_highlights_a_twin_pair(demo_server, tmp_path):
    """The embedded default: the bundled HCN STD-CL run above its baseline, scrubbed to the last epoch, with a
    spatial twin pair highlighted in both runs (the README screenshots come from here)."""
    from stdcl.train.probes import read_probes
    from stdcl.weights import bundled_path

    series = read_probes(bundled_path("synthetic_hcn_stdcl"))
    last = f"epoch {series.epochs[-1]:g}"
    artifacts = Path(os.environ.get("STDCL_ARTIFACTS") or tmp_path)
    full = os.environ.get("STDCL_SCREENSHOT_FULL", "1") != "0"
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(SLOW_S * 1000)
            page.goto(f"{demo_server.url}/evolution")
            wait_idle(page, SLOW_S)
            assert not exceptions(page), demo_server.tail()
            assert _chart(page, "A: synthetic_hcn_stdcl: spatial (head s)").count() == 1
            assert _chart(page, "B: synthetic_hcn_baseline").count() >= 2  # the paired baseline's row
            page.locator('[data-testid="stSlider"] input[type=range]').first.focus()
            page.keyboard.press("End")
            page.wait_for_function(f"() => [...document.querySelectorAll('.js-plotly-plot')].some(g => g.layout && "
                                   f"g.layout.title && g.layout.title.text.includes('temporal (head t), {last}'))",
                                   timeout=SLOW_S * 1000)
            wait_idle(page, SLOW_S)
            pair = next(m for m in series.class_meta if m.get("twin_type") == "spatial")
            a = series.class_meta.index(pair)
            names = (series.class_names[a], series.class_names[pair["twin"]])
            page.get_by_role("combobox", name="Highlight a twin pair").click()
            page.get_by_role("option").filter(has_text=names[0]).first.click()
            # the rerun the choice starts may begin after a first idle check: wait for the highlight itself
            page.wait_for_function(HIGHLIGHT_JS, arg="A: synthetic_hcn_stdcl: spatial (head s)",
                                   timeout=SLOW_S * 1000)
            wait_idle(page, SLOW_S)
            assert not exceptions(page), demo_server.tail()
            spatial = _chart(page, "A: synthetic_hcn_stdcl: spatial (head s)").evaluate(CHART_JS)
            wanted = sorted(int(i) for i in np.flatnonzero(np.isin(series.labels, [a, pair["twin"]])))
            assert spatial["title"].endswith(last) and _highlighted(spatial) == wanted
            screenshot(page, artifacts, "evolution", full)
        finally:
            browser.close()
