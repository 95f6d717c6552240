"""Training configs (layers, overrides, errors), the lr schedule, validation carving, sampler, state files."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch

from stdcl.errors import ConfigError
from stdcl.encoders import available
from stdcl.train.config import (CHOICES, NUMBERS, OPTIONAL_TEXT, PROTOCOLS, _INTERVAL, _leaves, dump_config,
                                load_config, parse_override, read_yaml, schema, validate)
from stdcl.train.optim import Schedule, build_optimizer, lr_at
from stdcl.train.splits import EpochSampler, carve_validation, describe_validation
from stdcl.train.state import join_tensors, load_state, rng_state, save_state, set_rng_state, split_tensors


# -- configs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("encoder", available())
def test_every_packaged_combination_resolves(protocol, encoder):
    cfg = load_config(protocol, encoder=encoder)
    assert cfg["protocol"] == protocol and cfg["model"]["encoder"] == encoder
    assert cfg["optim"]["lr"] > 0 and cfg["train"]["epochs"] > 0


def test_ctrgcn_recipe_and_its_ucla_override():
    ntu = load_config("ntu60-xsub", encoder="ctrgcn")
    assert (ntu["optim"]["name"], ntu["optim"]["lr"], ntu["optim"]["nesterov"], ntu["optim"]["weight_decay"]) == \
        ("sgd", 0.1, True, 4e-4)
    assert (ntu["schedule"]["warmup_epochs"], ntu["schedule"]["milestones"], ntu["train"]["epochs"],
            ntu["train"]["batch_size"]) == (5, [35, 55], 65, 64)
    ucla = load_config("ucla", encoder="ctrgcn")
    assert (ucla["train"]["batch_size"], ucla["optim"]["weight_decay"], ucla["schedule"]["milestones"],
            ucla["train"]["epochs"], ucla["data"]["repeat"], ucla["data"]["window"]) == (16, 1e-4, [50], 65, 5, 52)


def test_hyperformer_is_the_stdcl_recipe_with_per_dataset_differences():
    h = load_config("ntu60-xsub", encoder="hyperformer")
    assert (h["optim"]["lr"], h["schedule"]["milestones"], h["train"]["epochs"], h["seed"]) == \
        (0.025, [110, 120], 140, 2)
    assert load_config("ntu60-xview", encoder="hyperformer")["optim"]["lr"] == 0.01
    u = load_config("ucla", encoder="hyperformer")
    assert (u["train"]["epochs"], u["train"]["batch_size"], u["optim"]["weight_decay"]) == (150, 16, 0.0)
    hcn = load_config("ntu60-xsub", encoder="hcn")
    assert (hcn["optim"]["name"], hcn["optim"]["lr"], hcn["schedule"]["kind"], hcn["schedule"]["gamma"],
            hcn["train"]["epochs"]) == ("adam", 1e-3, "exponential", 0.99, 400)


def test_command_line_choices_and_overrides_win():
    cfg = load_config("ucla", encoder="ctrgcn", modality="bone", stdcl="off",
                      overrides=["train.epochs=2", "data.path=/x/y", "schedule.milestones=[1, 2]", "optim.lr=1e-3",
                                 "data.source={num_samples: 10}", "train.amp=bf16"])
    assert cfg["data"]["modality"] == "bone" and cfg["stdcl"]["enabled"] is False
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["path"] == "/x/y"
    assert cfg["schedule"]["milestones"] == [1, 2] and cfg["optim"]["lr"] == 1e-3
    assert cfg["data"]["source"] == {"num_samples": 10} and cfg["train"]["amp"] == "bf16"
    # the encoder recipe follows an override of model.encoder too
    assert load_config("ntu60-xsub", overrides=["model.encoder=hcn"])["optim"]["name"] == "adam"


def test_parse_override_values():
    assert parse_override("a.b=2") == (["a", "b"], 2)
    assert parse_override("x=1e-4")[1] == 1e-4 and parse_override("x=1e32")[1] == 1e32
    assert parse_override("x=null")[1] is None and parse_override("x=[1,2]")[1] == [1, 2]
    assert parse_override("x=on")[1] is True and parse_override("x=abc")[1] == "abc"
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


@pytest.mark.parametrize("override, message", [
    ("train.epochz=3", "did you mean train.epochs"),
    ("optim.lr=-1", "optim.lr must be a finite number >= 0, got -1"),
    ("optim.lr=nan", "optim.lr must be a finite number >= 0, got 'nan'"),
    ("stdcl.loss.tau=.inf", "stdcl.loss.tau must be a finite number > 0, got inf"),
    ("optim.momentum=1", r"optim.momentum must be a finite number in \[0, 1\), got 1"),
    ("optim.betas=[0.9, .nan]", "optim.betas must be two numbers in"),
    ("train.epochs=2.5", "train.epochs must be a whole number >= 1, got 2.5"),
    ("optim.nesterov=maybe", "optim.nesterov must be true or false"),
    ("train.tensorboard=1", "train.tensorboard must be one of auto, true, false; got 1"),
    ("stdcl.head.branches=[spatial, spatial]", "stdcl.head.branches must be a non-empty list"),
    ("stdcl.loss.bank=class_queue", "stdcl.loss.queue_length must be set"),
    ("optim=null", "config key optim must be a mapping, got None"),
    ("schedule.kind=linear", "schedule.kind must be one of"),
    ("data.val_fraction=1.5", "val_fraction"),
    ("nonsense=1", "unknown config key nonsense"),
    ("stdcl.head.dim=100000000", r"stdcl.head.dim must be a whole number in \[1, 65536\]"),  # what a checkpoint holds
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config("synthetic", overrides=[override])
    assert "\n" not in str(e.value)


def _bad_values(spec: str) -> list:
    """Values outside a :data:`NUMBERS` rule: non-finite, of the wrong kind, just past each bound."""
    integer, _, lo_br, lo, hi, hi_br = _INTERVAL.match(spec).groups()
    bad = [".nan", ".inf", "-.inf", "true", "abc"] + (["1.5"] if integer else [])
    step = 1 if integer else 1e-9
    bad.append(str(float(lo) - step if lo_br == "[" else lo))
    if hi != "inf":
        bad.append(str(float(hi) + step if hi_br == "]" else hi))
    return bad


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_every_numeric_option_rejects_non_finite_and_out_of_range_values(key):
    for value in _bad_values(NUMBERS[key]):
        with pytest.raises(ConfigError, match=f"^config key {key} must be ") as e:
            load_config("synthetic", overrides=[f"{key}={value}"])
        assert "\n" not in str(e.value), value


def test_every_option_of_base_yaml_has_a_check():
    """A number (or null) default needs a range rule; everything else is checked by its default's type."""
    leaves = dict(_leaves(schema()))
    numeric = {k for k, v in leaves.items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric - {"protocol", "config_file"} <= set(NUMBERS) | set(CHOICES) | set(OPTIONAL_TEXT)
    assert set(NUMBERS) | set(CHOICES) | set(OPTIONAL_TEXT) <= set(leaves)
    resolved = load_config("synthetic")
    for key in leaves:  # none may go missing
        cfg = copy.deepcopy(resolved)
        node = cfg
        *path, last = key.split(".")
        for k in path:
            node = node[k]
        del node[last]
        with pytest.raises(ConfigError, match=f"config key {key} is missing"):
            validate(cfg)


def test_free_form_sections_accept_any_key_and_unknown_protocol_fails():
    cfg = load_config("synthetic", overrides=["data.transform.theta=0.1", "model.options.drop_out=0.2"])
    assert cfg["data"]["transform"] == {"theta": 0.1} and cfg["model"]["options"] == {"drop_out": 0.2}
    with pytest.raises(ConfigError, match="unknown config"):
        load_config("imagenet")
    with pytest.raises(ConfigError, match="unknown encoder"):
        load_config("synthetic", encoder="resnet")


def test_user_file_builds_on_a_protocol_and_round_trips(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: ucla\ndata: {path: /data/ucla}\noptim: {lr: 0.05}\ntrain: {epochs: 3}\n")
    cfg = load_config(f, encoder="ctrgcn", overrides=["train.epochs=4"])
    assert cfg["protocol"] == "ucla" and cfg["data"]["dataset"] == "ucla" and cfg["data"]["path"] == "/data/ucla"
    assert cfg["optim"]["lr"] == 0.05 and cfg["train"]["epochs"] == 4  # file beats recipe, override beats file
    assert cfg["train"]["batch_size"] == 16  # the ctrgcn ucla recipe still applies
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_config(cfg))
    assert read_yaml(out) == cfg
    assert "milestones: [50]" in out.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: ucla\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(broken)


# -- schedule -----------------------------------------------------------------------------------

def test_warmup_then_step_decay_is_the_reference_rule():
    cfg = load_config("ntu60-xsub", encoder="ctrgcn")
    s = Schedule(cfg["schedule"], 0.1, 65, steps_per_epoch=100)
    assert [round(s.lr(e), 10) for e in range(6)] == [0.02, 0.04, 0.06, 0.08, 0.1, 0.1]
    assert s.lr(34) == pytest.approx(0.1) and s.lr(35) == pytest.approx(0.01) and s.lr(54) == pytest.approx(0.01)
    assert s.lr(55) == pytest.approx(0.001) and s.lr(64) == pytest.approx(0.001)
    assert s.lr(2, 99) == s.lr(2, 0)  # per epoch by default


def test_per_step_warmup_cosine_exponential_constant():
    s = Schedule({"kind": "step", "warmup_epochs": 2, "milestones": [4], "gamma": 0.1, "per_step": True}, 1.0, 10, 4)
    assert [s.lr(0, i) for i in range(4)] == pytest.approx([0.5, 0.625, 0.75, 0.875])
    assert s.lr(1, 3) == pytest.approx(1.0) and s.lr(3, 3) == 1.0 and s.lr(4, 0) == pytest.approx(0.1)
    c = Schedule({"kind": "cosine", "warmup_epochs": 0, "min_lr": 0.0}, 1.0, 10, 1)
    assert c.lr(0) == pytest.approx(1.0) and c.lr(5) == pytest.approx(0.5) and c.lr(10) == pytest.approx(0.0)
    cw = Schedule({"kind": "cosine", "warmup_epochs": 2, "min_lr": 0.1}, 1.0, 12, 1)
    assert cw.lr(0) == pytest.approx(0.5) and cw.lr(2) == pytest.approx(1.0)
    assert cw.lr(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(3, 1.0, "exponential", gamma=0.99) == pytest.approx(0.99 ** 3)
    assert lr_at(30, 0.2, "constant") == 0.2


def test_optimizers():
    m = torch.nn.Linear(3, 2)
    sgd = build_optimizer(m, {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 4e-4})
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD) and group["nesterov"] and group["weight_decay"] == 4e-4
    assert isinstance(build_optimizer(m, {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4}), torch.optim.Adam)


# -- validation split and sampler -------------------------------------------------------------

def test_validation_is_whole_subjects_and_deterministic():
    subjects = np.repeat(np.arange(20), 50)  # 1000 samples
    val = carve_validation(1000, 0.05, seed=3, subjects=subjects)
    assert len(set(subjects[val])) == 1 and len(val) == 50  # one subject of 20 = 5 %
    assert np.array_equal(val, carve_validation(1000, 0.05, seed=3, subjects=subjects))
    assert not np.array_equal(val, carve_validation(1000, 0.05, seed=4, subjects=subjects))
    assert not set(subjects[val]) & set(np.delete(subjects, val))
    plain = carve_validation(1000, 0.05, seed=0, subjects=None)
    assert len(plain) == 50 and len(set(plain)) == 50
    assert len(carve_validation(1000, 0.0)) == 0
    assert describe_validation(val, 1000, subjects) == {"by": "subject", "held_out": 50, "held_out_fraction": 0.05,
                                                        "subjects": [int(subjects[val][0])]}
    assert describe_validation(plain, 1000, subjects)["by"] == "sample"


def test_validation_takes_the_subject_split_closest_to_the_fraction_or_falls_back_to_samples():
    subjects = np.repeat(np.arange(5), 40)  # 5 subjects of 40 = 20 % each
    val = carve_validation(200, 0.05, seed=0, subjects=subjects)  # one subject would be 4x the ask
    assert len(val) == 10 and describe_validation(val, 200, subjects)["by"] == "sample"
    val = carve_validation(200, 0.3, seed=0, subjects=subjects)  # 20 % is closer to 30 % than 40 %
    assert len(val) == 40 and describe_validation(val, 200, subjects)["by"] == "subject"
    uneven = np.repeat(np.arange(4), [10, 50, 30, 10])  # prefixes of the seeded order: the closest one wins
    for seed in range(8):
        order = np.random.default_rng(seed).permutation(4)[:-1]
        sizes = np.cumsum(np.array([10, 50, 30, 10])[order])
        best = sizes[np.argmin(np.abs(sizes - 25))]
        got = carve_validation(100, 0.25, seed=seed, subjects=uneven)
        assert len(got) == (best if best <= 50 else 25)


def test_epoch_sampler_shards_union_is_the_single_process_batch_and_skips_on_resume():
    one = EpochSampler(50, 8, seed=1)
    one.set_epoch(3)
    single = one.batches()
    ranks = []
    for r in range(2):
        s = EpochSampler(50, 4, seed=1, rank=r, world_size=2)
        s.set_epoch(3)
        ranks.append(s.batches())
    assert len(single) == len(ranks[0]) == 6
    for k, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][k] + ranks[1][k])
    one.set_epoch(3, start_batch=4)
    assert list(one) == single[4:] and len(one) == 2
    torch_perm = torch.randperm(50, generator=torch.Generator().manual_seed(1 + 3)).tolist()
    assert single[0] == torch_perm[:8]


# -- state files --------------------------------------------------------------------------------

def test_state_round_trip_without_pickle(tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    gen = np.random.default_rng(5)
    random.seed(7)
    state = {"global_step": 12, "epoch": 1, "batch_in_epoch": 2, "model": model.state_dict(), "schedule": {},
             "optimizer": opt.state_dict(), "rng": [rng_state(gen)], "best": {"val_top1": None},
             "tuple": (1, "a"), "bools": torch.ones(3, dtype=torch.bool)}
    save_state(tmp_path, state)
    expect_np, expect_py, expect_torch = gen.random(3), random.random(), torch.rand(2)
    back = load_state(tmp_path)
    assert back["global_step"] == 12 and back["tuple"] == (1, "a") and back["best"] == {"val_top1": None}
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    set_rng_state(back["rng"][0], gen)
    assert np.array_equal(gen.random(3), expect_np) and random.random() == expect_py
    assert torch.equal(torch.rand(2), expect_torch)
    text = (tmp_path / "state.json").read_text()
    assert "momentum_buffer" in text and sorted(p.name for p in tmp_path.iterdir()) == \
        ["state-000000012.safetensors", "state.json"]
    tensors: dict = {}
    tree = split_tensors({1: torch.zeros(2), "x": [torch.ones(1)]}, "s", tensors)
    assert set(tensors) == {"s.0", "s.1.0"} and join_tensors(tree, tensors)[1].shape == (2,)


def test_each_state_file_is_complete_and_the_previous_one_is_kept(tmp_path, caplog):
    model = torch.nn.Linear(2, 2)

    def state(step):
        return {"global_step": step, "epoch": 0, "batch_in_epoch": step, "model": model.state_dict(),
                "optimizer": {}, "schedule": {}, "rng": []}

    for step in (3, 6, 9):
        save_state(tmp_path, state(step))
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["state-000000006.safetensors", "state-000000009.safetensors", "state.json"]
    assert load_state(tmp_path)["global_step"] == 9 and not caplog.records
    (tmp_path / "state.json").unlink()  # the tensor file alone is a complete state
    assert load_state(tmp_path)["global_step"] == 9
    assert "state.json: no training state" in caplog.text and "resuming from state-000000009" in caplog.text
    (tmp_path / "state-000000009.safetensors").write_bytes(b"\0" * 10)  # damaged: the one before
    assert load_state(tmp_path)["global_step"] == 6


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    """A run directory is analysed from any working directory: its config holds absolute paths."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config("ucla", overrides=["data.path=data/ucla", "train.init_from=../w.safetensors"])
    assert cfg["data"]["path"] == str(tmp_path / "data" / "ucla")
    assert cfg["train"]["init_from"] == str(tmp_path.parent / "w.safetensors")
    assert load_config("synthetic")["data"]["path"] is None  # generated in memory: nothing to resolve


@pytest.mark.parametrize("override,match", [
    ("data.transform.theta=.nan", r"data.transform.theta must be a finite number"),
    ("data.transform.theta=5", r"data.transform: ntu transform: theta must lie in"),
    ("data.test_transform.window=abc", r"data.test_transform: ntu transform: window must be an integer"),
    ("data.transform.windw=3", r"unknown option\(s\) windw"),
    ("model.options.dropout=.inf", r"model.options.dropout must be a finite number"),
    ("model.options=3", r"model.options must be a mapping"),
])
def test_free_form_mappings_checked(override: str, match: str) -> None:
    from stdcl.train.config import load_config, validate

    with pytest.raises(ConfigError, match=match):
        validate(load_config("ntu60-xsub", encoder="hcn", overrides=[override]))
