"""End to end in a real browser: Playwright drives Debian's Chromium against ``streamlit run app/main.py``.

Every page opens without an exception box and shows its heading; a box selection in the spatial
projection of the Embeddings page highlights the same samples in the temporal one; a tiny
fine-tuning run starts, is cancelled, and a reloaded page still shows it cancelled.

Screenshots of each page go to ``$STDCL_ARTIFACTS`` (default: a pytest tmp folder), whole pages
unless ``STDCL_SCREENSHOT_FULL=0`` (then the 1400 x 1000 window only), e.g. the README's::

    STDCL_ARTIFACTS=docs/screenshots STDCL_SCREENSHOT_FULL=0 python -m pytest -q -n 0 tests/app/test_e2e.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from stdcl.train.jobs import JobManager
from tests.support.browser import (
    CHROMIUM,
    ROOT,
    StreamlitServer,
    exceptions,
    launch_chromium,
    screenshot,
    wait_idle,
)
from tests.support.plotly_select import box_select

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

APP = ROOT / "app" / "main.py"
#: (url path, navigation label, page heading, fewest plotly charts): url paths derive from the views' file names.
PAGES = [
    ("", "Start: decoupling explained", "Spatial-temporal decoupling, step by step", 3),
    ("models", "Models and data", "Models and data", 0),
    ("embeddings", "Embeddings", "Embeddings: spatial and temporal spaces, linked", 2),
    ("attention", "Attention", "Attention over joints and frames", 2),
    ("confusion", "Confusion", "Confusion: which classes", 1),
    ("separation", "Separation", "Separation", 2),
    ("results", "Results", "Results: experiment grids", 1),  # the committed NW-UCLA records: table + curves
    ("finetune", "Fine-tune", "Fine-tune", 0),
]
SLOW_S = 120.0  # the first visit of a page computes embeddings / projections (cached afterwards)
#: Tiny fine-tuning settings (the idea of tests/train_helpers.TINY), typed into the Advanced box.
TINY = ["data.source={num_samples: 200}", "train.batch_size=8", "stdcl.loss.num_pos=2", "stdcl.loss.num_neg=8",
        "stdcl.head.dim=32", "train.tensorboard=false"]

FULL = os.environ.get("STDCL_SCREENSHOT_FULL", "1") != "0"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("STDCL_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    srv = StreamlitServer(APP, {"STDCL_RUNS": str(tmp / "runs"), "STDCL_CACHE": str(tmp / "cache")}, tmp / "server.log")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        jobs = tmp / "runs" / ".jobs"
        if jobs.is_dir():  # a test that failed mid-run must not leave its training process behind
            JobManager(jobs).cancel()
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server, artifacts, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(SLOW_S * 1000)
    failed_before = request.session.testsfailed
    try:
        yield pg
    finally:
        if request.session.testsfailed > failed_before:  # keep what the page showed when the test failed
            try:
                screenshot(pg, artifacts, f"failed-{request.node.name}")
            except Exception:
                pass
        context.close()


def open_page(page, server, path: str) -> None:
    page.goto(f"{server.url}/{path}")
    wait_idle(page, SLOW_S)


def wait_charts(page, *titles: str) -> None:
    """Wait until a plotly chart holding each of ``titles`` is drawn (the Embeddings page's charts are mounted
    by a component after the script run ends), then for the app to be idle."""
    for title in titles:
        page.locator(".js-plotly-plot").filter(has_text=title).first.wait_for(timeout=SLOW_S * 1000)
    wait_idle(page, SLOW_S)


def heading(page, text: str):
    return page.locator('[data-testid="stHeading"] h1', has_text=text)


def check_clean(page, server, what: str) -> None:
    errs = exceptions(page)
    assert not errs, f"{what}: exception on the page:\n{errs[0]}\n--- server log ---\n{server.tail()}"


def test_every_page_opens_with_its_content(page, server, artifacts):
    open_page(page, server, "")
    nav = page.locator('[data-testid="stSidebarNav"]')
    for _, label, _, _ in PAGES:
        assert nav.get_by_text(label, exact=True).count() == 1, f"no navigation link {label!r}"
    for path, label, title, charts in PAGES:
        if path:  # through the sidebar for the first pages, by URL for the rest (both are how users arrive)
            if path in ("models", "embeddings"):
                nav.get_by_text(label, exact=True).click()
                page.wait_for_url(re.compile(rf"/{path}$"))
                wait_idle(page, SLOW_S)
            else:
                open_page(page, server, path)
        heading(page, title).first.wait_for(state="visible")
        wait_idle(page, SLOW_S)
        if charts:
            page.locator(".js-plotly-plot").nth(charts - 1).wait_for(timeout=SLOW_S * 1000)
            wait_idle(page, SLOW_S)
        check_clean(page, server, label)
        assert page.locator(".js-plotly-plot").count() >= charts, f"{label}: fewer than {charts} charts"
        screenshot(page, artifacts, path or "start", FULL)


#: [x, y, row id (customdata[0])] of every drawn point of a chart.
XY_ROWS_JS = """gd => gd._fullData.flatMap(t => Array.from(t.x, (x, i) => [x, t.y[i], Number(t.customdata[i][0])]))"""
#: Row ids of a chart's highlighted points (app/linked_charts.js records the rows it draws on its highlight canvas).
HIGHLIGHTED_JS = """gd => Array.from(gd.__stdclHighlighted || [])"""
#: The highlight canvas's alpha at the first highlighted point, and the CSS opacity of the chart's WebGL points.
PAINTED_JS = """gd => {
  const fl = gd._fullLayout, row = gd.__stdclHighlighted[0];
  const canvas = gd.parentElement.querySelector('canvas.stdcl-highlight'), ratio = canvas.width / fl.width;
  for (const t of gd._fullData)
    for (let i = 0; i < t.x.length; i++)
      if (t.customdata && Number(t.customdata[i][0]) === row) {
        const x = (fl._size.l + fl.xaxis.l2p(t.x[i])) * ratio, y = (fl._size.t + fl.yaxis.l2p(t.y[i])) * ratio;
        return {alpha: canvas.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data[3],
                dim: Number(gd.querySelector('.gl-canvas-context, .scatterlayer').style.opacity)};
      }
  return null;
}"""


def test_embeddings_box_selection_is_linked(page, server, artifacts):
    open_page(page, server, "embeddings")
    wait_charts(page, "A: spatial s", "A: temporal t")
    charts = page.locator(".js-plotly-plot")
    spatial, temporal = charts.filter(has_text="A: spatial s"), charts.filter(has_text="A: temporal t")
    assert spatial.count() == 1 and temporal.count() == 1
    # the spatial chart's points, read before the selection's rerun starts replacing the chart
    points = spatial.evaluate(XY_ROWS_JS)
    assert temporal.evaluate(HIGHLIGHTED_JS) == []  # nothing highlighted yet
    # box select: the modebar's Box Select tool (the charts start in pan mode), then a mouse drag
    box = box_select(page, spatial, (0.15, 0.15, 0.65, 0.65), SLOW_S)  # the data-space box plotly selected
    expected = sorted(r for x, y, r in points if box["x"][0] <= x <= box["x"][1] and box["y"][0] <= y <= box["y"][1])
    assert 0 < len(expected) < len(points), (box, len(expected))

    count = page.get_by_text(re.compile(r"[\d,]+ selected"))
    count.first.wait_for()
    wait_idle(page, SLOW_S)
    check_clean(page, server, "embeddings after a selection")
    n = int(re.search(r"([\d,]+) selected", count.first.inner_text()).group(1).replace(",", ""))
    assert n == len(expected)
    # the temporal chart highlights exactly the samples boxed in the spatial one (and so does the spatial one)
    assert temporal.evaluate(HIGHLIGHTED_JS) == expected
    assert spatial.evaluate(HIGHLIGHTED_JS) == expected
    painted = temporal.evaluate(PAINTED_JS)  # drawn on the highlight canvas; the chart's own points dimmed
    assert painted["alpha"] > 0 and 0 < painted["dim"] < 1, painted
    b_temporal = charts.filter(has_text="B: temporal t")
    if b_temporal.count():  # model B drawn below: the same samples (by name) are highlighted there too
        assert len(b_temporal.evaluate(HIGHLIGHTED_JS)) == n
    screenshot(page, artifacts, "embeddings-selection", FULL)


#: Page position, row and sample name of each drawn point of a chart (name: the hover text's first line).
POINTS_JS = """gd => {
  const out = [], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  for (const t of gd._fullData)
    for (let i = 0; i < t.x.length; i++)
      out.push({x: box.left + xa._offset + xa.l2p(t.x[i]), y: box.top + ya._offset + ya.l2p(t.y[i]),
                row: Number(t.customdata[i][0]), name: String(t.hovertext[i]).split('<br>')[0]});
  return out;
}"""


def test_embeddings_click_opens_the_inspector(page, server, artifacts):
    """In the charts' default mode a click on a point selects it and opens the sample inspector."""
    open_page(page, server, "embeddings")
    wait_charts(page, "A: spatial s", "A: temporal t")
    spatial = page.locator(".js-plotly-plot").filter(has_text="A: spatial s")
    spatial.scroll_into_view_if_needed()
    assert spatial.evaluate("gd => gd._fullLayout.dragmode") == "pan"
    points = spatial.evaluate(POINTS_JS)
    target = points[len(points) // 2]
    page.mouse.move(target["x"], target["y"])
    page.mouse.click(target["x"], target["y"])
    page.get_by_text("1 selected").first.wait_for()
    wait_idle(page, SLOW_S)
    check_clean(page, server, "embeddings after a click")
    # the point selected is one under the cursor (points may overlap), highlighted in the other space too
    temporal = page.locator(".js-plotly-plot").filter(has_text="A: temporal t")
    (row,) = temporal.evaluate(HIGHLIGHTED_JS)
    hit = next(p for p in points if p["row"] == row)
    assert abs(hit["x"] - target["x"]) < 8 and abs(hit["y"] - target["y"]) < 8, (hit, target)
    headings = page.locator('[data-testid="stHeading"]').all_inner_texts()
    assert any(h.strip().startswith(f"Sample {hit['name']}") for h in headings), (hit, headings)
    screenshot(page, artifacts, "embeddings-inspector", FULL)


def test_finetune_form_follows_the_checkpoint(page, server, artifacts):
    """Switching the checkpoint resets what the browser shows (not only the server's copy): the inputs,
    the plan and the command preview carry the new checkpoint's learning rate and batch."""
    open_page(page, server, "finetune")
    heading(page, "Fine-tune").wait_for()

    def pick(label: str) -> None:
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Start from checkpoint").click()
        page.get_by_role("option", name=label, exact=True).click()
        wait_idle(page)

    def number(label: str):
        return page.locator('[data-testid="stNumberInput"]').filter(has_text=label).locator("input")

    pick("bundled: synthetic_ctrgcn_stdcl")
    page.get_by_text("steps of 16").first.wait_for()  # CTR-GCN was trained with batch 16
    assert number("Learning rate").input_value() == "0.010000"
    lr = number("Learning rate")
    lr.fill("0.5")
    lr.press("Enter")
    wait_idle(page)
    page.get_by_text("is 50x the fine-tuning default 0.01").first.wait_for()
    pick("bundled: synthetic_hcn_stdcl")
    page.get_by_text("steps of 32").first.wait_for()
    assert number("Learning rate").input_value() == "0.000100" and number("Batch size").input_value() == "32"
    assert page.get_by_text("fine-tuning default").count() == 0
    page.get_by_text("Command of the job").click()
    wait_idle(page)
    code = page.locator('[data-testid="stCode"]').last.inner_text()
    lines = [ln.strip().rstrip("\\").strip() for ln in code.splitlines()]
    assert "optim.lr=0.0001" in lines and "train.batch_size=32" in lines and "--encoder hcn" in lines
    check_clean(page, server, "fine-tune after a checkpoint change")


def test_finetune_start_cancel_and_reload(page, server, artifacts):
    open_page(page, server, "finetune")
    heading(page, "Fine-tune").wait_for()
    page.get_by_text("No fine-tuning job yet").wait_for()
    # a tiny run: a fixed number of steps, tiny data and head (the Advanced box)
    page.locator('[data-testid="stRadio"]').filter(has_text="Length").get_by_text("steps", exact=True).click()
    wait_idle(page)
    steps = page.locator('[data-testid="stNumberInput"]').filter(has_text="Steps").locator("input")
    steps.fill("500")
    steps.press("Enter")
    wait_idle(page)
    page.get_by_text("Advanced", exact=True).click()
    box = page.locator('[data-testid="stTextArea"] textarea')
    box.fill("\n".join(TINY))
    box.press("Control+Enter")
    wait_idle(page)
    # the plan follows the settings (waiting for it is waiting for the rerun they caused)
    page.get_by_text("130 training items, 13 validation and 57 test samples, 13 classes: 500 steps of 8").first.wait_for()
    wait_idle(page)
    check_clean(page, server, "fine-tune settings")

    page.get_by_role("button", name="Start", exact=True).click()
    running = page.locator("h4", has_text="Job running:")
    running.wait_for()
    assert page.get_by_role("button", name="Start", exact=True).is_disabled()  # one job at a time
    screenshot(page, artifacts, "finetune-running", FULL)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator("h4", has_text="Job cancelled:").wait_for()
    wait_idle(page)
    check_clean(page, server, "fine-tune after cancel")

    page.reload()  # the job lives in files: a reloaded page (a new session) reattaches to it
    wait_idle(page, SLOW_S)
    page.locator("h4", has_text="Job cancelled:").wait_for()
    assert page.locator("h4", has_text="Job running:").count() == 0
    check_clean(page, server, "fine-tune after reload")
    screenshot(page, artifacts, "finetune-cancelled", FULL)


def test_results_page_shows_the_committed_records(page, server, artifacts):
    """The committed NW-UCLA records (their run directories are not in a clone): the table, the curves,
    and opening a cell refused with the rerun command."""
    open_page(page, server, "results")
    heading(page, "Results: experiment grids").first.wait_for(state="visible")
    wait_idle(page, SLOW_S)
    check_clean(page, server, "Results")
    assert page.locator('[data-testid="stDataFrame"]').count() == 1
    assert page.locator(".js-plotly-plot").count() == 1
    curves = page.locator(".js-plotly-plot").first.evaluate("gd => gd.data.map(t => t.name).filter(Boolean)")
    assert {"baseline", "STD-CL"} <= set(curves)
    button = page.get_by_role("button", name="Open in the analysis pages")
    notice = page.get_by_text("only the record is kept")
    # in a clone the runs are absent: the cell cannot be opened, and the page says how to rerun it
    assert button.is_disabled() == (notice.count() > 0)
    screenshot(page, artifacts, "results", FULL)


#: Page rectangles of an animated skeleton's parts: the play / pause buttons, the slider rail, its "frame N"
#: label and the 3-D scene.
SKELETON_PARTS_JS = """gd => {
  const r = el => { const b = el.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const box = gd.getBoundingClientRect(), s = gd._fullLayout._size;  // the plot area the scene fills
  return {buttons: [...gd.querySelectorAll('g.updatemenu-button')].map(r),
          rail: [...gd.querySelectorAll('rect.slider-rail-rect')].map(r),
          label: [...gd.querySelectorAll('text.slider-label')].filter(t => t.textContent.startsWith('frame ')).map(r),
          scene: [[box.left + s.l, box.top + s.t, box.left + s.l + s.w, box.top + s.t + s.h]]};
}"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_skeleton_controls_cover_nothing(page, server, artifacts):
    """The skeleton widget's play / pause buttons, frame label and slider do not overlap one another, and
    all of them sit below the drawing (the same widget on every page)."""
    open_page(page, server, "")
    skel = page.locator(".js-plotly-plot").filter(has=page.locator("g.updatemenu-button")).first
    skel.scroll_into_view_if_needed()
    parts = skel.evaluate(SKELETON_PARTS_JS)
    assert len(parts["buttons"]) == 2 and parts["rail"] and parts["label"] and parts["scene"], parts
    controls = parts["buttons"] + parts["rail"] + parts["label"]
    assert not any(_overlap(b, c) for b in parts["buttons"] for c in parts["rail"] + parts["label"]), parts
    assert not _overlap(*parts["buttons"]), parts
    scene = parts["scene"][0]
    assert all(c[1] >= scene[3] - 1 for c in controls), parts  # below the drawing, not over its feet
    screenshot(page, artifacts, "start-skeleton", False)
