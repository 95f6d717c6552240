"""Optimiser and learning-rate schedule.

The schedule is a pure function of the (fractional) epoch, so resuming needs only the step
counters: no scheduler object state. Reference rule (CTR-GCN / Hyperformer
``adjust_learning_rate``, evaluated once per epoch):

    epoch < warmup:  lr = base * (epoch + 1) / warmup
    step:            lr = base * gamma ** (number of milestones <= epoch)
    cosine:          lr = min + (base - min) * (1 + cos(pi * (epoch - warmup) / (epochs - warmup))) / 2
    exponential:     lr = base * gamma ** epoch        (HCN: gamma 0.99)
    constant:        lr = base

With ``per_step: true`` the epoch is fractional (``epoch + step / steps_per_epoch``), so the
warm-up ramps every step and cosine decays smoothly; milestones still switch at epoch boundaries.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from stdcl.errors import ConfigError


def lr_at(epoch: float, base_lr: float, kind: str = "step", warmup_epochs: float = 0, milestones: Iterable[int] = (),
          gamma: float = 0.1, epochs: int = 1, min_lr: float = 0.0) -> float:
    """The learning rate at (fractional) ``epoch`` (0-based)."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return base_lr * min(1.0, (epoch + 1) / warmup_epochs)
    if kind == "step":
        return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)
    if kind == "cosine":
        span = max(epochs - warmup_epochs, 1e-12)
        t = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "exponential":
        return base_lr * gamma ** epoch
    if kind == "constant":
        return base_lr
    raise ConfigError(f"unknown schedule kind {kind!r}; choose step, cosine, exponential or constant")


class Schedule:
    """``schedule`` section of a config bound to the optimiser's base lr and epoch length."""

    def __init__(self, cfg: dict[str, Any], base_lr: float, epochs: int, steps_per_epoch: int):
        self.cfg = dict(cfg)
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)

    def lr(self, epoch: int, step_in_epoch: int = 0) -> float:
        """lr for the optimiser step ``step_in_epoch`` (0-based) of ``epoch`` (0-based)."""
        c = self.cfg
        e: float = float(epoch)
        if c.get("per_step"):
            e = epoch + step_in_epoch / self.steps_per_epoch
        return lr_at(e, self.base_lr, kind=c.get("kind", "step"), warmup_epochs=float(c.get("warmup_epochs", 0) or 0),
                     milestones=c.get("milestones") or (), gamma=float(c.get("gamma", 0.1)), epochs=self.epochs,
                     min_lr=float(c.get("min_lr", 0.0) or 0.0))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step_in_epoch: int = 0) -> float:
        lr = self.lr(epoch, step_in_epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """One group, weight decay on every parameter (as the reference implementations do)."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def build_optimizer(model: torch.nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW from the ``optim`` section."""
    name = cfg.get("name", "sgd")
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    groups = param_groups(model, wd)
    if name == "sgd":
        mom = float(cfg.get("momentum", 0.9))
        return torch.optim.SGD(groups, lr=lr, momentum=mom, nesterov=bool(cfg.get("nesterov", True)) and mom > 0,
                               weight_decay=wd)
    betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=wd)
    raise ConfigError(f"unknown optimiser {name!r}; choose sgd, adam or adamw")


def contrastive_factor(epoch: float, start_epoch: float = 0.0, ramp_epochs: float = 0.0) -> float:
    """The share of the STD-CL loss weight in use at (fractional, 0-based) ``epoch``: 0 before
    ``start_epoch``, then rising linearly to 1 over ``ramp_epochs`` (at once when 0)."""
    if epoch < start_epoch:
        return 0.0
    if ramp_epochs <= 0:
        return 1.0
    return min(1.0, (epoch - start_epoch) / ramp_epochs)
