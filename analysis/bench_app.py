"""The browser part of ``stdcl bench analysis``: how fast the Embeddings page paints N points and follows a
box selection, measured in headless Chromium against ``streamlit run app/main.py``.

For each size the Models page is set as a user sets it (dataset "plain numpy" at the benchmark's file,
the sample budget N, no model B), then:

- ``paint_first_s``: from the click on "Embeddings" in the sidebar until both linked charts (A's spatial
  and temporal spaces) hold all N points, the app idle. The server has the embeddings and projections
  in its on-disk cache (the benchmark computed them), not yet in memory;
- ``paint_warm_s``: the same after going back to the Models page (everything in memory: a revisit);
- ``select_s``: from releasing the mouse after a Box Select drag over the spatial chart until the temporal
  chart highlights the same samples as the spatial one, the app idle (the browser highlights them on a canvas
  above every linked chart, :mod:`app.linked_charts`, then the server's rerun updates the rest of the page:
  the count, the table, the inspector; no figure is sent again); ``highlight_s``: the same until both charts
  show it, without waiting for that rerun; ``selected`` samples, ``runs`` script runs it took.

Software WebGL (SwiftShader: no GPU in the browser) on a shared machine: compare sizes within one run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from analysis.app_browser import (
    APP,
    CHROMIUM,
    IDLE_JS,
    StreamlitServer,
    exceptions,
    launch_chromium,
    press_box,
    wait_idle,
)
from analysis.embedding_figure import marker_scale
from stdcl.errors import ConfigError

TITLES = ("A: spatial s", "A: temporal t")
#: Both linked charts hold ``n`` points and the app is idle.
PAINTED_JS = """([n, titles, idle]) => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')]
    .filter(gd => gd._fullData && gd.layout && gd.layout.title && titles.some(t => gd.layout.title.text.includes(t)));
  const count = gd => gd._fullData.filter(t => t.customdata).reduce((s, t) => s + t.x.length, 0);
  return plots.length === titles.length && plots.every(gd => count(gd) === n) && eval(idle)();
}"""
#: Rows (customdata[0]) one chart draws highlighted (app/linked_charts.js records them as it draws them on
#: its highlight canvas); ``threshold`` is unused (kept for the callers' signature).
HIGHLIGHTED_JS = """(gd, threshold) => Array.from(gd.__stdclHighlighted || [])"""
#: Both charts highlight the same non-empty set of samples (``want``, sorted, when it is not null) and the app
#: is idle.
LINKED_JS = """([titles, threshold, idle, highlighted, want]) => {
  const find = t => [...document.querySelectorAll('.js-plotly-plot')]
    .find(gd => gd._fullData && gd.layout && gd.layout.title && gd.layout.title.text.includes(t));
  const [a, b] = titles.map(find);
  if (!a || !b) return false;
  const h = eval(highlighted);
  const ra = h(a, threshold), rb = want || h(b, threshold);
  const same = (x, y) => x.length === y.length && x.every((r, i) => r === y[i]);
  return ra.length > 0 && same(ra, rb) && same(h(b, threshold), rb) && eval(idle)();
}"""
#: Count the script runs that ended (the app's script state leaving "running") in ``window.__stdclRuns``;
#: installed once. Every change is a mutation record, so a run that starts and ends between two checks counts.
COUNT_RUNS_JS = """() => {
  if (window.__stdclRuns !== undefined) return window.__stdclRuns;
  window.__stdclRuns = 0;
  const app = document.querySelector('[data-testid="stApp"]');
  new MutationObserver(records => { for (const r of records) if (r.oldValue === 'running') window.__stdclRuns++; })
    .observe(app, {attributes: true, attributeOldValue: true, attributeFilter: ['data-test-script-state']});
  return 0;
}"""
#: A script run ended after ``before`` had, and the app is idle.
RAN_JS = """([before, idle]) => window.__stdclRuns > before && eval(idle)()"""
#: Resolves after the browser has painted the next frame.
NEXT_FRAME_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def run_after(page: Any, action, timeout: float) -> None:
    """Do ``action`` (a click, a key) and wait for the script run it causes to finish."""
    before = page.evaluate(COUNT_RUNS_JS)
    action()
    page.wait_for_function(RAN_JS, arg=[before, IDLE_JS], timeout=timeout * 1000, polling=50)


def set_up_models_page(page: Any, data: Path, n: int, timeout: float) -> None:
    """On the Models page, as a user sets it: plain numpy data at ``data``, budget ``n``, no checkpoint B
    (only what differs is changed: an unchanged widget causes no run to wait for)."""
    run_after(page, lambda: page.get_by_role("link", name="Models and data").click(), timeout)
    b = page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint B (comparison)")
    if b.locator("input").input_value() != "(none)":
        b.click()
        run_after(page, lambda: page.get_by_role("option", name="(none)", exact=True).click(), timeout)
    dataset = page.locator('[data-testid="stRadio"]').filter(has_text="Dataset")
    kind = dataset.get_by_role("radio", name="plain numpy (.npz)")
    if not kind.is_checked():
        run_after(page, lambda: kind.check(force=True), timeout)
    for widget, label, value in (("stTextInput", "Path", str(data)), ("stNumberInput", "Max samples analysed", str(n))):
        box = page.locator(f'[data-testid="{widget}"]').filter(has_text=label).locator("input")
        if box.input_value() != value:
            box.fill(value)
            run_after(page, lambda: box.press("Enter"), timeout)  # noqa: B023  (called at once)
        if box.input_value() != value:
            raise RuntimeError(f"the Models page did not take {label} = {value}")
    page.get_by_text("reads numpy test").first.wait_for(timeout=timeout * 1000)


def open_embeddings(page: Any, n: int, timeout: float) -> float:
    """Seconds from the sidebar click until both charts hold ``n`` points and the app is idle."""
    t0 = time.monotonic()
    page.get_by_role("link", name="Embeddings").click()
    page.wait_for_function(PAINTED_JS, arg=[n, list(TITLES), IDLE_JS], timeout=timeout * 1000, polling=50)
    page.evaluate(NEXT_FRAME_JS)  # painted
    return time.monotonic() - t0


def chart(page: Any, title: str) -> Any:
    """The plotly chart whose title holds ``title``."""
    return page.locator(".js-plotly-plot").filter(has_text=title).first


def highlighted(page: Any, title: str, n: int) -> list[int]:
    """Rows the chart ``title`` draws highlighted (larger than its ``n`` points' base size)."""
    return chart(page, title).evaluate(HIGHLIGHTED_JS, marker_scale(n)[0] + 2)


def wait_linked(page: Any, n: int, timeout: float, want: list[int] | None = None, idle: bool = True) -> None:
    """Wait until both charts of ``n`` points highlight the same samples (``want``, when given), drawn, and (with
    ``idle``) the app idle."""
    threshold = marker_scale(n)[0] + 2  # highlighted: base size + 4; the others: base - 1
    page.wait_for_function(LINKED_JS, arg=[list(TITLES), threshold, IDLE_JS if idle else "() => true",
                                           HIGHLIGHTED_JS, want], timeout=timeout * 1000, polling=20)
    page.evaluate(NEXT_FRAME_JS)


def box_select(page: Any, n: int, timeout: float, box: tuple[float, float] = (0.4, 0.6)) -> dict[str, Any]:
    """Drag a Box Select over the spatial chart (``box``: where it starts and ends along both axes, as fractions
    of the plot area); ``select_s``: seconds from releasing the mouse until both charts show the selection and
    the page's rerun is done (``highlight_s``: until both charts show it), ``selected``: samples highlighted,
    ``runs``: script runs it took, ``range``: the data-space box plotly reported and ``picked``: the rows it
    selected."""
    press_box(page, chart(page, TITLES[0]), (box[0], box[0], box[1], box[1]))
    before = page.evaluate(COUNT_RUNS_JS)
    t0 = time.monotonic()
    page.mouse.up()
    wait_linked(page, n, timeout, idle=False)
    shown = time.monotonic() - t0
    # the selection reaches the server, whose rerun updates the rest of the page: wait for that run to end
    page.wait_for_function(RAN_JS, arg=[before, IDLE_JS], timeout=timeout * 1000, polling=20)
    wait_linked(page, n, timeout)
    seconds = time.monotonic() - t0
    return {"select_s": seconds, "highlight_s": shown, "selected": len(highlighted(page, TITLES[1], n)),
            "runs": page.evaluate("() => window.__stdclRuns") - before,
            "range": page.evaluate("() => window.__boxRange"), "picked": page.evaluate("() => window.__boxRows")}


def browser_timings(data: Path, sizes: Mapping[int, int], cache: Path, workdir: Path,
                    timeout: float = 600.0) -> dict[int, dict[str, Any]]:
    """Paint and selection seconds of the Embeddings page at each sample budget of ``sizes`` (budget -> the
    samples it analyses: a stratified subset holds about the budget), see the module docstring; on a
    server reading the benchmark's cache ``cache``; the server's log goes to ``workdir/server.log``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise ConfigError("the browser timings need the playwright package (pip install playwright)") from e
    if not CHROMIUM.is_file():
        raise ConfigError(f"{CHROMIUM}: no Chromium for the browser timings (apt-get install -y chromium)")
    server = StreamlitServer(APP, {"STDCL_CACHE": str(cache), "STDCL_RUNS": str(workdir / "runs")},
                             workdir / "server.log")
    out: dict[int, dict[str, Any]] = {}
    try:
        server.wait_healthy()
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(timeout * 1000)
            page.goto(server.url + "/models")
            wait_idle(page, timeout)
            for budget, n in sizes.items():
                set_up_models_page(page, data, budget, timeout)
                row = {"paint_first_s": open_embeddings(page, n, timeout)}
                run_after(page, lambda: page.get_by_role("link", name="Models and data").click(), timeout)
                row["paint_warm_s"] = open_embeddings(page, n, timeout)
                row.update({k: v for k, v in box_select(page, n, timeout).items() if k not in ("range", "picked")})
                if exceptions(page):
                    raise RuntimeError(f"the app failed at {n:,} points: {exceptions(page)[0]}\n{server.tail()}")
                run_after(page, lambda: page.get_by_role("button", name="Clear selection").click(), timeout)
                out[budget] = row
            browser.close()
    finally:
        server.stop()
    return out
