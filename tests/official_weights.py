"""Deterministic weights and inputs shared by the official-parity tests.

Each parameter is drawn from its own generator seeded by its name, so the same state dict
can be regenerated from names and shapes alone (the parity fixtures store the official
model's names and shapes and its logits for these weights; the official code is never
imported by the tests).
"""

from __future__ import annotations

import math
import zlib

import torch


def seeded_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A tensor for parameter/buffer ``name`` that depends only on (name, shape, seed)."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) + seed)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_var":
        return torch.rand(shape, generator=g) + 0.5
    if leaf == "running_mean":
        return torch.randn(shape, generator=g) * 0.1
    if len(shape) <= 1:
        # biases, BN affine, scalars: around their usual values
        base = 1.0 if leaf in ("weight", "gamma") else 0.0
        return base + torch.randn(shape, generator=g) * 0.1
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def seeded_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A full state dict from ``{name: shape}``."""
    return {k: seeded_tensor(k, tuple(v), seed) for k, v in shapes.items()}


def seeded_input(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """A float32 input of ``shape`` from a fixed generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
