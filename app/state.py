"""What every page shares: the chosen models and data, cached loaders, and error display.

Heavy objects (models, datasets) live in ``st.cache_resource``; embeddings, projections and
metrics in ``st.cache_data`` keyed by explicit strings (checkpoint digest, data identity,
sample count): large arrays are never hashed. All computation is in ``analysis`` and ``stdcl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import streamlit as st

from analysis.datasets import AnalysisData, open_analysis_data, stratified_subset
from analysis.embeddings import Embeddings, extract_embeddings
from analysis.models import LoadedModel, ModelRef, bundled_models, discover_models, load_model
from analysis.projection_jobs import ProjectionJob, ProjectionJobs
from stdcl.errors import StdclError, user_error_line

#: Where the app looks for run directories (``stdcl train --out``) and where fine-tuning writes.
RUNS_DIR = Path(os.environ.get("STDCL_RUNS", "runs")).expanduser()
#: Default number of samples analysed per split (a stratified subset above it; the pages say so). From
#: ``stdcl bench analysis`` (README, Benchmarks; 2-core CPU, loaded): at 10,000 samples the Embeddings page paints
#: both linked charts in 2.7 s warm (3.6 s at 50,000, over the 3 s target) and all metrics take ~12 s (160 s at
#: 50,000); embeddings cost ~3 min for HCN on a CPU. Larger budgets (a whole NTU split) are set on the Models page.
DEFAULT_MAX_SAMPLES = 10_000


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Show an error the user's input caused (bad file, incompatible checkpoint, missing data, an unreadable
    path) as its one line and stop the page; anything else is a bug and keeps Streamlit's traceback."""
    try:
        yield
    except (StdclError, OSError) as e:
        line = user_error_line(e)
        if line is None:
            raise
        st.error(line)
        st.stop()


# -- cached loaders --------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def warm_umap() -> threading.Thread:
    """Compile UMAP's JIT once per server process, in the background so no page waits for it."""
    from analysis.projections import warm_up_umap

    thread = threading.Thread(target=warm_up_umap, name="umap-warm-up", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=16)
def get_model(source: str, which: str = "best") -> LoadedModel:
    """A checkpoint by path (bundled file, run directory or ``.safetensors``)."""
    return load_model(source, which)


@st.cache_resource(show_spinner="Opening dataset…", max_entries=8)
def get_data(model_digest: str, data_json: str, _model: LoadedModel) -> AnalysisData:
    """The split described by ``data_json`` (see :func:`data_choice`) for a model."""
    spec = json.loads(data_json)
    return open_analysis_data(_model, spec.get("split", "test"), spec.get("dataset"), spec.get("path"),
                              spec.get("modality"))


@st.cache_resource(show_spinner=False, max_entries=6)
def get_embeddings(model_digest: str, data_json: str, max_samples: int, _model: LoadedModel,
                   _data: AnalysisData) -> Embeddings:
    """Embeddings of up to ``max_samples`` samples (stratified, seeded) with a progress bar, computed on
    the GPU when there is one (:func:`analysis.embeddings.embedding_device`).

    A shared resource, not a copy per call (``st.cache_data`` would unpickle the ~1 GB of a 50,000-sample
    split on every rerun); the pages only read it."""
    rows = stratified_subset(_data.labels, max_samples) if len(_data) > max_samples else None
    total = len(_data) if rows is None else len(rows)
    what = f"Embedding {total:,} samples with {_model.label} ({_model.encoder_name})"
    bar = st.progress(0.0, text=f"{what}: loading the model's input…")
    t0 = time.monotonic()

    def report(done: int, total: int) -> None:
        spent = time.monotonic() - t0
        left = spent / done * (total - done) if done else None
        eta = f", about {_seconds(left)} left" if left is not None and done < total else ""
        bar.progress(done / max(total, 1), text=f"{what}: {done:,}/{total:,}{eta} (once: the result is cached)")

    try:
        return extract_embeddings(_model, _data, rows, progress=report)
    finally:
        bar.empty()


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


#: How the projection methods are named on every page.
METHOD_NAMES = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}


#: UMAP / t-SNE of more points than this run in the background (:func:`projection_status`); fewer, and PCA
#: (0.1 s for 50,000 points), are computed in the page.
BACKGROUND_ABOVE = 5000


def _in_background(method: str, n: int) -> bool:
    return method != "pca" and n > BACKGROUND_ABOVE


@st.cache_resource(show_spinner=False)
def projection_jobs() -> ProjectionJobs:
    """The server's queue of background projections (one worker thread, shared by every session)."""
    return ProjectionJobs()


def job_text(job: ProjectionJob) -> str:
    """What a background projection is doing, how far it is and how long it has left, in one line."""
    left = job.seconds_left()
    eta = f", about {_seconds(left)} left" if left is not None else ""
    return (f"{METHOD_NAMES.get(job.method, job.method)} of the {job.space} embeddings ({job.n:,} points): "
            f"{job.stage}, {job.fraction:.0%}{eta}")


def get_projection(emb_key: str, space: str, method: str, _emb: Embeddings) -> np.ndarray:
    """The 2-D projection of one space, saying what is computed while it runs (instant when cached).

    The spinner is drawn on every call, cached or not, so the page's elements keep their positions
    from one run to the next (an element that appears only on a cache miss would shift the charts
    after it, and the browser would briefly show stale copies of them). A large UMAP / t-SNE runs in
    the background queue while this waits for it with a progress bar."""
    from analysis.projections import umap_ready

    if _in_background(method, len(_emb)):
        job = projection_jobs().submit(_emb, space, method)
        if not job.done:
            bar = st.progress(job.fraction, text=job_text(job))
            while not job.wait(0.5):
                bar.progress(job.fraction, text=job_text(job))
            bar.empty()
        return job.result()
    first = (" (the first UMAP compiles it: about 10 s, once per server)"
             if method == "umap" and not umap_ready() else "")
    with st.spinner(f"Projecting the {space} embeddings of {len(_emb):,} samples to 2-D with "
                    f"{METHOD_NAMES.get(method, method)}{first}… (once: the result is cached)"):
        return _projection(emb_key, space, method, _emb)


def projection_status(space: str, method: str, emb: Embeddings) -> tuple[np.ndarray | None, ProjectionJob | None]:
    """The projection now, or None and its background job: a large UMAP / t-SNE is queued (once) and the
    page draws something else meanwhile (:func:`projection_progress` polls it); the rest is
    :func:`get_projection`. A failed job raises its error (shown by :func:`guard`)."""
    if not _in_background(method, len(emb)):
        return get_projection(emb.key, space, method, emb), None
    job = projection_jobs().submit(emb, space, method)
    return (job.result() if job.done else None), job


@st.fragment(run_every=1.0)
def projection_progress(keys: list[str]) -> None:
    """A progress bar per background projection ``keys``, refreshed every second; when all are finished
    the whole page runs again (and draws them)."""
    jobs = [j for j in (projection_jobs().get(k) for k in keys) if j is not None]
    if all(j.done for j in jobs):
        st.rerun()
    for job in jobs:
        st.progress(job.fraction, text=job_text(job))


@st.cache_data(show_spinner=False, max_entries=64)
def _projection(emb_key: str, space: str, method: str, _emb: Embeddings) -> np.ndarray:
    from analysis.projections import project_embeddings

    return project_embeddings(_emb, space, method)


@st.cache_data(show_spinner="Computing separation metrics…", max_entries=32)
def get_metrics(emb_key: str, _emb: Embeddings) -> dict[str, Any]:
    from analysis.metrics import space_metrics

    return space_metrics(_emb)


# -- the user's choices ----------------------------------------------------------------------------

@dataclass
class Selection:
    """The models and data every analysis page works on."""

    model: LoadedModel  # the main checkpoint ("A")
    other: LoadedModel | None  # the comparison checkpoint ("B"), e.g. the baseline of the same encoder
    data: AnalysisData
    data_json: str
    max_samples: int

    def embeddings(self, which: str = "A") -> Embeddings | None:
        m = self.model if which == "A" else self.other
        if m is None:
            return None
        data = self.data if m is self.model else get_data(m.digest, self.data_json, m)
        return get_embeddings(m.digest, self.data_json, self.max_samples, m, data)

    @property
    def subsampled(self) -> bool:
        return len(self.data) > self.max_samples


def model_options() -> dict[str, ModelRef]:
    """Every model the user can pick: bundled, run directories under :data:`RUNS_DIR`, uploads."""
    refs = {f"bundled: {r.label}": r for r in bundled_models()}
    if RUNS_DIR.is_dir():
        with contextlib.suppress(StdclError, OSError):
            refs.update({f"runs: {r.label}": r for r in discover_models(RUNS_DIR)})
    for label, path in st.session_state.get("extra_models", {}).items():
        refs[label] = ModelRef(label, Path(path), "file")
    return refs


#: The default demo pair: HCN is the fastest encoder on a CPU (first paint in seconds).
DEFAULT_MODEL = "bundled: synthetic_hcn_stdcl"


#: How the two halves of a baseline / STD-CL pair are named: bundled checkpoints, experiment-grid runs.
PAIR_MARKS = (("_stdcl", "_baseline"), ("stdcl-on", "stdcl-off"))


def paired_key(key: str, refs: dict[str, ModelRef]) -> str | None:
    """The other half of ``key``'s baseline / STD-CL pair among ``refs`` (same name but for the mark), else None."""
    for on, off in PAIR_MARKS:
        for mine, other in ((on, off), (off, on)):
            head, sep, tail = key.rpartition(mine)
            if sep and (cand := head + other + tail) in refs and cand != key:
                return cand
    return None


def default_pair(refs: dict[str, ModelRef]) -> tuple[str, str | None]:
    """The STD-CL demo checkpoint (HCN when bundled) and its baseline."""
    keys = list(refs)
    a = DEFAULT_MODEL if DEFAULT_MODEL in refs else next((k for k in keys if k.endswith("_stdcl")), keys[0])
    return a, paired_key(a, refs)


def data_choice() -> dict[str, Any]:
    """The dataset override (empty: each model's own dataset) and split, as stored by the Models page."""
    return dict(st.session_state.get("data_choice", {"split": "test"}))


def current_selection(require_other: bool = False) -> Selection:
    """Load what the sidebar / Models page chose (errors become messages); used by every analysis page."""
    refs = model_options()
    if not refs:
        st.error("No checkpoints found: the bundled demo folder `checkpoints/` is empty.")
        st.stop()
    a_default, b_default = default_pair(refs)
    a_key = st.session_state.get("model_a", a_default)
    b_key = st.session_state.get("model_b", b_default)
    if a_key not in refs:
        a_key = a_default
    with guard():
        model = get_model(str(refs[a_key].path))
        other = get_model(str(refs[b_key].path)) if b_key and b_key in refs and b_key != a_key else None
        spec = data_choice()
        data_json = json.dumps(spec, sort_keys=True)
        data = get_data(model.digest, data_json, model)
        if other is not None:
            get_data(other.digest, data_json, other)  # same data must fit the comparison model too
    if require_other and other is None:
        st.info("Choose a second checkpoint on the **Models and data** page to compare.")
    return Selection(model, other, data, data_json, int(st.session_state.get("max_samples", DEFAULT_MAX_SAMPLES)))


def subset_notice(sel: Selection) -> None:
    """Say on screen when only a stratified subset of the split is analysed."""
    if sel.subsampled:
        st.caption(f"Showing a stratified subset of {sel.max_samples:,} of {len(sel.data):,} samples "
                   "(change it on the Models and data page).")
