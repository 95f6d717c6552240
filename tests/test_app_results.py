"""The Results page (AppTest): a real tiny grid's table and curves, opening a row's runs as A / B,
records whose run directories are gone, and a bad grid path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analysis.experiments import open_results
from stdcl.experiment.grid import load_grid
from stdcl.experiment.records import read_records
from stdcl.experiment.runner import RunOptions, run_grid
from stdcl.experiment.table import build_table, to_rows
from tests.app_helpers import open_app, point_env, rerun

TINY = ['"data.source={num_samples: 120}"', "data.window=16", "train.batch_size=8", "data.num_workers=0",
        "stdcl.loss.num_pos=2", "stdcl.loss.num_neg=8", "stdcl.head.dim=32", "train.log_every=4",
        "train.epochs=2", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 2 x 2 grid (baseline / STD-CL x seeds 1, 2) run to the end; records in RESULTS."""
    d = tmp_path_factory.mktemp("results-grid")
    p = d / "tiny.yaml"
    p.write_text(f"name: tiny\nbase:\n  config: synthetic\n  encoder: hcn\n  overrides: [{', '.join(TINY)}]\n"
                 "axes:\n  stdcl: [off, on]\n  seed: [1, 2]\n")
    g = load_grid(p)
    outcomes = run_grid(g, d / "runs", d / "results", RunOptions(workers=2), report=lambda s: None,
                        show_progress=False)
    assert all(o.ok for o in outcomes)
    return g, d


@pytest.fixture
def env(tmp_path, monkeypatch):
    return point_env(monkeypatch, {"runs": tmp_path / "runs", "cache": tmp_path / "cache"}, umap_warm_up=False)


def open_grid(g, d: Path):
    at = open_app("results")
    at.selectbox(key="results_grid").set_value("another grid file…").run()
    at.text_input(key="results_grid_path").input(str(g.path)).run()
    at.text_input(key="results_folder").input(str(d / "results")).run()
    assert not at.exception, at.exception
    return at


def test_table_and_curves_equal_the_library_table(grid, env):
    g, d = grid
    at = open_grid(g, d)
    expected = to_rows(build_table(g, read_records(d / "results")))
    (frame,) = at.dataframe
    df = frame.value
    assert list(df["row"]) == ["all"]
    for key in ("baseline_final_mean", "stdcl_final_mean", "gain_final_mean"):
        assert df[key].iloc[0] == pytest.approx(round(100 * expected[0][key], 2))
    assert df["gain_final_n"].iloc[0] == 2
    (chart,) = [c for c in at.get("plotly_chart")]
    import json
    names = {t.get("name") for t in json.loads(chart.proto.spec)["data"] if t.get("name")}
    assert names == {"baseline", "STD-CL"}


def test_row_and_seed_open_the_std_cl_run_as_a_and_its_baseline_as_b(grid, env):
    g, d = grid
    at = open_grid(g, d)
    at.selectbox(key="results_seed").set_value("2").run()
    assert not at.button(key="results_open").disabled
    at.button(key="results_open").click().run()
    a, b = at.session_state["model_a"], at.session_state["model_b"]
    extra = at.session_state["extra_models"]
    assert Path(extra[a]) == d / "runs" / "stdcl-on_seed-2" and Path(extra[b]) == d / "runs" / "stdcl-off_seed-2"


def test_deleted_run_directories_disable_opening_with_a_notice(grid, env, tmp_path):
    g, d = grid
    kept = tmp_path / "kept"
    shutil.copytree(d / "results", kept)
    for rec in kept.glob("records/*.json"):  # the records point at run directories that no longer exist
        rec.write_text(rec.read_text().replace(str(d / "runs"), str(tmp_path / "deleted")))
    at = open_app("results")
    at.selectbox(key="results_grid").set_value("a results folder only").run()
    at.text_input(key="results_folder").input(str(kept)).run()
    assert not at.exception, at.exception
    assert at.dataframe and at.button(key="results_open").disabled
    assert any("deleted; only the record is kept" in i.value and "--only stdcl-on_seed-1" in i.value
               for i in at.info)
    assert open_results(None, kept).table.rows[0].gain_final.n == 2  # the table survives without its runs


def test_bad_grid_file_is_one_error_naming_it(env, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\naxes: [1, 2]\n")
    at = open_app("results")
    at.selectbox(key="results_grid").set_value("another grid file…").run()
    at.text_input(key="results_grid_path").input(str(bad)).run()
    assert not at.exception
    (err,) = at.error
    assert str(bad) in err.value and "axes must be a mapping" in err.value
    rerun(at)
