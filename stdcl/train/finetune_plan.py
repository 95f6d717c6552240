"""Planning a fine-tuning run from a checkpoint: what to run, whether the data fits, how long it takes.

The Fine-tune page of the app reads these typed results; it draws them and launches the plan's
``stdcl train`` arguments (:class:`stdcl.train.jobs.JobManager`). Nothing here reads weights:
a checkpoint's metadata is enough.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stdcl.checkpoint import read_meta
from stdcl.encoders import available as available_encoders
from stdcl.errors import ConfigError, StdclError
from stdcl.io import user_path
from stdcl.train.config import PROTOCOLS, get_dotted, load_config, parse_override
from stdcl.train.estimate import Estimate, estimate, planned_steps
from stdcl.train.estimate import data_sizes as count_data
from stdcl.train.run_dir import checkpoint_of

#: Where the data of the run comes from: the checkpoint's own, the synthetic set, another dataset.
OWN, SYNTHETIC, OTHER = "own", "synthetic", "other"


@dataclass(frozen=True)
class StartPoint:
    """The checkpoint a run starts from (``train.init_from``) and what its metadata says."""

    weights: Path  # the encoder .safetensors
    meta: dict[str, Any] = field(repr=False)

    @property
    def encoder(self) -> dict[str, Any]:
        return self.meta.get("encoder") or {}

    @property
    def encoder_name(self) -> str | None:
        return self.encoder.get("name")

    @property
    def num_classes(self) -> int | None:
        n = self.encoder.get("num_classes", self.meta.get("num_classes"))
        return None if n is None else int(n)

    @property
    def layout(self) -> str | None:
        return self.meta.get("layout") or (self.encoder.get("layout") or {}).get("name")

    @property
    def window(self) -> int | None:
        return self.encoder.get("window")

    @property
    def dataset(self) -> str | None:
        return self.meta.get("dataset")

    @property
    def stdcl(self) -> bool:
        return bool(self.meta.get("stdcl"))


def start_point(path: str | os.PathLike) -> StartPoint:
    """A checkpoint file or a run directory's best checkpoint (metadata only, no weights read)."""
    weights = checkpoint_of(path)
    return StartPoint(weights, read_meta(weights))


@dataclass(frozen=True)
class Defaults:
    """The settings a checkpoint starts with: its own STD-CL flag, a tenth of its encoder's recipe lr,
    the batch it was trained with (else the recipe's)."""

    stdcl: bool
    lr: float
    batch: int
    recipe_lr: float
    optimiser: str


def checkpoint_defaults(start: StartPoint) -> Defaults:
    name = start.encoder_name
    recipe = load_config("synthetic", encoder=name if name in available_encoders() else None)
    batch = get_dotted(start.meta.get("config") or {}, "train.batch_size") or recipe["train"]["batch_size"]
    lr = float(recipe["optim"]["lr"])
    return Defaults(start.stdcl, lr / 10, int(batch), lr, recipe["optim"]["name"])


@dataclass(frozen=True)
class Choices:
    """What the user chose for the run."""

    dataset: str = OWN  # OWN, SYNTHETIC or OTHER
    other_name: str | None = None  # OTHER: the dataset's name
    other_path: str | None = None  # OTHER: its folder or file
    stdcl: bool = False
    length: str = "epochs"  # "epochs" or "steps"
    amount: int = 1
    lr: float = 1e-3
    batch: int = 16
    strict: bool = True  # train.init_strict
    extra: tuple[str, ...] = ()  # key=value overrides, applied last
    device: str = "cpu"


@dataclass
class RunPlan:
    """``stdcl train`` arguments for the choices and the validated config they resolve to."""

    args: list[str]
    cfg: dict[str, Any]

    @property
    def device(self) -> str:
        return self.cfg["device"]


def _yaml(value: Any) -> str:
    """A value for a ``key=value`` override (JSON is valid YAML; strings stay strings)."""
    return json.dumps(value)


def _data_overrides(start: StartPoint, c: Choices) -> tuple[str, list[str]]:
    """(protocol, data overrides) of the chosen data."""
    ckpt_cfg = start.meta.get("config") if isinstance(start.meta.get("config"), dict) else None
    if c.dataset == OWN:
        if ckpt_cfg is None:
            raise ConfigError(f"{start.weights.name} does not record its training data; choose the synthetic set "
                              "or another dataset")
        d = ckpt_cfg.get("data") or {}
        protocol = ckpt_cfg.get("protocol") if ckpt_cfg.get("protocol") in PROTOCOLS else "custom"
        return protocol, [f"data.{k}={_yaml(d[k])}" for k in ("dataset", "path", "train_split", "test_split", "source")
                          if k in d]
    if c.dataset == SYNTHETIC:
        return "synthetic", []
    if not c.other_name:
        raise ConfigError("choose a dataset")
    out = []
    if c.other_name != "synthetic":
        if not c.other_path or not c.other_path.strip():
            raise ConfigError(f"give the folder or file of the {c.other_name} data")
        p = user_path(c.other_path.strip())
        if not p.exists():
            raise ConfigError(f"{p}: no such file or folder")
        out.append(f"data.path={_yaml(str(p.resolve()))}")
    return (c.other_name if c.other_name in PROTOCOLS else "custom"), out + [f"data.dataset={_yaml(c.other_name)}"]


def build_plan(start: StartPoint, c: Choices) -> RunPlan:
    """The run for ``c`` starting from ``start`` (a one-line :class:`ConfigError` when it cannot be run)."""
    enc, encoder = start.encoder, start.encoder_name
    if encoder not in available_encoders():
        raise ConfigError(f"{start.weights}: encoder {encoder!r} cannot be fine-tuned here "
                          f"(expected {', '.join(available_encoders())})")
    ckpt_cfg = start.meta.get("config") if isinstance(start.meta.get("config"), dict) else None
    modality = start.meta.get("modality") or get_dotted(ckpt_cfg or {}, "data.modality") or "joint"
    overrides = [f"data.window={int(enc.get('window') or 64)}"]
    if enc.get("options"):
        overrides.append(f"model.options={_yaml(enc['options'])}")
    protocol, data = _data_overrides(start, c)
    overrides += data
    overrides += [f"train.init_from={_yaml(str(start.weights.resolve()))}", f"optim.lr={float(c.lr)!r}",
                  f"train.batch_size={int(c.batch)}", "schedule.kind=constant", "schedule.warmup_epochs=0",
                  "train.log_every=5", "train.progress=false",
                  f"train.{'max_steps' if c.length == 'steps' else 'epochs'}={int(c.amount)}"]
    if not c.strict:
        overrides.append("train.init_strict=false")
    for line in c.extra:
        parse_override(line)  # one-line error for a malformed line
    overrides += list(c.extra)
    flag = "on" if c.stdcl else "off"
    cfg = load_config(protocol, encoder=encoder, modality=modality, stdcl=flag, overrides=overrides + [f"device={c.device}"])
    args = ["--config", protocol, "--encoder", encoder, "--modality", modality, "--stdcl", flag,
            "--device", c.device, "--no-progress", *overrides]
    return RunPlan(args, cfg)


@dataclass(frozen=True)
class DataSizes:
    """A config's data as the training engine counts it."""

    train_items: int
    val: int
    test: int
    classes: int
    layout: str
    joints: int
    persons: int


def data_sizes(data: dict[str, Any]) -> DataSizes:
    """:func:`stdcl.train.estimate.data_sizes` of a config's ``data`` section, typed."""
    return DataSizes(**count_data(data))


@dataclass(frozen=True)
class Fit:
    """Whether the checkpoint's classifier and skeleton fit the data (strict init needs both)."""

    fits: bool
    data_classes: int
    data_layout: str
    checkpoint_classes: int | None
    checkpoint_layout: str | None


def check_fit(start: StartPoint, sizes: DataSizes) -> Fit:
    classes = start.num_classes
    layout = start.layout
    fits = (classes is None or classes == sizes.classes) and (not layout or layout == sizes.layout)
    return Fit(fits, sizes.classes, sizes.layout, classes, layout)


@dataclass(frozen=True)
class TimePlan:
    """How much the run does and how long it is expected to take."""

    steps: int
    epochs_spanned: float
    estimate: Estimate


def plan_time(cfg: dict[str, Any], sizes: DataSizes, history: str | os.PathLike | None = None) -> TimePlan:
    """The run's optimiser steps and expected time (calibrated on the finished jobs in ``history``)."""
    steps, epochs = planned_steps(cfg, sizes.train_items)
    eta = estimate(cfg["model"]["encoder"], steps * int(cfg["train"]["batch_size"]), 1.0, cfg["device"],
                   int(cfg["data"]["window"] or 64), math.ceil(epochs) * (sizes.val + sizes.test),
                   max(sizes.joints * sizes.persons, 1), history=history)
    return TimePlan(steps, epochs, eta)


def init_path(command: list[str]) -> str | None:
    """The checkpoint a ``stdcl train`` command starts from (its ``train.init_from`` argument)."""
    for arg in command:
        if arg.startswith("train.init_from="):
            _, value = parse_override(arg)
            return str(value)
    return None


def overridden_keys(extra: list[str], keys: list[str] | dict[str, Any]) -> list[str]:
    """Which of ``keys`` the ``key=value`` lines ``extra`` set (malformed lines are left to :func:`build_plan`)."""
    found = []
    for line in extra:
        try:
            parts, _ = parse_override(line)
        except StdclError:
            continue
        key = ".".join(parts)
        if key in keys and key not in found:
            found.append(key)
    return found
