"""Helpers for the browser end-to-end test: a Streamlit server on a free port and Debian's Chromium
driven by Playwright (``playwright install`` cannot download here, so the system browser is used)."""

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
from tests.support.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
#: No sandbox (containers, root), no GPU, and nothing that reaches the network (the machine is offline).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
#: The app is idle: connected, and no script (or fragment) run in progress.
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')
    && !document.querySelector('[data-testid="stSkeleton"]');
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
