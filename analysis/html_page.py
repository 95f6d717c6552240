"""Self-contained HTML pages for the analysis reports (``stdcl analyze report`` and ``evolution``): plotly.js
inlined once in the head (no network needed to open them), small escaped tables, and folder outputs that are
either complete or absent (built beside the target, renamed into place; a folder that is not such a report is
never overwritten)."""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from stdcl.errors import ConfigError

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1500px;padding:0 24px;
color:#222}
h1{margin-top:24px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:40px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5}
td.l,th.l{text-align:left}
.grid{display:grid;gap:8px}.g2{grid-template-columns:repeat(2,minmax(0,1fr))}
.g3{grid-template-columns:repeat(3,minmax(0,1fr))}
.note{color:#555;font-size:13px;max-width:1100px}.good{color:#1a7f37}.bad{color:#c62828}
nav a{margin-right:14px}
"""


def esc(v: Any) -> str:
    return html.escape(str(v))


def num(v: Any, digits: int = 4, signed: bool = False) -> str:
    """A number for a table cell (``-`` for None / NaN)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):+d}" if signed else str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-" if v is None else esc(v)
    if not np.isfinite(f):
        return "-"
    return f"{f:+.{digits}f}" if signed else f"{f:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns left-aligned; cells are escaped unless ``("html", markup)``."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="l"' if i < left else ""
        text = v[1] if isinstance(v, tuple) and v and v[0] == "html" else esc(v)
        return f"<{tag}{cls}>{text}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Page:
    """Collects HTML parts; every figure is a div drawn by the plotly.js inlined once in the head."""

    def __init__(self, generator: str) -> None:
        self.generator = generator
        self.parts: list[str] = []
        self.figures = 0

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def fig(self, fig, auto_play: bool = False) -> str:
        self.figures += 1
        return fig.to_html(full_html=False, include_plotlyjs=False, auto_play=auto_play,
                           config={"displaylogo": False, "responsive": True})

    def render(self, title: str) -> str:
        from plotly.offline import get_plotlyjs

        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="generator" content="{self.generator}"><title>{esc(title)}</title>'
                f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
                + "\n".join(self.parts) + "</body></html>\n")


def check_out_dir(out: Path, generator: str) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not a ``generator`` report."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        index = out / "index.html"
        if not (index.is_file() and f'content="{generator}"' in index.read_text(errors="replace")[:2000]):
            raise ConfigError(f"{out}: a non-empty folder that is not a report; choose another --out")


def write_folder(out: Path, generator: str, fill: Callable[[Path], None]) -> Path:
    """Build a report folder with ``fill(tmp)`` beside ``out`` and rename it into place; returns ``out``."""
    check_out_dir(out, generator)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder mode
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder onto ``out`` (an old report there is removed after the swap)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "report")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
