"""STD-CL analysis app: `streamlit run app/main.py`.

Pages live in ``app/views``; shared state and cached loaders in ``app/state.py``. Everything
computed comes from ``analysis`` and ``stdcl``; this folder is presentation only.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="STD-CL explorer", page_icon=":material/accessibility_new:", layout="wide")
_booting = st.empty()  # on every run, so the page's elements keep their positions from run to run
if "app.state" not in sys.modules:  # the server's first run imports PyTorch and the analysis code: say so
    _booting.info("Starting: loading PyTorch and the analysis code (once per server, a few seconds)…",
                  icon=":material/hourglass_top:")
from app import state  # noqa: E402

_booting.empty()

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = [
    st.Page(VIEWS / "start.py", title="Start: decoupling explained", icon=":material/school:", default=True),
    st.Page(VIEWS / "models.py", title="Models and data", icon=":material/inventory_2:"),
    st.Page(VIEWS / "embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page(VIEWS / "evolution.py", title="Training evolution", icon=":material/timeline:"),
    st.Page(VIEWS / "attention.py", title="Attention", icon=":material/local_fire_department:"),
    st.Page(VIEWS / "confusion.py", title="Confusion", icon=":material/grid_on:"),
    st.Page(VIEWS / "separation.py", title="Separation", icon=":material/straighten:"),
    st.Page(VIEWS / "results.py", title="Results", icon=":material/table_chart:"),
    st.Page(VIEWS / "finetune.py", title="Fine-tune", icon=":material/model_training:"),
]
page = st.navigation(PAGES)
state.warm_umap()
page.run()
