"""Loading state dicts saved by the official implementations (with or without ``module.``)."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder
from stdcl.encoders.registry import build_encoder
from stdcl.errors import ConfigError, DataError, first_line


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a DataParallel/DDP ``module.`` prefix from every key that has it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def load_official_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an official ``.pt`` checkpoint with ``weights_only=True`` (never unpickles code)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(path, "is empty (0 bytes), not a PyTorch checkpoint")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a PyTorch checkpoint") from None
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save's zip, or the legacy pickle format
        raise DataError(path, "not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)")
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise DataError(path, "a damaged or truncated PyTorch checkpoint (its zip archive has no central directory)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError with long texts
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if unsupported:
            raise DataError(path, f"holds Python objects, not only tensors ({unsupported.group(1)}); refusing to "
                                  "unpickle them (save its state_dict instead)") from None
        raise DataError(path, f"not a weights-only PyTorch checkpoint ({first_line(e, 160)})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(path, "does not hold a state dict of tensors")
    return dict(obj)


def state_dict_mismatch(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state_dict`` from loading into ``model`` (missing/unexpected keys, the first shape
    mismatch), or None when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} unexpected keys (e.g. {extra[0]!r})")
        return "state dict does not fit: " + ", ".join(parts)
    for k, v in own.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            return f"key {k!r} has shape {tuple(state_dict[k].shape)}, expected {tuple(v.shape)}"
    return None


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """One-line :class:`ConfigError` ``"<what>: <mismatch>"`` unless ``state_dict`` fits ``model``."""
    problem = state_dict_mismatch(model, state_dict)
    if problem:
        raise ConfigError(f"{what}: {problem}")


def check_finite(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """A :class:`DataError` naming ``path`` and the first tensor holding NaN or infinite values."""
    for k, v in state_dict.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise DataError(path, f"tensor {k!r} holds {bad} NaN or infinite values of {v.numel()}: "
                                  "the weights are unusable (a diverged or damaged run)")


def from_official(name: str, state_dict: Mapping[str, torch.Tensor], num_classes: int,
                  layout: str | Layout = "ntu25", num_person: int = 2, window: int = 64,
                  in_channels: int = 3, **options) -> Encoder:
    """Build encoder ``name`` and load an official state dict into it (eval mode)."""
    model = build_encoder(name, num_classes=num_classes, layout=layout, in_channels=in_channels,
                          num_person=num_person, window=window, **options)
    sd = strip_prefix(state_dict)
    convert = getattr(model, "convert_official", None)
    if convert is not None:
        sd = convert(sd)
    check_state_dict(model, sd, f"{name} (official weights)")
    check_finite(sd, f"{name} (official weights)")
    model.load_state_dict(sd, strict=True)
    return model.eval()
