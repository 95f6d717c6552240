"""Helpers for the browser end-to-end tests: the server and browser of :mod:`analysis.app_browser` (which
``stdcl bench analysis`` drives too), and screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.app_browser import (  # noqa: F401  (the helpers the browser tests import from here)
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE_JS,
    StreamlitServer,
    exceptions,
    free_port,
    launch_chromium,
    wait_idle,
)
from tests.support.paths import ROOT  # noqa: F401


def screenshot(page: Any, folder: Path, name: str, full: bool = True) -> Path:
    """``folder/name.png``: the whole page (the app scrolls inside its main block, so the window is
    made tall enough for it first), or with ``full=False`` what the window shows."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    if not full:
        page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]'); if (m) m.scrollTo(0, 0); }")
        page.screenshot(path=str(path))
        return path
    height = page.evaluate("""() => {
      const m = document.querySelector('[data-testid="stMain"]');
      return m ? m.scrollHeight : document.body.scrollHeight;
    }""")
    size = page.viewport_size
    if size and height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 6000)})
        try:
            page.screenshot(path=str(path), full_page=True)
        finally:
            page.set_viewport_size(size)
    else:
        page.screenshot(path=str(path), full_page=True)
    return path
