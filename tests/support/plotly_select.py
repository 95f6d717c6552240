"""A box selection in a plotly chart of the app, as a user makes it (browser tests)."""

from __future__ import annotations

from typing import Any


def box_select(page: Any, chart: Any, corners: tuple[float, float, float, float], timeout_s: float = 120.0) -> dict:
    """Pick the modebar's Box Select tool of ``chart`` (a Playwright locator of a ``.js-plotly-plot``; the app's
    charts start in pan mode) and drag from corner to corner, given as fractions ``(x0, y0, x1, y1)`` of its plot
    area; returns the data-space box plotly selected (``{"x": [lo, hi], "y": [lo, hi]}``)."""
    chart.scroll_into_view_if_needed()
    chart.hover()
    chart.locator('.modebar-btn[data-title="Box Select"]').click()
    assert chart.evaluate("gd => gd._fullLayout.dragmode") == "select"
    chart.evaluate("gd => { window.__boxRange = null; "
                   "gd.on('plotly_selected', e => { window.__boxRange = e && e.range; }); }")
    area = chart.locator(".nsewdrag").first.bounding_box()
    x0, y0 = area["x"] + corners[0] * area["width"], area["y"] + corners[1] * area["height"]
    x1, y1 = area["x"] + corners[2] * area["width"], area["y"] + corners[3] * area["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.wait_for_function("() => !!window.__boxRange", timeout=timeout_s * 1000)
    return page.evaluate("() => window.__boxRange")
