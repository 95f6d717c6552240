"""stdcl.experiment: grid expansion, run names, digests, the runner (resume after a kill, failure isolation),
the SLURM path through submitit's local executor, records and the table's statistics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stdcl.errors import DataError
from stdcl.train.config import load_config
from stdcl.experiment.grid import cell_name, config_digest, load_grid
from stdcl.experiment.records import read_record, read_records, record_path
from stdcl.experiment.runner import RunOptions, run_grid, train_command
from stdcl.experiment.status import cell_status, plan
from stdcl.experiment.table import aggregate, build_table, paired_difference, to_csv, to_markdown, to_rows

TINY = ['"data.source={num_samples: 120}"', "data.window=16", "train.batch_size=8", "data.num_workers=0",
        "stdcl.loss.num_pos=2", "stdcl.loss.num_neg=8", "stdcl.head.dim=32", "train.log_every=4",
        "train.epochs=2", "train.tensorboard=false"]


def write_grid(folder: Path, name: str = "tiny", axes: str = "  stdcl: [off, on]\n  seed: [1, 2]\n",
               extra: str = "", overrides: list[str] = TINY) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(f"name: {name}\nbase:\n  config: synthetic\n  encoder: hcn\n  overrides: [{', '.join(overrides)}]\n"
                 f"axes:\n{axes}{extra}")
    return p


# -- grids ----------------------------------------------------------------------------------------
def test_grid_expands_in_axis_order_with_deterministic_names(tmp_path):
    p = write_grid(tmp_path, axes="  encoder: [hcn, ctrgcn]\n  stdcl: [off, on]\n  seed: [1, 2]\n",
                   extra="cells:\n  - when: {encoder: ctrgcn}\n    overrides: {optim.lr: 0.05}\n"
                         "  - when: {encoder: ctrgcn, stdcl: on}\n    overrides: [stdcl.loss.weight=0.25]\n")
    g = load_grid(p)
    names = [c.name for c in g.cells]
    assert names[:4] == ["encoder-hcn_stdcl-off_seed-1", "encoder-hcn_stdcl-off_seed-2",
                         "encoder-hcn_stdcl-on_seed-1", "encoder-hcn_stdcl-on_seed-2"]
    assert len(names) == 8 and names == [c.name for c in load_grid(p).cells]
    by = {c.name: c.resolved_config() for c in g.cells}
    assert by["encoder-hcn_stdcl-on_seed-1"]["optim"]["lr"] == load_config("synthetic", encoder="hcn")["optim"]["lr"]
    assert by["encoder-ctrgcn_stdcl-off_seed-2"]["optim"]["lr"] == 0.05
    assert by["encoder-ctrgcn_stdcl-off_seed-2"]["stdcl"]["enabled"] is False
    assert by["encoder-ctrgcn_stdcl-on_seed-2"]["stdcl"]["loss"]["weight"] == 0.25
    assert by["encoder-ctrgcn_stdcl-off_seed-1"]["stdcl"]["loss"]["weight"] == 0.5
    assert by["encoder-ctrgcn_stdcl-on_seed-2"]["seed"] == 2
    assert by["encoder-hcn_stdcl-on_seed-1"]["model"]["encoder"] == "hcn"
    assert g.cell("encoder-hcn_stdcl-off_seed-1").train_args()[:6] == ["--config", "synthetic", "--encoder", "hcn",
                                                                     "--stdcl", "off"]


def test_config_key_axes_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    p = write_grid(tmp_path, axes="  optim.lr: [0.1, 0.05]\n  data.window: [16, 24]\n",
                   overrides=TINY + ["data.path=data"])
    g = load_grid(p)
    assert [c.name for c in g.cells] == ["optim.lr-0.1_data.window-16", "optim.lr-0.1_data.window-24",
                                         "optim.lr-0.05_data.window-16", "optim.lr-0.05_data.window-24"]
    cfg = g.cells[3].resolved_config()
    assert cfg["optim"]["lr"] == 0.05 and cfg["data"]["window"] == 24
    assert cfg["data"]["path"] == str((tmp_path / "data").resolve())  # relative to the grid file


def test_cell_name_formats_values():
    assert cell_name({"stdcl": False, "seed": 1}) == "stdcl-off_seed-1"
    assert cell_name({"stdcl.loss.num_pos": 4, "x": "a/b c"}) == "stdcl.loss.num-pos-4_x-a-b-c"
    assert cell_name({}) == "run"


def test_a_folder_or_missing_grid_file_is_named(tmp_path):
    for path, problem in ((tmp_path, "is a folder; give a grid file (.yaml)"), (tmp_path / "no.yaml", "no such grid file")):
        with pytest.raises(DataError) as e:
            load_grid(path)
        assert str(e.value) == f"{path}: {problem}"


@pytest.mark.parametrize("text, problem", [
    ("name: x\naxes: {seed: [1, 1]}\n", "repeats a value"),
    ("name: x\naxes: {seed: []}\n", "non-empty list"),
    ("name: x\nbogus: 1\n", "unknown key(s) bogus"),
    ("name: 'a b'\n", "must be letters"),
    ("name: x\naxes: {seed: [1]}\ncells: [{when: {encoder: hcn}, overrides: {}}]\n", "'encoder' is not an axis"),
    ("name: x\nbase: {encoder: nope}\n", "cell run: unknown encoder 'nope'"),
    ("name: x\nbase: {overrides: {train.epochz: 2}}\n", "unknown config key train.epochz"),
    ("name: x\nbase: {overrides: 3}\n", "overrides must be a mapping or a list"),
    ("name: x\naxes: {stdcl: [off, maybe]}\n", "stdcl-maybe"),
    ("name: x\naxes: [1, 2]\n", "axes must be a mapping"),
    ("", "an empty grid"),
    ("name: x\nbase: {}\naxes: {}\n", "an empty grid"),
])
def test_bad_grid_files_name_the_file(tmp_path, text, problem):
    p = tmp_path / "g.yaml"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        load_grid(p)
    assert str(e.value).startswith(str(p)) and problem in str(e.value)


def test_digest_ignores_execution_keys_only(tmp_path):
    g = load_grid(write_grid(tmp_path, axes="  seed: [1]\n"))
    cfg = g.cells[0].resolved_config()
    d = config_digest(cfg)
    for key, value in (("device", "cuda"), ("train.checkpoint_every_steps", 7), ("data.num_workers", 3)):
        other = json.loads(json.dumps(cfg))
        node = other
        *path, last = key.split(".")
        for k in path:
            node = node[k]
        node[last] = value
        assert config_digest(other) == d, key
    other = json.loads(json.dumps(cfg))
    other["optim"]["lr"] = 0.2
    assert config_digest(other) != d


# -- running --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2 x 2 grid run to the end (2 at once), plus a failing cell that must not stop the others."""
    d = tmp_path_factory.mktemp("grid")
    p = write_grid(d, axes="  stdcl: [off, on]\n  seed: [1, 2]\n",
                   extra="cells:\n  - when: {stdcl: on, seed: 2}\n    overrides: {debug.nan_at_step: 3}\n")
    g = load_grid(p)
    lines: list[str] = []
    outcomes = run_grid(g, d / "runs", d / "results", RunOptions(workers=2), report=lines.append,
                        show_progress=False)
    return g, d, outcomes, lines


def test_failed_run_is_isolated_and_reported_with_its_last_log_line(finished):
    g, d, outcomes, lines = finished
    by = {o.cell: o for o in outcomes}
    assert sorted(by) == sorted(c.name for c in g.cells)
    assert [n for n, o in by.items() if not o.ok] == ["stdcl-on_seed-2"]
    bad = by["stdcl-on_seed-2"]
    assert bad.exit_code == 2 and "loss is nan" in bad.message
    assert any(ln.startswith("FAIL  stdcl-on_seed-2") and "loss is nan" in ln for ln in lines)
    st = {s.cell.name: s for s in plan(g, d / "runs")}
    assert st["stdcl-on_seed-2"].status == "failed" and "loss is nan" in st["stdcl-on_seed-2"].message
    assert {st[n].status for n in ("stdcl-off_seed-1", "stdcl-off_seed-2", "stdcl-on_seed-1")} == {"finished"}
    assert st["stdcl-off_seed-1"].expected_s == 0.0 and st["stdcl-on_seed-2"].expected_s > 0


def test_finished_runs_write_valid_records_matching_their_metrics(finished):
    g, d, _, _ = finished
    recs = {r["cell"]: r for r in read_records(d / "results")}
    assert sorted(recs) == ["stdcl-off_seed-1", "stdcl-off_seed-2", "stdcl-on_seed-1"]
    r = recs["stdcl-on_seed-1"]
    summary = json.loads((d / "runs" / "stdcl-on_seed-1" / "summary.json").read_text())
    assert r["final_test_top1"] == summary["final"]["test_top1"]
    assert [e["epoch"] for e in r["epochs"]] == [1, 2] and r["epochs"][-1]["test_top1"] == r["final_test_top1"]
    assert r["config_digest"] == config_digest(g.cell("stdcl-on_seed-1").resolved_config())
    assert r["stdcl_enabled"] is True and recs["stdcl-off_seed-1"]["stdcl_enabled"] is False
    assert r["best_val"]["test_top1"] == summary["best"]["test_top1"] and r["values"] == {"stdcl": True, "seed": 1}
    assert r["device"] == "cpu" and r["train_s"] > 0
    assert (d / "runs" / "stdcl-on_seed-1" / "record.json").is_file()


def test_rerunning_skips_finished_and_retries_failed(finished, tmp_path):
    g, d, _, _ = finished
    # the failing override removed: the retried cell now finishes; finished ones are not run again
    text = g.path.read_text().replace("debug.nan_at_step: 3", "optim.lr: 0.1")
    fixed = tmp_path / "tiny.yaml"
    fixed.write_text(text)
    mtimes = {c: (d / "runs" / c / "summary.json").stat().st_mtime for c in ("stdcl-off_seed-1", "stdcl-on_seed-1")}
    out = run_grid(load_grid(fixed), d / "runs", d / "results", RunOptions(workers=1), report=lambda s: None,
                   show_progress=False)
    assert [(o.cell, o.ok) for o in out] == [("stdcl-on_seed-2", True)]
    assert all((d / "runs" / c / "summary.json").stat().st_mtime == m for c, m in mtimes.items())
    assert cell_status(load_grid(fixed).cell("stdcl-on_seed-2"), d / "runs").status == "finished"


def test_deleted_run_directories_count_as_recorded_and_are_not_rerun(finished, tmp_path):
    import shutil

    g, d, _, _ = finished
    results = tmp_path / "results"
    shutil.copytree(d / "results", results)
    empty = tmp_path / "runs"  # run directories deleted: only the committed records remain
    st = {s.cell.name: s for s in plan(g, empty, results=results)}
    assert {n for n, s in st.items() if s.status == "recorded"} == {"stdcl-off_seed-1", "stdcl-off_seed-2",
                                                                     "stdcl-on_seed-1"}
    assert st["stdcl-on_seed-1"].expected_s == 0.0 and st["stdcl-on_seed-2"].status == "new"
    assert cell_status(g.cell("stdcl-on_seed-1"), empty).status == "new"  # without records: nothing known
    # a changed config makes the record stale: the cell is new again
    text = g.path.read_text().replace("train.epochs=2", "train.epochs=3")
    changed = tmp_path / "tiny.yaml"
    changed.write_text(text)
    assert {s.status for s in plan(load_grid(changed), empty, results=results)} == {"new"}
    out = run_grid(g, empty, results, RunOptions(workers=1), only=["stdcl-off_seed-1"], report=lambda s: None,
                   show_progress=False)
    assert out == [] and not (empty / "stdcl-off_seed-1").exists()


def _wait_for(predicate, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    over = [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=3"]
    p = write_grid(tmp_path, axes="  stdcl: [on]\n", overrides=over)
    g = load_grid(p)
    opts = RunOptions(workers=1, checkpoint_every_steps=5)
    ref = run_grid(g, tmp_path / "ref", tmp_path / "ref-results", opts, report=lambda s: None, show_progress=False)
    assert ref[0].ok
    runs = tmp_path / "runs"
    t = threading.Thread(target=run_grid, args=(g, runs, tmp_path / "results", opts),
                         kwargs={"report": lambda s: None, "show_progress": False})
    t.start()
    state = runs / "stdcl-on" / "state.json"
    _wait_for(lambda: state.is_file() and json.loads(state.read_text())["state"]["global_step"] >= 5)
    lock = json.loads((runs / "logs" / "stdcl-on.lock").read_text())
    os.killpg(lock["pid"], signal.SIGKILL)  # the worker dies mid-run (no clean shutdown)
    t.join(60)
    assert cell_status(g.cells[0], runs).status == "failed"
    out = run_grid(g, runs, tmp_path / "results", opts, report=lambda s: None, show_progress=False)
    assert out[0].ok
    assert "--resume" in (runs / "logs" / "stdcl-on.log").read_text()
    a = read_record(record_path(tmp_path / "ref-results", "stdcl-on"))
    b = read_record(record_path(tmp_path / "results", "stdcl-on"))
    keys = ("epoch", "global_step", "val_top1", "test_top1", "test_top5", "train_loss", "train_acc")
    assert [{k: e[k] for k in keys} for e in a["epochs"]] == [{k: e[k] for k in keys} for e in b["epochs"]]
    assert a["final_test_top1"] == b["final_test_top1"]


def test_train_command_resumes_and_spreads_gpus(tmp_path):
    g = load_grid(write_grid(tmp_path, axes="  seed: [1]\n"))
    c = g.cells[0]
    cmd = train_command(c, tmp_path / "r", RunOptions(checkpoint_every_steps=50, gpus=("0", "1"), ddp=True), False)
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert "train.checkpoint_every_steps=50" in cmd and "device=cuda" in cmd and cmd[-3] == "--out"
    res = train_command(c, tmp_path / "r", RunOptions(checkpoint_every_steps=None), True)
    assert res[1:] == ["-m", "stdcl", "train", "--resume", str(tmp_path / "r"), "--no-progress"]


def test_slurm_path_through_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    from stdcl.experiment.slurm import SlurmOptions, submit_grid

    p = write_grid(tmp_path, axes="  stdcl: [off]\n")
    opts = SlurmOptions(partition="gpu", time_min=10, gpus_per_task=0, cpus_per_task=1)
    jobs = submit_grid(p, ["stdcl-off"], tmp_path / "runs", tmp_path / "results", opts, cluster="local")
    out = jobs[0].result()
    assert out.ok and out.message == "finished"
    rec = read_record(record_path(tmp_path / "results", "stdcl-off"))
    assert rec["cell"] == "stdcl-off" and rec["device"] == "cpu" and rec["final_test_top1"] is not None


# -- records --------------------------------------------------------------------------------------
def _record(cell: str, values: dict, final: float, best: float | None = None, grid: str = "g") -> dict:
    return {"format": "stdcl-experiment-record", "version": 1, "grid": grid, "cell": cell, "values": values,
            "config_digest": "d", "stdcl_enabled": values.get("stdcl", True),
            "epochs": [{"epoch": 1, "test_top1": final / 2}, {"epoch": 2, "test_top1": final}],
            "final_test_top1": final, "best_val": None if best is None else {"epoch": 2, "val_top1": 0.5,
                                                                             "test_top1": best}}


@pytest.mark.parametrize("mutate, problem", [
    (lambda r: r.update(format="x"), "not a results record"),
    (lambda r: r.update(final_test_top1=1.5), "not an accuracy"),
    (lambda r: r.update(final_test_top1="0.5"), "must be a number"),
    (lambda r: r.update(values=[1]), "'values' must be a mapping"),
    (lambda r: r["epochs"].append({"epoch": "3"}), "integer 'epoch'"),
    (lambda r: r.update(best_val={"test_top1": "x"}), "best_val"),
    (lambda r: r.pop("config_digest"), "config_digest"),
])
def test_bad_records_name_the_file(tmp_path, mutate, problem):
    r = _record("c", {"seed": 1}, 0.5)
    mutate(r)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(r))
    with pytest.raises(DataError) as e:
        read_record(p)
    assert str(e.value).startswith(str(p)) and problem in str(e.value)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["grid", "cell", "values", "epochs", "final_test_top1", "best_val", "stdcl_enabled",
                            "version", "config_digest"]), value=json_values, cut=st.integers(0, 400))
def test_fuzzed_records_parse_or_fail_with_one_line(tmp_path, key, value, cut):
    r = _record("c", {"seed": 1}, 0.5)
    r[key] = value
    text = json.dumps(r)
    for i, body in enumerate((text, text[:cut])):
        p = tmp_path / f"f{i}.json"
        p.write_text(body)
        try:
            rec = read_record(p)
        except DataError as e:
            assert "\n" not in str(e) and str(p) in str(e)
        else:
            aggregate([rec])  # anything accepted can be tabulated


# -- the table ------------------------------------------------------------------------------------
def test_table_statistics_equal_a_hand_computation():
    off = {1: 0.80, 2: 0.82, 3: 0.78}
    on = {1: 0.82, 2: 0.85, 3: 0.79}  # diffs 0.02, 0.03, 0.01
    recs = [_record(f"stdcl-off_seed-{s}", {"stdcl": False, "seed": s}, v, best=v - 0.01) for s, v in off.items()]
    recs += [_record(f"stdcl-on_seed-{s}", {"stdcl": True, "seed": s}, v, best=v) for s, v in on.items()]
    recs.append(_record("stdcl-on_seed-4", {"stdcl": True, "seed": 4}, 0.90))  # unpaired: in the mean, not the gain
    t = aggregate(recs, "g")
    (row,) = t.rows
    assert row.baseline_final.n == 3 and row.baseline_final.mean == pytest.approx(0.80)
    assert row.baseline_final.sd == pytest.approx(0.02)  # sqrt(((0)^2 + 0.02^2 + 0.02^2) / 2)
    assert row.stdcl_final.n == 4 and row.stdcl_final.mean == pytest.approx((0.82 + 0.85 + 0.79 + 0.90) / 4)
    g = row.gain_final
    assert g.n == 3 and g.seeds == ["1", "2", "3"] and g.mean == pytest.approx(0.02) and g.sd == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2)
    assert g.ci_low == pytest.approx(0.02 - half) and g.ci_high == pytest.approx(0.02 + half)
    assert row.gain_best.mean == pytest.approx(0.03) and row.gain_best.n == 3
    md = to_markdown(t)
    assert "| all | 80.00 ± 2.00 | 84.00 ± 4.69 | +2.00 [-0.48, +4.48] | 3 |" in md
    flat = to_rows(t)[0]
    assert flat["gain_final_ci_low"] == pytest.approx(0.02 - half) and "gain_final_n" in to_csv(t).splitlines()[0]


def test_paired_difference_of_one_seed_has_no_interval():
    p = paired_difference({"1": 0.9}, {"1": 0.8, "2": 0.7})
    assert p.n == 1 and p.mean == pytest.approx(0.1) and p.ci_low is None and p.sd is None


def test_build_table_leaves_out_records_of_changed_configs(tmp_path):
    g = load_grid(write_grid(tmp_path, axes="  stdcl: [off, on]\n"))
    digest = {c.name: config_digest(c.resolved_config()) for c in g.cells}
    a = _record("stdcl-off", {"stdcl": False}, 0.5, grid="tiny") | {"config_digest": digest["stdcl-off"]}
    b = _record("stdcl-on", {"stdcl": True}, 0.6, grid="tiny") | {"config_digest": "0123"}
    c = _record("elsewhere", {"stdcl": True}, 0.6, grid="tiny")
    t = build_table(g, [a, b, c])
    assert t.rows[0].baseline_final.mean == 0.5 and t.rows[0].stdcl_final.n == 0
    assert t.missing == ["stdcl-on"] and len(t.skipped) == 2 and "another config" in t.skipped[1 if "elsewhere" in
                                                                                                 t.skipped[0] else 0]


# -- command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["plan", "run", "collect", "table"])
def test_experiment_help(sub):
    out = subprocess.run([sys.executable, "-m", "stdcl", "experiment", sub, "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "examples:" in out and "grid" in out


def test_cli_plan_and_table_outputs(finished, tmp_path):
    g, d, _, _ = finished
    env = dict(os.environ)
    run = lambda *a: subprocess.run([sys.executable, "-m", "stdcl", "experiment", *a, str(g.path), "--runs",
                                     str(d / "runs"), "--results", str(d / "results")], capture_output=True,
                                    text=True, env=env)
    plan_out = run("plan")
    assert plan_out.returncode == 0, plan_out.stderr
    assert "stdcl-on_seed-1" in plan_out.stdout and "finished" in plan_out.stdout
    out = tmp_path / "table"
    tab = run("table", "--out", str(out))
    assert tab.returncode == 0, tab.stderr
    assert {p.name for p in out.iterdir()} >= {"table.md", "table.csv", "table.json", "curves.png", "curves.html"}
    doc = json.loads((out / "table.json").read_text())
    recs = read_records(d / "results")
    assert doc["rows"][0]["baseline_final"]["values"] == sorted(
        [r["final_test_top1"] for r in recs if r["stdcl_enabled"] is False], key=[
            r["final_test_top1"] for r in recs if r["stdcl_enabled"] is False].index)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in (out / "curves.html").read_text()[:100000].lower()
    bad = subprocess.run([sys.executable, "-m", "stdcl", "experiment", "plan", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == f"stdcl: error: {tmp_path / 'nope.yaml'}: no such grid file"


def test_results_folder_is_in_the_grid_files_project_wherever_the_command_runs(tmp_path, monkeypatch):
    from stdcl.experiment.status import results_dir

    project = tmp_path / "proj"
    (project / "experiments").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    g = load_grid(write_grid(project / "experiments", name="g1"))
    monkeypatch.chdir(tmp_path)
    assert results_dir(g) == (project / "results" / "g1").resolve()
    assert results_dir(g, tmp_path / "r") == (tmp_path / "r").resolve()
    loose = load_grid(write_grid(tmp_path, name="g2"))  # no project above it: the working directory
    assert results_dir(loose) == (tmp_path / "results" / "g2").resolve()


# -- variants (ablations against one shared baseline) ----------------------------------------------
VARIANT_GRID = ("variants:\n  baseline: {stdcl.enabled: false}\n  light: {stdcl.loss.weight: 0.1}\n"
                "  queue: [stdcl.loss.bank=class_queue, stdcl.loss.queue_length=8]\n")


def test_variants_expand_into_their_overrides(tmp_path):
    g = load_grid(write_grid(tmp_path, axes="  variant: [baseline, light, queue]\n  seed: [1, 2]\n",
                             extra=VARIANT_GRID))
    assert [c.name for c in g.cells][:3] == ["variant-baseline_seed-1", "variant-baseline_seed-2",
                                             "variant-light_seed-1"]
    cfg = {c.name: c.resolved_config() for c in g.cells}
    assert cfg["variant-baseline_seed-1"]["stdcl"]["enabled"] is False
    assert cfg["variant-light_seed-2"]["stdcl"]["loss"]["weight"] == 0.1 and cfg["variant-light_seed-2"]["seed"] == 2
    assert cfg["variant-queue_seed-1"]["stdcl"]["loss"]["bank"] == "class_queue"
    assert cfg["variant-queue_seed-1"]["stdcl"]["loss"]["weight"] == 0.5  # the base value elsewhere


@pytest.mark.parametrize("axes, extra, problem", [
    ("  variant: [a]\n", "", "needs `variants`"),
    ("  variant: [a, b]\n", "variants:\n  a: {seed: 2}\n", "variant b not in variants"),
    ("  seed: [1]\n", "variants:\n  a: {seed: 2}\n", "no `variant` axis"),
])
def test_bad_variants_name_the_grid_file(tmp_path, axes, extra, problem):
    p = write_grid(tmp_path, axes=axes, extra=extra)
    with pytest.raises(DataError, match=problem) as e:
        load_grid(p)
    assert str(p) in str(e.value)


def test_variant_rows_are_paired_with_the_baseline_variant():
    off = {1: 0.80, 2: 0.84}
    light = {1: 0.83, 2: 0.85}
    recs = [_record(f"variant-baseline_seed-{s}", {"variant": "baseline", "seed": s}, v) for s, v in off.items()]
    for r in recs:
        r["stdcl_enabled"] = False
    recs += [_record(f"variant-light_seed-{s}", {"variant": "light", "seed": s}, v) for s, v in light.items()]
    t = aggregate(recs, "g")
    rows = {r.key["variant"]: r for r in t.rows}
    assert rows["baseline"].stdcl_final.n == 0 and rows["baseline"].gain_final.n == 0
    lt = rows["light"]
    assert lt.baseline_of == "baseline" and lt.baseline_final.mean == pytest.approx(0.82)
    assert lt.gain_final.n == 2 and lt.gain_final.diffs == pytest.approx([0.03, 0.01])
    assert lt.cells["off"] == {"1": "variant-baseline_seed-1", "2": "variant-baseline_seed-2"}
    assert "| variant=light | 82.00 ± 2.83 | 84.00 ± 1.41 | +2.00" in to_markdown(t)


def test_a_run_without_resume_state_is_set_aside_and_one_with_state_kept(tmp_path):
    from stdcl.experiment.runner import _clear_stale_start

    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "config.yaml").write_text("seed: 1\n")
    _clear_stale_start(dead)
    assert not dead.exists() and [p.name.split(".abandoned-")[0] for p in tmp_path.iterdir()] == ["dead"]
    alive = tmp_path / "alive"
    alive.mkdir()
    (alive / "config.yaml").write_text("seed: 1\n")
    (alive / "state-200.safetensors").write_bytes(b"x")  # a state file whose state.json is not written yet
    _clear_stale_start(alive)
    assert (alive / "state-200.safetensors").is_file()


def test_a_run_that_exits_well_but_unfinished_says_what_it_looks_like(tmp_path):
    """``debug.stop_after_steps`` ends the process with exit 0 and no summary: the outcome names the status."""
    g = load_grid(write_grid(tmp_path, axes="  seed: [1]\n", overrides=[*TINY, "debug.stop_after_steps=2"]))
    (out,) = run_grid(g, tmp_path / "runs", tmp_path / "results", RunOptions(workers=1), report=lambda s: None,
                      show_progress=False)
    assert not out.ok and out.exit_code == 0
    assert out.message.startswith("exited 0 but the run is partial; last log line: ")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))
