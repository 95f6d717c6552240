"""Where and how a run computes: the device, data-loading workers, precision (autocast, GradScaler)
and determinism. Used by training (:mod:`stdcl.train.engine`) and ``stdcl eval`` alike."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from stdcl.errors import ConfigError


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local rank>`` when CUDA is present, else ``cpu``."""
    name = name or "auto"
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"config key device: {name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def worker_count(requested: int) -> int:
    """Data-loading processes: the configured number, capped by the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(int(requested), cpus))


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``train.amp`` setting on ``device`` (None: full precision)."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """The loss scaler: active for fp16 autocast only (bf16 and full precision need none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)


def make_deterministic() -> tuple[bool, bool, bool]:
    """Deterministic algorithms on (``deterministic: true``); returns the settings it replaced."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return before


def restore_determinism(before: tuple[bool, bool, bool]) -> None:
    """Put back what :func:`make_deterministic` replaced (leave the process as it was found)."""
    det, cudnn_det, bench = before
    torch.use_deterministic_algorithms(det)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, bench


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's legacy RNG and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
