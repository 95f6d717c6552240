"""Fine-tune: start a short ``stdcl train`` run from a checkpoint, follow it live, compare the result.

The run is a subprocess managed by :class:`stdcl.train.jobs.JobManager`, whose state lives in
``RUNS_DIR/.jobs``: any session (a reloaded page, another tab) sees the same job, and only one
runs at a time. The run directory goes to ``RUNS_DIR/finetune-<timestamp>``, where the model
list finds it once it has saved a checkpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from app import state
from stdcl.data.registry import available_datasets
from stdcl.errors import StdclError, user_error_line
from stdcl.train import finetune_plan as plan
from stdcl.train.finetune_plan import OTHER, OWN, SYNTHETIC
from stdcl.train.jobs import JobError, JobManager, JobStatus, gpu_available
from stdcl.train.run_dir import checkpoint_of

ROOT = Path(__file__).resolve().parents[2]
#: Seconds between live updates of a running job.
POLL_S = 2.0
LOSS_PARTS = ("loss", "ce", "spatial", "temporal")


# -- the job folder ---------------------------------------------------------------------------------

def jobs_folder() -> Path:
    """Where the job record lives: fixed under the runs folder, so every session finds it."""
    return state.RUNS_DIR / ".jobs"


def manager() -> JobManager:
    return JobManager(jobs_folder())


def current_status() -> JobStatus:
    """The job as seen now (``idle`` when none was ever started here)."""
    if not (jobs_folder() / "job.json").is_file():
        return JobStatus()
    return manager().status()


def page_status() -> JobStatus:
    """:func:`current_status`; a damaged job record is its one line, with a button that forgets it (the page
    stops there: nothing of the job can be shown)."""
    try:
        return current_status()
    except JobError as e:
        st.error(str(e))
        if st.button("Clear the damaged job record", key="ft_clear_damaged",
                     help="Forget the job record (a run directory it names stays)"):
            with state.guard():
                manager().clear()
            st.rerun()
        st.stop()


# -- what to run ------------------------------------------------------------------------------------

@st.cache_data(show_spinner="Reading the dataset's size…", max_entries=16)
def data_sizes(data_json: str) -> plan.DataSizes:
    """Cached :func:`stdcl.train.finetune_plan.data_sizes` of a config's data section."""
    return plan.data_sizes(json.loads(data_json))


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def shell_lines(words: list[str]) -> str:
    """``words`` as a shell command, quoted, one option (with its value) or ``key=value`` per line."""
    lines: list[list[str]] = [[]]
    for i, w in enumerate(words):
        q = shlex.quote(w)
        starts = w.startswith("--") or ("=" in w and not w.startswith("-"))
        if i and starts and lines[-1]:
            lines.append([])
        lines[-1].append(q)
    return " \\\n    ".join(" ".join(line) for line in lines)


def new_run_dir() -> Path:
    base = state.RUNS_DIR / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, i = base, 1
    while run_dir.exists():
        i += 1
        run_dir = base.with_name(f"{base.name}-{i}")
    return run_dir


def child_env() -> dict[str, str]:
    """The run imports ``stdcl`` from this checkout even when it is not pip-installed."""
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(paths)}


# -- comparing a finished run ---------------------------------------------------------------------

def option_key(refs: dict[str, Any], path: str | Path, run: bool = False) -> str | None:
    """The model-list key of a run directory (``run``) or of the checkpoint file ``path``."""
    want = Path(path).resolve()
    for key, ref in refs.items():
        try:
            got = Path(ref.path).resolve() if run else checkpoint_of(ref.path).resolve()
        except (StdclError, OSError):
            continue
        if got == want and (ref.kind == "run" or not run):
            return key
    return None


def compare_with_start(status: JobStatus) -> tuple[str, str] | None:
    """Make the finished run model A and its starting checkpoint model B (shared session keys)."""
    refs = state.model_options()
    new = option_key(refs, status.run_dir or "", run=True)
    start = plan.init_path(status.command)
    if new is None or start is None:
        return None
    old = option_key(refs, start)
    if old is None:  # e.g. an upload of another session: offer it as an extra model
        old = f"start: {Path(start).stem}"
        st.session_state["extra_models"] = dict(st.session_state.get("extra_models", {})) | {old: start}
    st.session_state["model_a"], st.session_state["model_b"] = new, old
    return new, old


# -- the live job panel ---------------------------------------------------------------------------

#: Heading icon per job state (Material icons ship with Streamlit: no emoji font needed).
STATE_ICON = {"running": ":material/directions_run:", "finished": ":material/check_circle:",
              "failed": ":material/error:", "cancelled": ":material/stop_circle:"}


def show_progress(status: JobStatus) -> None:
    p = status.progress
    total = f" of {p.total_steps}" if p.total_steps else ""
    if status.state == "running":
        text = f"step {p.step or 0}{total}" + (f", about {fmt_seconds(p.remaining_s)} left"
                                               if p.remaining_s is not None else "")
        st.progress(p.fraction or 0.0, text=text if p.step else "starting (imports, data, model)…")
    if p.step is None:
        return  # nothing logged yet
    cols = st.columns(6)
    cols[0].metric("step", f"{p.step or 0}{total}")
    cols[1].metric("loss", "–" if "loss" not in p.losses else f"{p.losses['loss']:.3f}")
    cols[2].metric("train accuracy", pct(p.train_acc))
    cols[3].metric("val top-1", pct(p.val_top1))
    cols[4].metric("test top-1", pct(p.test_top1))
    cols[5].metric("samples/s", "–" if p.samples_per_s is None else f"{p.samples_per_s:.1f}")
    parts = {k: v for k, v in p.losses.items() if k != "loss"}
    if parts:
        st.caption("Latest loss parts: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
                   + ". `ce` is cross-entropy; `spatial` / `temporal` are the two contrastive terms (STD-CL only).")
    steps = [r for r in p.records if r.get("kind") == "step"]
    if steps:
        loss_chart(steps, p.contrastive_start_step)
        if p.contrastive:
            st.caption(contrastive_note(p.contrastive_start_step))
    epochs = [r for r in p.records if r.get("kind") == "epoch"]
    if epochs:
        st.dataframe(pd.DataFrame([{"epoch": r.get("epoch"), "step": r.get("global_step"),
                                    "train loss": r.get("train_loss"), "train acc": r.get("train_acc"),
                                    "val top-1": r.get("val_top1"), "test top-1": r.get("test_top1")}
                                   for r in epochs]), hide_index=True)


def loss_chart(steps: list[dict[str, Any]], start_step: int | None) -> None:
    """The logged loss parts per step, with a rule where the contrastive term starts counting."""
    df = pd.DataFrame([{k: r[k] for k in ("global_step", *LOSS_PARTS) if k in r} for r in steps])
    long = df.melt("global_step", var_name="part", value_name="value").dropna()
    lines = alt.Chart(long).mark_line().encode(
        x=alt.X("global_step:Q", title="step"), y=alt.Y("value:Q", title="loss"),
        color=alt.Color("part:N", sort=list(LOSS_PARTS), title=None, legend=alt.Legend(orient="top")),
        tooltip=["global_step", "part", alt.Tooltip("value:Q", format=".4f")])
    chart = lines
    if start_step is not None:
        mark = pd.DataFrame({"global_step": [start_step], "label": [f"contrastive term starts (step {start_step})"]})
        rule = alt.Chart(mark).mark_rule(strokeDash=[4, 3], color="gray").encode(x="global_step:Q")
        text = alt.Chart(mark).mark_text(align="left", dx=4, dy=-4, baseline="top", color="gray").encode(
            x="global_step:Q", y=alt.value(0), text="label:N")
        chart = lines + rule + text
    st.altair_chart(chart.properties(height=240), width="stretch")


def contrastive_note(start_step: int | None) -> str:
    """Why the spatial / temporal terms are 0 at first and the total then jumps."""
    why = ("an anchor's contrastive term counts only once the memory banks hold P embeddings of its class and "
           "K of other classes (`stdcl.loss.num_pos` / `num_neg`, InfoNCE over its hardest positives and "
           "negatives), and not before `stdcl.loss.start_epoch` when that is set")
    if start_step is None:
        return (f"The spatial and temporal terms are still 0 while the banks fill: {why}. Until then the loss is "
                "cross-entropy alone.")
    return (f"Before step {start_step} the banks were filling and the loss was cross-entropy alone: {why}. "
            f"The jump at step {start_step} is the spatial and temporal terms joining the total.")


def job_heading(status: JobStatus) -> None:
    st.markdown(f"#### {STATE_ICON[status.state]} Job {status.state}: `{Path(status.run_dir or '').name}`")


def job_panel(polling: bool) -> None:
    """The job's progress and outcome; re-run every :data:`POLL_S` seconds while it runs.

    The heading and the Cancel button belong to the whole page (a click then never races a
    polling run of this fragment); when the job ends, the whole page is re-run.
    """
    with state.guard():
        status = current_status()
    if polling and status.state != "running":
        st.rerun()  # the job ended: refresh the whole page (heading, model list, buttons) and stop polling
    if status.state == "idle":
        st.info("No fine-tuning job yet: choose the settings above and press **Start**.")
        return
    expected = f" (expected {fmt_seconds(status.estimate_s)})" if status.estimate_s is not None else ""
    st.caption(f"Run directory `{status.run_dir}` · elapsed {fmt_seconds(status.elapsed)}{expected}"
               + (f" · exit code {status.exit_code}" if status.exit_code is not None else ""))
    if status.cancelling:
        st.warning("Cancelling…")
    show_progress(status)
    if status.state == "failed":
        st.error(f"The run failed: {status.error}")
        st.code(manager().log_tail(40) or "(empty log)", language="text")
    elif status.state == "cancelled":
        st.warning("The run was cancelled; its run directory keeps what it saved.")
        with st.expander("End of its log"):
            st.code(manager().log_tail(20) or "(empty log)", language="text")
    elif status.state == "finished":
        refs = state.model_options()
        key = option_key(refs, status.run_dir or "", run=True)
        st.success(f"Finished. It is in the model list as **{key}**." if key else "Finished.")
        if key and st.button("Compare with its starting point", key="ft_compare", type="primary"):
            pair = compare_with_start(status)
            if pair:
                st.session_state["ft_compared"] = pair
        if st.session_state.get("ft_compared"):
            a, b = st.session_state["ft_compared"]
            st.info(f"Model A is now **{a}**, model B **{b}**: see them side by side on these pages.")
            c1, c2, c3 = st.columns(3)
            c1.page_link("views/embeddings.py", label="Embeddings", icon=":material/scatter_plot:")
            c2.page_link("views/separation.py", label="Separation", icon=":material/straighten:")
            c3.page_link("views/confusion.py", label="Confusion", icon=":material/grid_on:")
    if status.state != "running" and st.button("Clear this job", key="ft_clear",
                                               help="Forget the job (its run directory stays)"):
        with state.guard():
            manager().clear()
        st.session_state.pop("ft_compared", None)
        st.rerun()


#: Config keys the form sets itself (the extra overrides, applied last, would replace them).
FORM_KEYS = {"optim.lr": "Learning rate", "train.batch_size": "Batch size", "train.epochs": "Epochs",
             "train.max_steps": "Steps", "stdcl.enabled": "Train with the STD-CL head",
             "train.init_from": "Start from checkpoint"}


def apply_defaults(ckpt_key: str, defaults: plan.Defaults) -> None:
    """One source of truth for the form: when the checkpoint changes (or a widget's state was dropped
    on another page) its defaults are written into the widgets' state before they are drawn, so what
    the form shows is what the plan, the preview and the launched command use."""
    changed = st.session_state.get("_ft_defaults_for") != ckpt_key
    for key, value in (("ft_stdcl", defaults.stdcl), ("ft_lr", defaults.lr), ("ft_batch", defaults.batch)):
        if changed or key not in st.session_state:
            st.session_state[key] = value
    st.session_state["_ft_defaults_for"] = ckpt_key


# -- the page -------------------------------------------------------------------------------------

st.title("Fine-tune")
st.caption("Continue training a checkpoint, with or without the STD-CL head, as a background `stdcl train` run. "
           "The encoder starts from the checkpoint's weights (`train.init_from`); the head, when on, starts fresh "
           "and is used only during training. Progress comes from the run's `metrics.jsonl`, so you can leave this "
           "page, reload it or open it in another tab and the job is still here. One job runs at a time.")

refs = state.model_options()
if not refs:
    st.error("No checkpoints found to start from.")
    st.stop()
keys = list(refs)
default_a = st.session_state.get("model_a")
if default_a not in refs:
    default_a = state.default_pair(refs)[0]
left, right = st.columns(2)
with left:
    ckpt_key = st.selectbox("Start from checkpoint", keys, index=keys.index(default_a), key="ft_checkpoint",
                            help="Default: model A of the Models and data page. Changing it resets the STD-CL "
                                 "switch, learning rate and batch size to the new checkpoint's.")
    with state.guard():
        start = plan.start_point(refs[ckpt_key].path)
        defaults = plan.checkpoint_defaults(start)
    apply_defaults(ckpt_key, defaults)
    enc_name = start.encoder_name or ""
    st.caption(f"{start.encoder_name or '?'} encoder, {start.num_classes or '?'} classes, "
               f"{start.dataset or 'unknown dataset'}, window {start.window or '?'}, "
               f"{'trained with STD-CL' if start.stdcl else 'baseline'}.")
    own_name = start.dataset or "unknown"
    dataset = st.radio("Data", [OWN, SYNTHETIC, OTHER], key="ft_dataset", horizontal=True,
                       format_func={OWN: f"its own ({own_name})", SYNTHETIC: "synthetic set (no set-up)",
                                    OTHER: "another dataset"}.get)
    other_name = other_path = None
    if dataset == OTHER:
        names = available_datasets()
        other_name = st.selectbox("Dataset", names, key="ft_other_name")
        if other_name != "synthetic":
            other_path = st.text_input("Its folder or file", key="ft_other_path",
                                       placeholder="e.g. data/ntu or ../shared/data/nw_ucla_ctrgcn")
    stdcl_on = st.toggle("Train with the STD-CL head", key="ft_stdcl",
                         help="Off: cross-entropy only (a baseline fine-tune).")
with right:
    length = st.radio("Length", ["epochs", "steps"], key="ft_length", horizontal=True,
                      help="Whole passes over the training split, or a fixed number of optimiser steps.")
    if length == "epochs":
        amount = st.number_input("Epochs", min_value=1, max_value=1000, value=1, step=1, key="ft_epochs")
    else:
        amount = st.number_input("Steps", min_value=1, max_value=1_000_000, value=100, step=10, key="ft_steps")
    lr = st.number_input("Learning rate", min_value=0.0, max_value=10.0, format="%.6f", step=1e-4, key="ft_lr",
                         help=f"Constant, no warm-up. Default: a tenth of the {enc_name} recipe's "
                              f"{defaults.optimiser} rate {defaults.recipe_lr:g}.")
    if lr > 10 * defaults.lr:
        st.warning(f"Learning rate {lr:g} is {lr / defaults.lr:.0f}x the fine-tuning default "
                   f"{defaults.lr:g} for this {enc_name} checkpoint ({defaults.optimiser}): "
                   "a trained encoder is likely to be knocked out of its solution.")
    batch = st.number_input("Batch size", min_value=1, max_value=4096, step=8, key="ft_batch")
with st.expander("Advanced"):
    strict = not st.checkbox("Skip layers whose shape differs (e.g. a dataset with another class count)",
                             key="ft_loose", help="train.init_strict=false: the classifier starts fresh.")
    extra_text = st.text_area("Extra overrides, one `key=value` per line (applied last)", key="ft_overrides",
                              placeholder="data.source={num_samples: 200}\nstdcl.loss.num_pos=32",
                              help="Any key of the training config (see `stdcl train --print-config`).")
extra = [ln.strip() for ln in (extra_text or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
replaced = plan.overridden_keys(extra, FORM_KEYS)
if replaced:
    st.warning("The extra overrides replace what the form shows: " + "; ".join(
        f"`{k}` (the form's *{FORM_KEYS[k]}*)" for k in replaced) + ". The plan and the command below use the "
        "overrides' values.", icon=":material/edit_note:")

plan_error = None
args: list[str] = []
eta = None
choices = plan.Choices(dataset, other_name, other_path, stdcl_on, length, int(amount), lr, int(batch), strict,
                       tuple(extra), "cuda" if gpu_available() else "cpu")
try:
    run_plan = plan.build_plan(start, choices)
    args, cfg = run_plan.args, run_plan.cfg
    sizes = data_sizes(json.dumps(cfg["data"], sort_keys=True))
    timing = plan.plan_time(cfg, sizes, history=jobs_folder())
except (StdclError, OSError) as e:
    plan_error = user_error_line(e)
    if plan_error is None:
        raise

if plan_error:
    st.error(plan_error)
else:
    note = (f"{sizes.train_items:,} training items, {sizes.val:,} validation and {sizes.test:,} test "
            f"samples, {sizes.classes} classes: {timing.steps:,} steps of {cfg['train']['batch_size']}.")
    fit = plan.check_fit(start, sizes)
    if strict and not fit.fits:
        st.warning(f"The data has {fit.data_classes} classes ({fit.data_layout} skeleton), the checkpoint "
                   f"{fit.checkpoint_classes} ({fit.checkpoint_layout}): tick *Skip layers whose shape differs* "
                   "under Advanced to start the layers that do not fit afresh.")
    eta = timing.estimate
    where = "Runs on the GPU." if run_plan.device == "cuda" else "No GPU found: the run uses the CPU."
    st.info(f"{where} {note} Expected time: about **{fmt_seconds(eta.seconds)}**.")
    st.caption(f"How: {eta.basis}. The progress below refines it once the run logs its steps.")

status = page_status()
busy = status.state == "running"
if st.button("Start", key="ft_start", type="primary", disabled=plan_error is not None or busy,
             help="A job is running: one at a time (cancel it below to start another)." if busy else None):
    run_dir = new_run_dir()
    try:
        manager().start(args, run_dir, env=child_env(), estimate=eta)
        st.session_state["_ft_started"] = run_dir.name
        st.rerun()  # redraw the page with the job: Start off, the live panel on
    except JobError as e:
        st.error(f"Not started: {e}")
    except StdclError as e:
        st.error(str(e))
    status = page_status()
if "_ft_started" in st.session_state:
    st.toast(f"Started {st.session_state.pop('_ft_started')}")

st.divider()
if status.state != "idle":
    job_heading(status)
running = status.state == "running"
if running and st.button("Cancel", key="ft_cancel", help="Stop the run (SIGTERM, then SIGKILL after 10 s)"):
    with state.guard():
        manager().cancel()
    st.rerun()
st.fragment(run_every=POLL_S if running else None)(job_panel)(running)
with st.expander("Command of the job"):
    st.code(shell_lines(status.command if status.command else ["stdcl", "train", *args]), language="bash")
    st.caption("Copy it into a terminal to run the same job by hand (values are shell-quoted).")
