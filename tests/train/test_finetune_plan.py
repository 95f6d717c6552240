"""stdcl.train.finetune_plan: the run a fine-tune starts, whether the data fits, its expected time."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from stdcl.errors import ConfigError
from stdcl.train import finetune_plan as plan
from stdcl.train.estimate import data_sizes as count_data
from stdcl.train.estimate import estimate, planned_steps
from stdcl.weights import BUNDLED_DIR

SMALL = ("data.source={num_samples: 260, seed: 0}",)


@pytest.fixture(scope="module")
def start() -> plan.StartPoint:
    return plan.start_point(BUNDLED_DIR / "synthetic_hcn_stdcl.safetensors")


def test_start_point_and_defaults_come_from_the_metadata(start):
    assert (start.encoder_name, start.num_classes, start.layout, start.window, start.dataset, start.stdcl) == \
        ("hcn", 13, "ntu25", 32, "synthetic", True)
    d = plan.checkpoint_defaults(start)
    assert d == plan.Defaults(stdcl=True, lr=d.recipe_lr / 10, batch=start.meta["config"]["train"]["batch_size"],
                              recipe_lr=d.recipe_lr, optimiser="adam")


def test_plan_of_the_synthetic_set_in_steps(start):
    c = plan.Choices(plan.SYNTHETIC, stdcl=False, length="steps", amount=7, lr=2e-4, batch=16, strict=False,
                     extra=SMALL)
    p = plan.build_plan(start, c)
    assert p.args[:10] == ["--config", "synthetic", "--encoder", "hcn", "--modality", "joint", "--stdcl", "off",
                           "--device", "cpu"]
    assert f"train.init_from={json.dumps(str(start.weights.resolve()))}" in p.args
    assert "train.init_strict=false" in p.args and p.args[-1] == SMALL[0]
    cfg = p.cfg
    assert cfg["train"]["max_steps"] == 7 and cfg["optim"]["lr"] == 2e-4 and cfg["train"]["batch_size"] == 16
    assert cfg["stdcl"]["enabled"] is False and cfg["train"]["init_strict"] is False and p.device == "cpu"
    assert cfg["train"]["init_from"] == str(start.weights.resolve()) and cfg["data"]["window"] == 32
    sizes = plan.data_sizes(cfg["data"])
    assert sizes == plan.DataSizes(**count_data(cfg["data"])) and sizes.classes == 13
    t = plan.plan_time(cfg, sizes)
    steps, epochs = planned_steps(cfg, sizes.train_items)
    assert (t.steps, t.epochs_spanned) == (steps, epochs) == (7, 7 / (sizes.train_items // 16))
    ref = estimate("hcn", 7 * 16, 1.0, "cpu", 32, 1 * (sizes.val + sizes.test), sizes.joints * sizes.persons)
    assert t.estimate == ref
    assert plan.check_fit(start, sizes).fits


def test_plan_of_its_own_data_in_epochs(start):
    p = plan.build_plan(start, plan.Choices(plan.OWN, stdcl=True, amount=2, extra=SMALL))
    d = start.meta["config"]["data"]
    assert p.cfg["train"]["epochs"] == 2 and p.cfg["stdcl"]["enabled"] is True
    assert p.cfg["data"]["dataset"] == d["dataset"] and p.cfg["data"]["test_split"] == d["test_split"]
    assert "train.init_strict=false" not in p.args


def test_bad_choices_are_one_line_errors(start, tmp_path):
    with pytest.raises(ConfigError, match="^choose a dataset$"):
        plan.build_plan(start, plan.Choices(plan.OTHER))
    with pytest.raises(ConfigError, match="^give the folder or file of the ucla data$"):
        plan.build_plan(start, plan.Choices(plan.OTHER, other_name="ucla", other_path=" "))
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'nope'}: no such file or folder$"):
        plan.build_plan(start, plan.Choices(plan.OTHER, other_name="ucla", other_path=str(tmp_path / "nope")))
    bare = replace(start, meta={k: v for k, v in start.meta.items() if k != "config"})
    with pytest.raises(ConfigError, match="does not record its training data"):
        plan.build_plan(bare, plan.Choices(plan.OWN))
    odd = replace(start, meta=dict(start.meta, encoder=dict(start.meta["encoder"], name="nope")))
    with pytest.raises(ConfigError, match="encoder 'nope' cannot be fine-tuned here"):
        plan.build_plan(odd, plan.Choices(plan.SYNTHETIC))
    with pytest.raises(ConfigError):
        plan.build_plan(start, plan.Choices(plan.SYNTHETIC, extra=("no equals sign",)))


def test_fit_compares_classes_and_layout(start):
    sizes = plan.DataSizes(100, 5, 20, 60, "ntu25", 25, 2)
    assert plan.check_fit(start, sizes) == plan.Fit(False, 60, "ntu25", 13, "ntu25")
    assert not plan.check_fit(start, replace(sizes, classes=13, layout="ucla20")).fits
    assert plan.check_fit(start, replace(sizes, classes=13)).fits


def test_command_helpers():
    assert plan.init_path(["--config", "x", 'train.init_from="/a b/c.safetensors"']) == "/a b/c.safetensors"
    assert plan.init_path(["--config", "x"]) is None
    lines = ["optim.lr=0.1", "broken", "train.epochs=3", "optim.lr=0.2", "data.path=x"]
    assert plan.overridden_keys(lines, {"optim.lr": "", "train.epochs": ""}) == ["optim.lr", "train.epochs"]
