"""Encoder checkpoints: weights in safetensors, metadata in a JSON file beside them.

``model.safetensors`` + ``model.json`` (encoder name, constructor arguments, class names,
dataset, modality, package version, anything else the caller adds). Loading never
unpickles anything: safetensors holds tensors only.

Each file is written atomically, and the files of one save share a ``save_id`` (in the JSON and
in the safetensors headers of the weights and of the STD-CL head): a save interrupted between
its files leaves a pair that loading refuses in one line, never weights read with another
save's metadata. Checkpoints written before ``save_id`` existed load as before.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from stdcl import __version__
from stdcl.checkpoint_schema import validate_meta
from stdcl.data.layouts import get_layout
from stdcl.encoders.base import Encoder
from stdcl.encoders.official import check_finite, state_dict_mismatch
from stdcl.encoders.registry import build_encoder
from stdcl.errors import ConfigError, DataError, first_line
from stdcl.io import atomic_path, read_json, write_json_atomic

T = TypeVar("T")

#: a checkpoint named by its place among the bundled demo checkpoints: ``bundled:NAME``
BUNDLED_PREFIX = "bundled:"


def meta_path(path: str | os.PathLike) -> Path:
    """The JSON metadata file that belongs to a ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def encoder_config(encoder: Encoder) -> dict[str, Any]:
    """The constructor arguments that rebuild ``encoder`` with :func:`build_encoder`."""
    return {"name": encoder.name, "num_classes": encoder.num_classes, "layout": encoder.layout.to_mapping(),
            "in_channels": encoder.in_channels, "num_person": encoder.num_person, "window": encoder.window,
            "options": dict(getattr(encoder, "options", {}) or {})}


def save_encoder(path: str | os.PathLike, encoder: Encoder, half: bool = False, **meta: Any) -> Path:
    """Write ``encoder``'s weights (optionally fp16) and metadata atomically; returns the weights path."""
    path = Path(path)
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in encoder.state_dict().items()}
    save_id = uuid.uuid4().hex
    info = {"format": "stdcl-encoder", "version": __version__, "encoder": encoder_config(encoder)} | meta | \
        {"save_id": save_id}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=header_metadata(info["encoder"]["name"], save_id))
    write_json_atomic(meta_path(path), info)
    return path


def header_metadata(name: str, save_id: str | None) -> dict[str, str]:
    """The safetensors header entry of a stdcl weights file: its encoder and the save it belongs to."""
    return {"stdcl": json.dumps({"encoder": name} | ({"save_id": save_id} if save_id else {}))}


def check_same_save(weights: str | os.PathLike, meta: dict[str, Any], meta_file: str | os.PathLike) -> None:
    """A one-line :class:`DataError` when ``weights`` was written by another save than ``meta`` (read
    from ``meta_file``): both carry a ``save_id`` and they differ, i.e. a save was interrupted
    between its files."""
    want = meta.get("save_id")
    if not want:
        return
    try:
        with safe_open(str(weights), "pt") as f:
            header = (f.metadata() or {}).get("stdcl")
        got = json.loads(header).get("save_id") if header else None
    except (SafetensorError, OSError, ValueError, AttributeError):
        return  # an unreadable file is reported by read_tensors with its own error
    if got and got != want:
        raise DataError(weights, f"belongs to another save than {Path(meta_file).name} (a save was interrupted "
                                 "between its files): save or export the checkpoint again")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint, checked against :mod:`stdcl.checkpoint_schema` (one-line error
    naming the .json and the field when missing, malformed or inconsistent)."""
    mp = meta_path(path)
    if not mp.exists():
        raise DataError(mp, "metadata file missing (every .safetensors checkpoint has a .json beside it)")
    return validate_meta(read_json(mp, "checkpoint metadata"), mp)


def load_encoder(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Encoder, dict]:
    """Rebuild the encoder of a checkpoint and load its weights (fp32, eval mode)."""
    path = Path(path)
    info = read_meta(path)
    cfg = info["encoder"]
    model = construct(build_encoder, meta_path(path), f"a {cfg['name']} encoder", cfg["name"],
                      num_classes=cfg["num_classes"], layout=get_layout(cfg["layout"]),
                      in_channels=cfg["in_channels"], num_person=cfg["num_person"], window=cfg["window"],
                      **cfg["options"])
    check_same_save(path, info, meta_path(path))
    load_weights(model, path, map_location)
    return model.eval(), info


def construct(factory: Callable[..., T], source: str | os.PathLike, what: str, /, *args: Any, **kwargs: Any) -> T:
    """``factory(*args, **kwargs)`` for arguments read from ``source`` (checkpoint metadata): options the
    constructor rejects are a one-line :class:`DataError` naming ``source``, not a traceback."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError, ConfigError, RuntimeError, AssertionError) as e:
        raise DataError(source, f"its recorded options do not build {what} ({first_line(e)})") from None


def read_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (one-line error when unreadable)."""
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise DataError(path, f"not a readable safetensors file ({e})") from None


def load_weights(module: torch.nn.Module, path: str | os.PathLike,
                 map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a safetensors state dict into ``module``: keys and shapes checked, dtypes cast (fp16 files)."""
    own = module.state_dict()
    sd = {k: v.to(own[k].dtype) if k in own else v for k, v in read_tensors(path, map_location).items()}
    problem = state_dict_mismatch(module, sd)
    if problem:
        raise DataError(path, f"{problem} (a {type(module).__name__} as its metadata describes)")
    check_finite(sd, path)
    module.load_state_dict(sd)
    return module

