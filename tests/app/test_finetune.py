"""The Fine-tune page (AppTest): settings, a tiny background run, Start disabled while it runs,
cancel, reattaching from another session, a failed run's log, and the finished run in the model list."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from analysis.models import BUNDLED_DIR
from app import state
from stdcl.checkpoint import read_meta
from stdcl.data.registry import open_source
from stdcl.train.jobs import JobManager
from tests.support.app import open_app, point_env
from tests.support.training import TINY

#: The tiny-run settings of the training tests, less the window (the run keeps the checkpoint's 32 frames).
TINY_OVERRIDES = "\n".join(o for o in TINY if not o.startswith("data.window="))
START = BUNDLED_DIR / "synthetic_hcn_stdcl.safetensors"


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """An empty runs folder for the app; no page here projects (no UMAP warm-up)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training subprocess: one thread on a shared machine
    return point_env(monkeypatch, {"runs": tmp_path / "runs", "cache": tmp_path / "cache"}, umap_warm_up=False)["runs"]


def open_page() -> AppTest:
    return open_app("finetune")  # straight to the page (the Start page's walkthrough is not needed here)


def headings(at: AppTest) -> list[str]:
    """The job panel's heading, as "Job <state>: `<run>`" (icon left out)."""
    found = (re.search(r"Job \w+: `[^`]+`", m.value) for m in at.markdown if m.value.startswith("#### "))
    return [f.group(0) for f in found if f]


def set_tiny(at: AppTest, steps: int, extra: str = "") -> None:
    at.radio(key="ft_length").set_value("steps")
    at.run()
    at.number_input(key="ft_steps").set_value(steps)
    at.text_area(key="ft_overrides").set_value(TINY_OVERRIDES + ("\n" + extra if extra else ""))
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def wait_end(runs: Path, timeout: float = 150.0) -> str:
    mgr = JobManager(runs / ".jobs")
    deadline = time.monotonic() + timeout
    while (s := mgr.status()).state == "running":
        assert time.monotonic() < deadline, f"job still running after {timeout} s:\n{mgr.log_tail(20)}"
        time.sleep(0.5)
    return s.state


def test_page_renders_with_defaults_and_plan(runs):
    at = open_page()
    assert [t.value for t in at.title] == ["Fine-tune"]
    refs = state.model_options()
    assert at.selectbox(key="ft_checkpoint").value == state.default_pair(refs)[0] == "bundled: synthetic_hcn_stdcl"
    assert at.radio(key="ft_dataset").value == "own"
    assert at.toggle(key="ft_stdcl").value is True  # the STD-CL checkpoint: head on by default
    assert "No fine-tuning job yet" in " ".join(i.value for i in at.info)
    # the size notice matches the synthetic split read independently (training items + carved validation)
    n_train = len(open_source("synthetic", None, "train", num_samples=2860, seed=0))
    n_test = len(open_source("synthetic", None, "test", num_samples=2860, seed=0))
    notice = " ".join(i.value for i in at.info) + " ".join(c.value for c in at.caption)
    m = re.search(r"([\d,]+) training items, ([\d,]+) validation and ([\d,]+) test samples, 13 classes", notice)
    assert m, notice
    items, val, test = (int(g.replace(",", "")) for g in m.groups())
    assert items + val == n_train and test == n_test and 0 < val < n_train // 10
    assert "Expected time: about" in notice
    # the command: the checkpoint's own recipe and weights, STD-CL on
    cmd = at.get("code")[-1].value
    assert f"train.init_from=\"{START.resolve()}\"" in cmd and "--encoder hcn" in cmd and "--stdcl on" in cmd
    assert "data.window=32" in cmd and "train.epochs=1" in cmd
    # another checkpoint brings its own defaults: the baseline trains without the head
    at.toggle(key="ft_stdcl").set_value(True)
    at.selectbox(key="ft_checkpoint").set_value("bundled: synthetic_hcn_baseline")
    at.run()
    assert not at.exception
    assert at.toggle(key="ft_stdcl").value is False
    cmd = at.get("code")[-1].value
    assert "--stdcl off" in cmd and f"{BUNDLED_DIR.resolve() / 'synthetic_hcn_baseline.safetensors'}" in cmd


def test_extra_overrides_that_replace_the_form_are_flagged(runs):
    at = open_page()
    assert not [w for w in at.warning if "replace what the form shows" in w.value]
    at.text_area(key="ft_overrides").set_value("train.batch_size=8\nstdcl.loss.num_pos=2\noptim.lr=0.5").run()
    assert not at.exception
    (w,) = [w.value for w in at.warning if "replace what the form shows" in w.value]
    assert "`train.batch_size` (the form's *Batch size*)" in w and "`optim.lr` (the form's *Learning rate*)" in w
    assert "num_pos" not in w
    assert "steps of 8" in " ".join(i.value for i in at.info)  # the plan follows the override, and says so


def test_bad_settings_are_messages(runs):
    at = open_page()
    at.text_area(key="ft_overrides").set_value("train.epochz=3")
    at.run()
    assert not at.exception
    assert any("unknown config key train.epochz" in e.value and "train.epochs" in e.value for e in at.error)
    assert at.button(key="ft_start").disabled
    at.text_area(key="ft_overrides").set_value("data.source={num_samples: 200}")
    at.number_input(key="ft_batch").set_value(4096)
    at.run()
    assert [e.value for e in at.error] == ["the training split has 130 items, fewer than one batch of 4096"]
    assert at.button(key="ft_start").disabled
    at.text_area(key="ft_overrides").set_value("")
    at.number_input(key="ft_batch").set_value(32)
    at.radio(key="ft_dataset").set_value("other")
    at.run()
    at.selectbox(key="ft_other_name").set_value("ucla")
    at.text_input(key="ft_other_path").set_value(str(runs / "no-such-folder"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{runs / 'no-such-folder'}: no such file or folder"]
    assert at.button(key="ft_start").disabled
    assert not (runs / ".jobs").exists()  # nothing was started


def test_job_start_refuse_cancel_reattach_finish_compare(runs):
    at = open_page()
    stale = open_page()  # a tab opened before the job starts: its Start is still enabled
    set_tiny(stale, steps=5000)
    set_tiny(at, steps=5000)
    at.button(key="ft_start").click().run()
    assert not at.exception, at.exception
    assert len(headings(at)) == 1 and headings(at)[0].startswith("Job running: `finetune-")
    first = JobManager(runs / ".jobs").status()
    assert first.state == "running" and Path(first.run_dir).parent == runs
    at.run()
    assert at.button(key="ft_start").disabled  # while a job runs, Start is off
    # a click in the stale tab starts nothing: that run sees the job, shows it and disables Start
    # (the job manager refuses a second start anyway: tests/train/test_jobs.py)
    stale.button(key="ft_start").click().run()
    assert stale.button(key="ft_start").disabled and headings(stale) == headings(at)
    assert JobManager(runs / ".jobs").status().run_dir == first.run_dir
    # another session (a reloaded page, another tab) sees the same running job and can cancel it
    other = open_page()
    assert headings(other) == headings(at)
    other.button(key="ft_cancel").click().run()
    assert not other.exception, other.exception
    assert headings(other)[0].startswith("Job cancelled")
    assert JobManager(runs / ".jobs").status().state == "cancelled"
    at.run()
    assert headings(at)[0].startswith("Job cancelled")

    # a tiny run to the end: it appears in the model list and can be compared with its start
    at.number_input(key="ft_steps").set_value(2)
    at.run()
    at.button(key="ft_start").click().run()
    assert not at.exception, at.exception
    assert wait_end(runs) == "finished", JobManager(runs / ".jobs").log_tail(30)
    run_dir = Path(JobManager(runs / ".jobs").status().run_dir)
    assert run_dir != Path(first.run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["init_from"] == str(START.resolve()) and cfg["train"]["max_steps"] == 2
    assert cfg["stdcl"]["enabled"] is True and cfg["data"]["source"]["num_samples"] == 200
    assert read_meta(run_dir / "last.safetensors")["global_step"] == 2
    key = f"runs: {run_dir.name}"
    assert key in state.model_options()
    at.run()
    assert not at.exception, at.exception
    assert headings(at)[0] == f"Job finished: `{run_dir.name}`"
    assert any(key in s.value for s in at.success)
    # the time it took sits beside the time it was expected to take, and calibrates the next estimate
    assert any(re.search(r"elapsed .+ \(expected .+\)", c.value) for c in at.caption)
    how = [c.value for c in at.caption if c.value.startswith("How: cost table: hcn")]
    assert how and "x " in how[0] and "last 1 finished hcn job on this machine's cpu" in how[0], how
    assert key in at.selectbox(key="ft_checkpoint").options  # it can be fine-tuned further, too
    at.button(key="ft_compare").click().run()
    assert not at.exception, at.exception
    assert at.session_state["model_a"] == key
    assert at.session_state["model_b"] == "bundled: synthetic_hcn_stdcl"
    # clearing forgets the job, not the run
    at.button(key="ft_clear").click().run()
    assert "No fine-tuning job yet" in " ".join(i.value for i in at.info)
    assert (run_dir / "last.safetensors").is_file()


def test_failed_run_shows_its_log(runs):
    at = open_page()
    set_tiny(at, steps=3, extra="debug.nan_at_step=1")
    at.button(key="ft_start").click().run()
    assert wait_end(runs) == "failed"
    at.run()
    assert not at.exception, at.exception
    assert headings(at)[0].startswith("Job failed")
    err = [e.value for e in at.error]
    assert len(err) == 1 and err[0].startswith("The run failed: stdcl: error:") and "loss is nan" in err[0]
    log = JobManager(runs / ".jobs").log_tail(40)
    assert log and at.get("code")[0].value == log


def test_changing_the_checkpoint_resets_the_form_and_the_launched_command_is_the_preview(runs, monkeypatch):
    launched: list[list[str]] = []
    monkeypatch.setattr(JobManager, "start", lambda self, args, run_dir, env=None, estimate=None: launched.append(list(args)))
    at = open_page()
    at.selectbox(key="ft_checkpoint").set_value("bundled: synthetic_ctrgcn_stdcl").run()
    assert at.number_input(key="ft_lr").value == pytest.approx(0.01)  # a tenth of CTR-GCN's SGD 0.1
    at.number_input(key="ft_batch").set_value(16).run()
    at.selectbox(key="ft_checkpoint").set_value("bundled: synthetic_hcn_stdcl").run()
    assert not at.exception
    # the form shows the new checkpoint's defaults: HCN's Adam 1e-3 / 10 and the batch it was trained with
    own_batch = read_meta(START)["config"]["train"]["batch_size"]
    assert at.number_input(key="ft_lr").value == pytest.approx(1e-4)
    assert at.number_input(key="ft_batch").value == own_batch
    preview = at.get("code")[-1].value
    assert "optim.lr=0.0001" in preview and f"train.batch_size={own_batch}" in preview
    assert f"steps of {own_batch}" in " ".join(i.value for i in at.info)
    assert not [w for w in at.warning if "fine-tuning default" in w.value]
    at.button(key="ft_start").click().run()
    # what runs is what is shown (a backslash-newline continues the line, as in a shell)
    assert launched and shlex.split(preview.replace("\\\n", " ")) == ["stdcl", "train", *launched[0]]
    assert all(len(line) < 200 for line in preview.splitlines()) and len(preview.splitlines()) > 5
    # a rate far above the fine-tuning default is flagged
    at.number_input(key="ft_lr").set_value(0.01).run()
    assert any("100x the fine-tuning default 0.0001" in w.value for w in at.warning)


def test_loss_chart_marks_where_the_contrastive_term_starts(runs):
    """A finished job whose banks filled at step 15: the chart has a rule there, and a note says why."""
    run = runs / "finetune-x"
    run.mkdir(parents=True)
    recs = [{"kind": "step", "epoch": 1, "global_step": n, "lr": 1e-4, "loss": 2.0 + 5 * (n >= 15), "ce": 2.0,
             "spatial": 5.0 * (n >= 15), "temporal": 5.0 * (n >= 15), "valid_frac_spatial": float(n >= 15),
             "valid_frac_temporal": float(n >= 15), "acc": 0.5, "samples_per_s": 10.0, "time_s": 1.0}
            for n in (5, 10, 15, 20)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    folder = runs / ".jobs"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({
        "id": "x", "pid": 2 ** 22 + 7, "proc_start": None, "command": ["python", "-m", "stdcl", "train"],
        "run_dir": str(run), "started": 1.0, "ended": 2.0, "state": "finished", "exit_code": 0,
        "cancel_requested": None}))
    at = open_page()
    assert not at.exception, at.exception
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    rules = [layer for layer in spec.get("layer", []) if (layer.get("mark") or {}).get("type") == "rule"]
    assert len(rules) == 1, spec
    marks = [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]
    assert any(list(m.get("global_step", [])) == [15] and "contrastive term starts (step 15)" in list(m["label"])
               for m in marks), marks
    assert any("Before step 15 the banks were filling" in c.value for c in at.caption)
