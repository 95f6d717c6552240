"""Shared helpers of the app tests (tests/test_app_*.py) and tests/test_analysis_upload.py: an isolated
environment, reference embeddings of the bundled demo pair computed without the app, and AppTest
helpers (opening a page, rerunning with session state, reading plotly charts, sending a chart selection).

Fixtures stay in the test files and call these, e.g. a module-scoped ``env`` fixture is
``yield from module_env(tmp_path_factory)``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import pytest
import torch

from analysis.datasets import AnalysisData, open_analysis_data, stratified_subset
from analysis.embeddings import Embeddings, extract_embeddings
from analysis.models import LoadedModel, bundled_models, load_model
from tests.support.paths import ROOT

APP = ROOT / "app" / "main.py"
#: A stratified subset of the 858 synthetic test samples keeps the app tests fast.
MAX_SAMPLES = 130
#: The bundled demo pair: A = the STD-CL checkpoint, B = its baseline (same encoder, data and recipe).
BUNDLED = {"A": "synthetic_hcn_stdcl", "B": "synthetic_hcn_baseline"}
#: The environment variable each app folder is read from.
FOLDER_VARS = {"cache": "STDCL_CACHE", "runs": "STDCL_RUNS", "uploads": "STDCL_UPLOADS"}


# -- environment ------------------------------------------------------------------------------------------

def point_env(mp: pytest.MonkeyPatch, folders: dict[str, Path], umap_warm_up: bool = True) -> dict[str, Path]:
    """Point the app's folders (keys of :data:`FOLDER_VARS`) at ``folders``, use one torch thread and,
    unless ``umap_warm_up``, skip the app's background UMAP JIT warm-up (CPU a page without projections
    does not need). ``app.state.RUNS_DIR`` is read at import, so a runs folder is patched there too."""
    torch.set_num_threads(1)
    for name, path in folders.items():
        mp.setenv(FOLDER_VARS[name], str(path))
    if "runs" in folders:
        mp.setattr("app.state.RUNS_DIR", folders["runs"])
    if not umap_warm_up:
        mp.setattr("analysis.projections.warm_up_umap", lambda: 0.0)
    return folders


def module_env(tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...] = ("cache", "runs"),
               umap_warm_up: bool = True) -> Iterator[dict[str, Path]]:
    """:func:`point_env` with a fresh temporary folder per name, undone afterwards; a module-scoped
    fixture is ``yield from module_env(tmp_path_factory, ...)``."""
    with pytest.MonkeyPatch.context() as mp:
        yield point_env(mp, {n: tmp_path_factory.mktemp(n) for n in names}, umap_warm_up)


# -- reference results, computed without the app ------------------------------------------------------------

class Reference(NamedTuple):
    """A bundled model, its test split and the embeddings of the stratified subset the pages analyse."""

    model: LoadedModel
    data: AnalysisData
    emb: Embeddings


def bundled_model(which: str = "A") -> LoadedModel:
    """The bundled checkpoint ``which`` (``"A"``: STD-CL, ``"B"``: baseline), loaded by path as the app does."""
    return load_model(next(r for r in bundled_models() if r.label == BUNDLED[which]).path)


def subset_embeddings(model: LoadedModel, data: AnalysisData, n: int = MAX_SAMPLES) -> Embeddings:
    """The embeddings of a stratified subset of about ``n`` samples (the app's ``max_samples``)."""
    return extract_embeddings(model, data, stratified_subset(data.labels, n))


def reference(which: str = "A", data: AnalysisData | None = None, n: int = MAX_SAMPLES) -> Reference:
    """Model ``which``, its test split (``data`` when given) and the subset's embeddings."""
    model = bundled_model(which)
    data = open_analysis_data(model, "test") if data is None else data
    return Reference(model, data, subset_embeddings(model, data, n))


def reference_pair(n: int = MAX_SAMPLES) -> dict[str, Reference]:
    """:func:`reference` of A and B; both checkpoints read the same synthetic test split, opened once."""
    a = reference("A", n=n)
    return {"A": a, "B": reference("B", a.data, n)}


# -- AppTest ----------------------------------------------------------------------------------------------

def open_app(page: str | None = None, **state: Any):
    """An AppTest of the app run once on ``page`` (``"attention"``: views/attention.py; None: the Start
    page), straight there, with ``state`` in its session state over the tests' defaults (the analysed
    subset of :data:`MAX_SAMPLES` samples, PCA projections for speed)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180)
    for k, v in {"max_samples": MAX_SAMPLES, "projection_method": "pca", **state}.items():
        at.session_state[k] = v
    if page is not None:
        at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def rerun(at, **state: Any):
    """Set ``state`` in the session state and run the app again (without an exception)."""
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def tables(at, *columns: str) -> list:
    """The page's dataframes with exactly these columns, in page order."""
    return [d.value for d in at.dataframe if list(d.value.columns) == list(columns)]


# -- plotly charts --------------------------------------------------------------------------------------------

def arr(v: Any) -> np.ndarray:
    """A plotly JSON array as floats: a list, or a typed array ``{"dtype", "bdata"[, "shape"]}`` (plotly >= 6)."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(float)
        shape = v.get("shape")
        return a.reshape([int(n) for n in str(shape).split(",")]) if shape else a
    return np.asarray(v, dtype=float)


def figures(at) -> list[dict]:
    """The plotly figure of every chart on the page, in page order."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def charts(at) -> dict[str, dict]:
    """The plotly figure of every keyed chart, by widget key."""
    return {el.key: json.loads(el.proto.spec) for el in at.get("plotly_chart")}


def chart(at, key: str) -> tuple[dict, Any]:
    """The figure and the element of the chart with widget key ``key``."""
    el = next(el for el in at.get("plotly_chart") if el.key == key)
    return json.loads(el.proto.spec), el


def send_selection(at, key: str, points: list[dict], box: list | None = None):
    """Run the app with a selection event on chart ``key`` as the browser reports it (streamlit 1.67).

    ``points`` are plotly's point dicts (``curve_number``, ``point_index``, ``x``, ``y``, ``customdata``
    as ``{"0": ...}``). AppTest has no setter for a chart's selection, so the JSON goes into the widget
    states of the next run, where Streamlit's own deserialiser turns it into the state the page reads.
    """
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    _, el = chart(at, key)
    payload = {"selection": {"points": points, "point_indices": [p["point_index"] for p in points],
                             "box": box or [], "lasso": []}}
    states = at._tree.get_widget_states()  # what AppTest would send for the other widgets
    states.widgets.append(WidgetState(id=el.proto.id, string_value=json.dumps(payload)))
    at._run(states)
    assert not at.exception, at.exception
    return at
