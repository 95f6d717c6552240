"""Linked plotly charts whose selection is highlighted in the browser (a Streamlit Components v2 component,
``app/linked_charts.js``).

:func:`linked_chart` draws one figure; charts of the same ``group`` are linked: a box / lasso selection or a
click in one highlights the samples in all of them in place (selected points drawn larger and outlined on a
canvas above each chart, the chart's own points dimmed, as the figure's ``layout.meta["highlight"]`` says;
plotly recalculates nothing) and then reports the selected rows to Python
(``on_select``), whose rerun sends the same figures again, so the browser does not redraw them (Streamlit
re-runs a component only when its data changes, and a repeated large element travels as a cached
reference). :func:`linked_selection` hands the browser the selection Python holds (a name search, *Clear*,
a revisit): a small element of its own, so a new selection never re-sends a figure. It also carries the
selected samples a chart leaves out (a stratified subsample of a split too large to draw whole), so those are
drawn highlighted too.

Each point's link id is ``customdata[1]`` when the figure has that column (model B's charts: A's row of the
same sample), else ``customdata[0]``. plotly.js is the copy bundled with the plotly Python package, served by
this app's own server: nothing is fetched from the internet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
import streamlit.components.v1 as components_v1
from streamlit import config as st_config

PLOTLY_JS_DIR = Path(plotly.__file__).resolve().parent / "package_data"
JS = (Path(__file__).resolve().with_name("linked_charts.js")).read_text(encoding="utf-8")
COMPONENT = "stdcl_linked_charts"
#: The selection a chart reports (the component's trigger): ``{"rows", "seq", "epoch", "click"}``.
SELECT_EVENT = "select"

_mount = st.components.v2.component(COMPONENT, js=JS, isolate_styles=False)  # plotly's CSS is global


def plotly_js_url() -> str:
    """Where the browser loads plotly.js from: the plotly package's own ``plotly.min.js``, served by this
    Streamlit server as the files of a (v1) component declared on that folder."""
    name = components_v1.declare_component(f"plotlyjs-{plotly.__version__}", path=str(PLOTLY_JS_DIR)).name
    base = str(st_config.get_option("server.baseUrlPath") or "").strip("/")
    return f"{'/' + base if base else ''}/component/{name}/plotly.min.js"


def figure_json(fig: go.Figure, dark: bool = False) -> str:
    """The figure as the browser reads it (plotly's JSON, typed arrays kept compact), in a plain template that
    suits the app's light or ``dark`` theme (``st.plotly_chart`` would apply Streamlit's own)."""
    fig.update_layout(template="plotly_dark" if dark else "plotly_white", paper_bgcolor="rgba(0,0,0,0)")
    return pio.to_json(fig, validate=False)


def dark_theme() -> bool:
    """Whether the viewer's Streamlit theme is dark."""
    return getattr(st.context.theme, "type", None) == "dark"


def chart_data(figure: str, group: str, *, linked: bool = True, config: dict | None = None,
               height: int | None = None, chart_id: str = "") -> dict[str, Any]:
    """The component data of a chart: ``figure`` (:func:`figure_json`) only changes with the figure;
    ``chart_id`` names the chart in a selection's ``extra`` points, ``sig`` (a digest of the figure) the
    figure those points belong to."""
    return {"kind": "chart", "group": group, "figure": figure, "linked": bool(linked), "config": config or {},
            "height": height, "plotly": plotly_js_url(), "id": chart_id,
            "sig": hashlib.blake2b(figure.encode(), digest_size=8).hexdigest()}


def linked_chart(data: dict[str, Any], *, key: str, on_select: Callable[..., None] | None = None,
                 args: Sequence[Any] = ()) -> Any:
    """Draw a chart (``data`` from :func:`chart_data`); ``on_select(*args)`` runs before the rerun that a
    selection in it causes, and reads it with :func:`reported_selection` (``key``)."""
    callback = (lambda: on_select(*args)) if on_select is not None else (lambda: None)
    return _mount(key=key, data=data, on_select_change=callback)


def linked_selection(group: str, rows: Sequence[int], seq: int = 0, epoch: str | None = None, *,
                     key: str, extra: dict[str, dict] | None = None) -> None:
    """Hand the browser the selection of ``group`` (link ids); ``seq`` / ``epoch``: the last selection
    reported from the browser that Python has adopted (an older one is not applied over a newer one).
    ``extra``: per chart id, selected samples the chart does not draw (a subsample of a large split), as
    :func:`analysis.figures.points_outside` gives them plus the chart's ``sig``; the browser draws those
    of them that are selected on top of that chart, at their own coordinates."""
    _mount(key=key, data={"kind": "selection", "group": group, "rows": [int(r) for r in rows], "seq": int(seq),
                          "epoch": epoch, "extra": extra or {}})


def reported_selection(key: str) -> dict[str, Any] | None:
    """The selection the chart ``key`` reported in this run (``rows``, ``seq``, ``epoch``, ``click``), or None."""
    state = st.session_state.get(key)
    value = state.get(SELECT_EVENT) if isinstance(state, dict) else getattr(state, SELECT_EVENT, None)
    return value if isinstance(value, dict) else None
