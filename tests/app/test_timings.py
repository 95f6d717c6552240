"""Benchmark (opt-in): how long a newcomer waits, measured in a real browser on a fresh server.

A cold server with empty caches: the Start page's first paint (its heading) and its complete run,
the Embeddings page of the default pair, then choosing another bundled checkpoint as A on the
Models page (B follows: its paired baseline) and the Embeddings page of that pair. Seconds go to
``$STDCL_ARTIFACTS/app-timings.json`` and are printed; the README reports them. Not part of the
suite (minutes of CPU)::

    STDCL_APP_TIMINGS=1 STDCL_ARTIFACTS=/tmp/timings python -m pytest -q -s -n 0 tests/app/test_timings.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, ROOT, StreamlitServer, exceptions, launch_chromium, wait_idle

if not os.environ.get("STDCL_APP_TIMINGS"):
    pytest.skip("a benchmark: set STDCL_APP_TIMINGS=1 to run it", allow_module_level=True)
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

OTHER_PAIR = ("bundled: synthetic_agcn_stdcl", "bundled: synthetic_agcn_baseline")
LIMIT_S = 900.0


def test_first_paint_and_pair_switch(tmp_path):
    out = Path(os.environ.get("STDCL_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    env = {"STDCL_RUNS": str(tmp_path / "runs"), "STDCL_CACHE": str(tmp_path / "cache")}
    t_server = time.monotonic()
    srv = StreamlitServer(ROOT / "app" / "main.py", env, tmp_path / "server.log")
    times: dict[str, float] = {}
    try:
        srv.wait_healthy()
        times["server_start_s"] = time.monotonic() - t_server
        with sync_api.sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(LIMIT_S * 1000)

            def timed(name: str, action, done) -> None:
                t0 = time.monotonic()
                action()
                done()
                times[name] = round(time.monotonic() - t0, 2)
                assert not exceptions(page), f"{name}: {exceptions(page)[0]}\n{srv.tail()}"

            heading = page.locator('[data-testid="stHeading"] h1', has_text="Spatial-temporal decoupling")
            timed("start_first_paint_s", lambda: page.goto(srv.url), heading.wait_for)
            timed("start_complete_s", lambda: None, lambda: wait_idle(page, LIMIT_S))
            charts = page.locator(".js-plotly-plot")
            timed("embeddings_default_pair_s", lambda: page.get_by_role("link", name="Embeddings").click(),
                  lambda: (charts.filter(has_text="B: temporal t").wait_for(), wait_idle(page, LIMIT_S)))
            page.get_by_role("link", name="Models and data").click()
            wait_idle(page, LIMIT_S)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint A (main)").click()
            page.get_by_role("option", name=OTHER_PAIR[0], exact=True).click()
            wait_idle(page, LIMIT_S)
            # B followed A to its paired baseline
            page.get_by_text(f"B is now {OTHER_PAIR[1]}, the baseline counterpart of A").wait_for()
            # through the sidebar (a page load would start a new session, with the default pair again);
            # A's charts are drawn while B's embeddings are computed
            t0 = time.monotonic()
            page.get_by_role("link", name="Embeddings").click()
            page.get_by_text(f"A = {OTHER_PAIR[0].split(': ')[1]}").wait_for()
            times["embeddings_other_pair_a_drawn_s"] = round(time.monotonic() - t0, 2)
            page.get_by_text(f"B = {OTHER_PAIR[1].split(': ')[1]}").wait_for()
            wait_idle(page, LIMIT_S)
            times["embeddings_other_pair_s"] = round(time.monotonic() - t0, 2)
            assert not exceptions(page), exceptions(page)[0]
            assert page.get_by_text(f"A = {OTHER_PAIR[0].split(': ')[1]}").count() == 1
            browser.close()
    finally:
        srv.stop()
    record = {"times_s": times, "other_pair": list(OTHER_PAIR), "samples": 858, "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "when": time.strftime("%Y-%m-%d %H:%M"),
              "load_average_at_end": os.getloadavg()[0]}
    (out / "app-timings.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
