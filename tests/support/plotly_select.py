"""A box selection in a plotly chart of the app, as a user makes it (browser tests)."""

from __future__ import annotations

from typing import Any

from analysis.app_browser import press_box


def box_select(page: Any, chart: Any, corners: tuple[float, float, float, float], timeout_s: float = 120.0) -> dict:
    """Pick the modebar's Box Select tool of ``chart`` (a Playwright locator of a ``.js-plotly-plot``; the app's
    charts start in pan mode) and drag from corner to corner, given as fractions ``(x0, y0, x1, y1)`` of its plot
    area; returns the data-space box plotly selected (``{"x": [lo, hi], "y": [lo, hi]}``)."""
    press_box(page, chart, corners)
    page.mouse.up()
    page.wait_for_function("() => !!window.__boxRange", timeout=timeout_s * 1000)
    return page.evaluate("() => window.__boxRange")
