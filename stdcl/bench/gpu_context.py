"""What every part of ``stdcl bench gpu`` gets (:class:`Context`) and how a part stops early."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch


class BudgetExceeded(Exception):
    """A part used up its time budget part-way (what it measured so far stays in its result)."""


class PartSkipped(Exception):
    """A part that cannot run here (e.g. its data is absent): recorded as skipped with this reason."""


@dataclass
class Context:
    """What every part gets: options, where to write, and its own deadline."""

    out: Path
    device: torch.device
    tiny: bool
    ucla: Path | None
    deadline: float  # time.monotonic() of the whole check's end
    part_deadline: float = 0.0
    save: Callable[[], None] = lambda: None  # rewrite the JSON now (partial results of a long part)
    shared: dict[str, Any] = field(default_factory=dict)  # figures later parts reuse (e.g. train-step times)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds left of this part's budget."""
        return self.part_deadline - time.monotonic()

    def check_time(self, what: str) -> None:
        """Raise :class:`BudgetExceeded` when the part's budget is spent (before starting ``what``)."""
        if self.left() <= 0:
            raise BudgetExceeded(f"time budget used up before {what}")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


@contextlib.contextmanager
def deterministic():
    """Deterministic kernels (cuDNN algorithm choice, atomics-free backward where torch has one; a warning
    where it has none) for comparisons that must see rounding alone: on CUDA two runs of the same steps
    otherwise drift apart from the first atomics-ordered gradient on. The process's settings come back after."""
    from stdcl.train.device import make_deterministic, restore_determinism

    before = make_deterministic()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        restore_determinism(before)
