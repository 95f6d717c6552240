"""The app in a real browser: a Streamlit server on a free port and Debian's Chromium driven by Playwright
(``playwright install`` cannot download here, so the system browser is used). The browser tests
(``tests/support/browser.py``) and ``stdcl bench analysis`` (:mod:`analysis.bench_app`) share it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
CHROMIUM = Path("/usr/bin/chromium")
#: No sandbox (containers, root), no GPU, and nothing that reaches the network (the machine is offline).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
#: The app is idle: connected, no script (or fragment) run in progress, and no linked chart (app/linked_charts.js)
#: still being drawn.
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')
    && !document.querySelector('[data-testid="stSkeleton"]')
    && !document.querySelector('[data-stdcl-pending]');
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StreamlitServer:
    """``python -m streamlit run app/main.py`` on a free localhost port, started from the repository root
    (so ``.streamlit/config.toml`` applies); its output goes to ``log``."""

    def __init__(self, script: str | Path, env: dict[str, str], log: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(self.port),
               "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ) | env, stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200 and r.read().strip() == b"ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"streamlit not healthy after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        if not self._out.closed:
            self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def wait_idle(page: Any, timeout: float = 180.0) -> None:
    """Wait until the app has finished running (a script run or a fragment), never a fixed sleep."""
    page.wait_for_function(IDLE_JS, timeout=timeout * 1000, polling=100)


def exceptions(page: Any) -> list[str]:
    """Texts of the exception boxes Streamlit shows for uncaught errors."""
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def press_box(page: Any, chart: Any, corners: tuple[float, float, float, float]) -> None:
    """Pick the modebar's Box Select tool of ``chart`` (a Playwright locator of a ``.js-plotly-plot``; the app's
    charts start in pan mode) and drag from corner to corner, given as fractions ``(x0, y0, x1, y1)`` of its plot
    area, leaving the mouse button pressed (the caller releases it: ``page.mouse.up()``). What plotly selects
    then lands in ``window.__boxRange`` (the data-space box) and ``window.__boxRows`` (the sorted rows)."""
    chart.scroll_into_view_if_needed()
    chart.hover()
    chart.locator('.modebar-btn[data-title="Box Select"]').click()
    if chart.evaluate("gd => gd._fullLayout.dragmode") != "select":
        raise RuntimeError("the chart did not switch to Box Select")
    chart.evaluate("""gd => { window.__boxRange = null; window.__boxRows = null; gd.on('plotly_selected', e => {
      window.__boxRange = e && e.range;
      window.__boxRows = e ? e.points.filter(p => p.customdata).map(p => p.customdata[0]).sort((a, b) => a - b) : [];
    }); }""")
    area = chart.locator(".nsewdrag").first.bounding_box()
    x0, y0 = area["x"] + corners[0] * area["width"], area["y"] + corners[1] * area["height"]
    x1, y1 = area["x"] + corners[2] * area["width"], area["y"] + corners[3] * area["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
