"""AppTest helpers for the Embeddings page's linked charts (:mod:`app.linked_charts`, a Streamlit Components v2
component): AppTest runs no JavaScript, so these read what the page hands the browser, each chart's figure and
the selection element's rows, and work out what the browser highlights from them (the points whose link id,
``customdata[1]`` when present, else ``customdata[0]``, is selected); a selection made in the browser is sent
as the component's trigger event, exactly as the browser reports it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tests.support.app import arr

SELECTION_KEY = "emb_selection"


def _elements(at) -> dict[str, Any]:
    return {el.key: el for el in at.get("bidi_component") if el.proto.component_name == "stdcl_linked_charts"}


def chart_data(at) -> dict[str, dict]:
    """The component data of every linked chart, by key (``figure`` still a JSON string)."""
    out = {}
    for key, el in _elements(at).items():
        data = json.loads(el.proto.json)
        if data["kind"] == "chart":
            out[key] = data
    return out


def charts(at) -> dict[str, dict]:
    """The plotly figure of every linked chart, by key."""
    return {key: json.loads(d["figure"]) for key, d in chart_data(at).items()}


def selection(at) -> dict:
    """What the selection element hands the browser: ``group``, ``rows`` (A's rows), ``seq``, ``epoch``."""
    return json.loads(_elements(at)[SELECTION_KEY].proto.json)


def links(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rows (``customdata[:, 0]``) and link ids of every point of a figure, trace after trace."""
    rows, ids = [], []
    for tr in spec["data"]:
        if "customdata" not in tr:
            continue
        cd = arr(tr["customdata"]).reshape(len(arr(tr["x"])), -1).astype(int)
        rows.append(cd[:, 0])
        ids.append(cd[:, -1])
    return np.concatenate(rows), np.concatenate(ids)


def highlighted(at, key: str) -> set[int]:
    """The rows of chart ``key`` the browser highlights: those whose link id is in the selection (none when
    the chart is not linked), and the selection's extra points for that chart (samples its subsample leaves
    out) when they belong to the figure drawn."""
    data = chart_data(at)[key]
    if not data["linked"]:
        return set()
    sel = selection(at)
    rows, ids = links(json.loads(data["figure"]))
    out = set(rows[np.isin(ids, sel["rows"])].tolist())
    extra = sel.get("extra", {}).get(key)
    if extra and extra["sig"] == data["sig"]:
        out |= {r for r, i in zip(extra["rows"], extra["ids"]) if i in set(sel["rows"])}
    return out


def send_select(at, key: str, rows: list[int], click: bool = False, seq: int = 1, epoch: str = "apptest"):
    """Run the app as after a selection of ``rows`` (link ids) in chart ``key`` in the browser."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    el = _elements(at)[key]
    payload = [{"event": "select", "value": {"rows": [int(r) for r in rows], "seq": seq, "epoch": epoch,
                                              "click": click}}]
    states = at._tree.get_widget_states()  # what AppTest would send for the other widgets
    states.widgets.append(WidgetState(id=f"$$STREAMLIT_INTERNAL_KEY_{el.proto.id}__events",
                                      json_trigger_value=json.dumps(payload)))
    at._run(states)
    assert not at.exception, at.exception
    return at
