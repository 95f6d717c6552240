"""Damaged run directories on ``stdcl train --resume`` (each damage: a recovery that ends exactly like an
undamaged resume, or one line naming the file and the problem), and runs that fail before their first
checkpoint (a new run with the same --out, or --resume, starts them afresh)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from stdcl.cli import main
from stdcl.errors import ConfigError, DataError
from stdcl.train.engine import train
from stdcl.train.run_dir import has_state, is_failed_attempt, prepare_new, read_metrics, resume_config
from stdcl.train.state import load_state, save_state
from tests.support.training import TINY, assert_same_tensors, tensors, tiny_config

# 65 training items, 8 steps an epoch; stopped at step 4 with states at steps 2 and 4; it ends at step 6
EXTRA = ("data.source={num_samples: 100}", "train.epochs=1", "train.max_steps=6", "train.checkpoint_every_steps=2")
STATE_4, STATE_2 = "state-000000004.safetensors", "state-000000002.safetensors"
RESUME = ["-q", "train", "debug.stop_after_steps=null", "--resume"]  # (a fallback to step 2 would stop at 4 again)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """(a run stopped at step 4, the same run resumed to its end undamaged)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("damage")
    cut = root / "cut"
    assert train(tiny_config(*EXTRA, "debug.stop_after_steps=4"), cut)["stopped"]
    assert {STATE_2, STATE_4} <= {p.name for p in cut.iterdir()}
    ref = root / "ref"
    shutil.copytree(cut, ref)
    assert main([*RESUME, str(ref)]) == 0
    return cut, ref


@pytest.fixture
def run(runs, tmp_path) -> Path:
    torch.set_num_threads(1)
    shutil.copytree(runs[0], tmp_path / "run")
    return tmp_path / "run"


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def without_run_dir(summary: Path) -> dict:
    return {k: v for k, v in json.loads(summary.read_text()).items() if k != "run_dir"}


def append(name: str, text: str):
    def hurt(run: Path) -> None:
        with open(run / name, "a") as f:
            f.write(text)
    return hurt


def state_entry(key, value):
    return lambda r: edit_json(r / "state.json", lambda o: o["state"].__setitem__(key, value))


def resave(change):
    def hurt(run: Path) -> None:
        st = load_state(run)
        change(st)
        save_state(run, st)
    return hurt


# damage -> (what the warning names, whether the metrics log stays complete)
RECOVERED = {
    "state.json cut short": (lambda r: cut_in_half(r / "state.json"), "not valid training state", True),
    "state.json deleted": (lambda r: (r / "state.json").unlink(), "state.json: no training state", True),
    "state.json not a mapping": (lambda r: (r / "state.json").write_text("[1, 2]"), "state.json: not a stdcl", True),
    "state.json names no file": (lambda r: edit_json(r / "state.json", lambda o: o.update(
        tensors="state-000000099.safetensors")), "names state-000000099.safetensors, which does not exist", True),
    "state.json wrong type": (state_entry("global_step", "four"), "state.json differs from the state stored", True),
    "state.json an entry emptied": (state_entry("model", None), "state.json differs from the state stored", True),
    "latest state file cut short": (lambda r: cut_in_half(r / STATE_4), f"{STATE_4}: not a readable", True),
    "latest state file deleted": (lambda r: (r / STATE_4).unlink(), f"names {STATE_4}, which does not exist", True),
    "last.safetensors cut short": (lambda r: cut_in_half(r / "last.safetensors"), "last.safetensors: missing", True),
    "last.json deleted": (lambda r: (r / "last.json").unlink(), "last.safetensors: missing", True),
    "last.head deleted": (lambda r: (r / "last.head.safetensors").unlink(), "last.safetensors: missing", True),
    "run.json cut short": (lambda r: cut_in_half(r / "run.json"), "run.json missing or damaged", True),
    "val_split.json wrong type": (lambda r: (r / "val_split.json").write_text("[]"), "val_split.json missing", True),
    "metrics.jsonl damaged lines": (append("metrics.jsonl", '[1, 2]\n{"kind": "step", "global_step": "x"}\n'
                                                            '{"kind": "st'), "dropped 3 damaged line(s)", False),
    "metrics.jsonl deleted": (lambda r: (r / "metrics.jsonl").unlink(), None, False),
    "a best the state does not record": (lambda r: [shutil.copy(r / f"last{x}", r / f"best{x}")
                                                    for x in (".safetensors", ".json", ".head.safetensors")],
                                         None, True),
    "a best the state records, gone": (resave(lambda st: st.__setitem__("best", {
        "val_top1": 0.9, "test_top1": 0.9, "epoch": 1, "global_step": 4})), "the next evaluation writes a new one",
        True),
    "a write cut short": (lambda r: (r / ".state-000000006.safetensors.abcd1234.part.safetensors").write_bytes(b"x"),
                          "removed 1 unfinished file(s) of a killed session", True),
}


@pytest.mark.parametrize("damage", sorted(RECOVERED))
def test_resume_recovers_from_damage_it_can_repair_and_ends_like_an_undamaged_resume(damage, runs, run, caplog,
                                                                                   capsys):
    hurt, warning, metrics_kept = RECOVERED[damage]
    hurt(run)
    assert main([*RESUME, str(run)]) == 0, capsys.readouterr().err
    if warning:
        assert warning in caplog.text
    ref = runs[1]
    assert without_run_dir(run / "summary.json") == without_run_dir(ref / "summary.json")
    for name in ("last.safetensors", "last.head.safetensors", "best.safetensors"):
        assert_same_tensors(tensors(ref / name), tensors(run / name))
    steps = [r["global_step"] for r in read_metrics(run)]
    assert steps == sorted(steps) and read_metrics(run)[-1]["kind"] == "final"
    if metrics_kept:
        assert steps == [r["global_step"] for r in read_metrics(ref)]
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ref.iterdir())
    assert isinstance(json.loads((run / "run.json").read_text()), dict)


def write(name: str, text: str | bytes):
    return lambda r: (r / name).write_bytes(text if isinstance(text, bytes) else text.encode())


def set_config(old: str, new: str):
    return lambda r: (r / "config.yaml").write_text((r / "config.yaml").read_text().replace(old, new, 1))


# damage -> the error line (after "stdcl: error: RUN/")
FATAL = {
    "no state file left": (lambda r: [(r / n).unlink() for n in (STATE_2, STATE_4)],
                           f"state.json: names {STATE_4}, which does not exist"),
    "every state file damaged": (lambda r: [cut_in_half(r / n) for n in (STATE_2, STATE_4)],
                                 f"{STATE_4}: not a readable safetensors file"),
    "a state that does not fit the model": (resave(lambda st: st["model"].__setitem__("encoder.conv1.0.weight",
                                                                                      torch.zeros(2))),
                                            "state.json: the saved state does not fit this run (RuntimeError"),
    "an inconsistent position": (resave(lambda st: st.__setitem__("batch_in_epoch", 3)),
                                 "state.json: inconsistent position: global step 4 is not epoch 0 x 8 steps"),
    "config.yaml cut short": (lambda r: cut_in_half(r / "config.yaml"), "config.yaml: "),
    "config.yaml deleted": (lambda r: (r / "config.yaml").unlink(), ": not a run directory (no config.yaml)"),
    "config.yaml not text": (write("config.yaml", b"\xff\xfe\x00"), "config.yaml: not UTF-8 text"),
    "config.yaml a key that no longer validates": (set_config("lr: 0.001", "lr: -1"),
                                                   "config.yaml: config key optim.lr must be a finite number >= 0, "
                                                   "got -1 (edit the file, or give the key as key=value, to resume)"),
    "config.yaml a section of the wrong type": (set_config("train:", "train: 5\nold_train:"),
                                                "config.yaml: config key train must be a mapping, got 5"),
    "config.yaml a key missing": (set_config("  epochs: 1\n", ""), "config.yaml: config key train.epochs is missing"),
    "config.yaml a batch size the state does not fit": (set_config("  batch_size: 8", "  batch_size: 4"),
                                                        "the saved run has 8 steps per epoch, this configuration 17"),
    "ended, its state gone": (lambda r: [(r / n).unlink() if n.startswith("state") else (r / n).write_text("{}")
                                         for n in ("state.json", STATE_2, STATE_4, "summary.json")],
                              "state.json: missing: the run ended"),
}


@pytest.mark.parametrize("damage", sorted(FATAL))
def test_damage_it_cannot_repair_is_one_line_naming_the_file(damage, run, capsys):
    hurt, message = FATAL[damage]
    hurt(run)
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main([*RESUME, str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"stdcl: error: {run}") and message in err, err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "train.log"}
    assert after == {k: v for k, v in files.items() if k != "train.log"}  # nothing else touched


def test_an_override_mends_a_saved_config_and_a_bad_override_is_named_as_such(run):
    set_config("lr: 0.001", "lr: -1")(run)
    assert resume_config(run, ["optim.lr=0.002"])["optim"]["lr"] == 0.002
    set_config("lr: -1", "lr: 0.001")(run)
    with pytest.raises(ConfigError, match="^config key optim.lr must be") as e:
        resume_config(run, ["optim.lr=-2"])
    assert not isinstance(e.value, DataError)


# -- runs that fail before their first checkpoint ----------------------------------------------

def test_a_run_failing_on_step_1_is_started_afresh_by_a_new_run_or_by_resume(tmp_path, capsys):
    torch.set_num_threads(1)
    run, other = tmp_path / "run", tmp_path / "other"
    args = ["train", "--config", "synthetic", "--encoder", "hcn", "--out", str(run), *TINY, *EXTRA]
    assert main([*args, "debug.nan_at_step=1"]) == 2
    assert "loss is nan" in capsys.readouterr().err
    assert is_failed_attempt(run) and not has_state(run)
    first_log = (run / "train.log").read_text()
    assert "session ended: TrainingDiverged: loss is nan" in first_log
    shutil.copytree(run, other)

    assert main(args) == 0  # the same --out: reused, keeping only its log
    log = (run / "train.log").read_text()
    assert log.startswith(first_log) and "previous attempt ended before its first checkpoint" in log
    assert json.loads((run / "summary.json").read_text())["global_step"] == 6

    assert main(["train", "--resume", str(other), "train.init_from=/nowhere.safetensors"]) == 2  # fails again:
    assert (other / "config.yaml").is_file() and is_failed_attempt(other)  # still resumable, its config kept
    assert main(["train", "--resume", str(other), "debug.nan_at_step=null"]) == 0  # from step 0, its config
    assert "has no training state (it ended before its first checkpoint): starting it from step 0" in \
        (other / "train.log").read_text()
    assert_same_tensors(tensors(run / "last.safetensors"), tensors(other / "last.safetensors"))
    assert without_run_dir(run / "summary.json") == without_run_dir(other / "summary.json")
    assert [r.get("loss") for r in read_metrics(run)] == [r.get("loss") for r in read_metrics(other)]


def test_only_a_failed_attempt_is_reused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("config.yaml", "run.json", "metrics.jsonl", "train.log", ".last.json.abcd1234.part.json"):
        (d / name).write_text("x")
    (d / "tensorboard").mkdir()
    (d / "tensorboard" / "events").write_text("x")
    for extra in ("notes.txt", "state.json", "state-000000003.safetensors", "summary.json"):
        (d / extra).write_text("x")
        with pytest.raises(ConfigError, match="already exists"):
            prepare_new(d)
        (d / extra).unlink()
    assert prepare_new(d) is True
    assert [p.name for p in d.iterdir()] == ["train.log"]
    assert prepare_new(tmp_path / "new") is False and (tmp_path / "new").is_dir()
