"""Class names of the public benchmarks."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

UCLA_CLASSES = ["pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
                "stand up", "donning", "doffing", "throw", "carry"]


@lru_cache(maxsize=None)
def ntu_classes(num_classes: int = 120) -> list[str]:
    """The first ``num_classes`` NTU RGB+D action names (A001 first)."""
    text = resources.files("stdcl.data").joinpath("resources/ntu120_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()][:num_classes]


def numbered_classes(num_classes: int, prefix: str = "class") -> list[str]:
    """``class_000``-style names for data that brings none."""
    width = max(3, len(str(num_classes - 1)))
    return [f"{prefix}_{k:0{width}d}" for k in range(num_classes)]
