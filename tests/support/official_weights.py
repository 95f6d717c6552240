"""Deterministic weights and inputs shared by the official-parity tests.

Each parameter is drawn from its own generator seeded by its name, so the same state dict
can be regenerated from names and shapes alone (the parity fixtures store the official
model's names and shapes and its logits for these weights; the official code is never
imported by the tests).

The seeded BatchNorm running statistics (variance ~U(0.5, 1.5)) are unrelated to the real
activation variance, so deep models reach logits of 1e3-1e4 with them. For an fp32 parity
check at a trained model's scale, ``calibrate_batchnorm`` sets them from data; the fixture
stores the official model's calibrated statistics (``encode_bn_stats``) and the tests put
them back over the seeded weights (``with_bn_stats``) instead of recomputing them.
"""

from __future__ import annotations

import base64
import math
import zlib
from typing import Iterable, Mapping

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


BN_STATS = ("running_mean", "running_var")


def _is_bn_stat(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in BN_STATS


def calibrate_batchnorm(model: torch.nn.Module, inputs: Iterable[torch.Tensor]) -> torch.nn.Module:
    """Set every BatchNorm's running statistics from data, as a trained model has them.

    Each BN gets ``momentum=None`` (cumulative average) and fresh statistics, the model runs
    once per input in train mode (batch statistics, no gradients), the momenta are restored
    and the model is left in eval mode. Only the running statistics and
    ``num_batches_tracked`` change (models with dropout would need it off).
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for x in inputs:
            model(x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model.eval()


def encode_f32(t: torch.Tensor) -> str:
    """Base64 of a tensor's float32 little-endian bytes (exact, ~5.3 characters a value)."""
    return base64.b64encode(t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()


def decode_f32(text: str, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Inverse of ``encode_f32``."""
    raw = bytearray(base64.b64decode(text))
    t = torch.frombuffer(raw, dtype=torch.float32) if raw else torch.zeros(0)
    if t.numel() != math.prod(shape):
        raise ValueError(f"{t.numel()} values for shape {tuple(shape)}")
    return t.reshape(tuple(shape)).clone()


def encode_bn_stats(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{name: base64}`` for every BatchNorm ``running_mean``/``running_var`` (fixture format)."""
    return {k: encode_f32(v) for k, v in state_dict.items() if _is_bn_stat(k)}


def with_bn_stats(state_dict: Mapping[str, torch.Tensor], stats: Mapping[str, str],
                  num_batches_tracked: int | None = None) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with its BN running statistics replaced by ``stats`` (from ``encode_bn_stats``).

    Every running statistic must be given, and nothing else; ``num_batches_tracked``, when
    given, is written into every BN's counter (it does not affect eval mode).
    """
    own = {k for k in state_dict if _is_bn_stat(k)}
    if own != set(stats):
        raise KeyError(f"BN statistics do not fit: missing {sorted(own - set(stats))[:3]}, "
                       f"unexpected {sorted(set(stats) - own)[:3]}")
    out = dict(state_dict)
    for k in own:
        out[k] = decode_f32(stats[k], tuple(state_dict[k].shape)).to(state_dict[k].dtype)
    if num_batches_tracked is not None:
        for k, v in state_dict.items():
            if k.endswith(".num_batches_tracked") or k == "num_batches_tracked":
                out[k] = torch.full_like(v, num_batches_tracked)
    return out
