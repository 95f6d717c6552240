"""One way to load an encoder's weights, whatever the source.

A source is ``bundled:NAME`` (a demo checkpoint in :data:`BUNDLED_DIR`), a run directory (its
``best`` or ``last`` checkpoint), a ``.safetensors`` file with its ``.json`` (or the ``.json``
itself), or an official ``.pt`` (read with ``weights_only=True``; its encoder, class count,
layout, ... come with it as an :class:`OfficialSpec`). :func:`load` returns one
:class:`LoadedWeights`, whose ``meta`` is exactly what :meth:`LoadedWeights.save` writes and what
loading the saved file gives back: the same metadata whichever route the weights came by.
:func:`init_encoder` starts a new encoder from a source (``train.init_from``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stdcl import __version__
from stdcl.checkpoint import BUNDLED_PREFIX, encoder_config, load_encoder, meta_path, save_encoder
from stdcl.checkpoint_schema import validate_meta
from stdcl.encoders.base import Encoder
from stdcl.encoders.official import from_official, load_official_file
from stdcl.errors import ConfigError, DataError
from stdcl.head.checkpoint import head_path
from stdcl.train.run_dir import checkpoint_of

#: The bundled demo checkpoints (``$STDCL_BUNDLED`` overrides).
BUNDLED_DIR = Path(os.environ.get("STDCL_BUNDLED") or Path(__file__).resolve().parents[1] / "checkpoints")
#: File endings read as official PyTorch checkpoints.
OFFICIAL_SUFFIXES = (".pt", ".pth")
KINDS = ("bundled", "run", "file", "official")


@dataclass(frozen=True)
class OfficialSpec:
    """What an official ``.pt`` does not say about itself: the model it belongs to and its data."""

    encoder: str
    num_classes: int = 60
    layout: str = "ntu25"
    window: int = 64
    num_person: int = 2
    in_channels: int = 3
    dataset: str | None = None
    modality: str = "joint"
    class_names: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedWeights:
    """An encoder (fp32, eval mode) and its checkpoint metadata, with where they came from."""

    encoder: Encoder
    meta: dict[str, Any]  # the checkpoint metadata (stdcl.checkpoint_schema), as saved
    source: Path  # the file read: the .safetensors, or the official .pt
    kind: str  # one of KINDS
    head_file: Path | None = None  # the trained STD-CL head's weights beside the checkpoint, when it has one

    def save(self, path: str | os.PathLike, half: bool = False, **extra: Any) -> Path:
        """Write the encoder and its metadata (plus ``extra``) as a stdcl checkpoint; returns its path.

        A head file left at the target by an earlier save is removed unless this is that head's checkpoint
        (it would be read as the new model's)."""
        path = Path(path)
        keep = {k: v for k, v in self.meta.items() if k not in ("format", "version", "encoder")}
        out = save_encoder(path, self.encoder, half=half, **(keep | extra))
        if self.head_file is None or self.head_file.resolve() != head_path(out).resolve():
            head_path(out).unlink(missing_ok=True)
        return out


def bundled_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The weights file of bundled checkpoint ``name`` (one-line error listing the names when unknown)."""
    folder = Path(folder or BUNDLED_DIR)
    path = folder / f"{name}.safetensors"
    if not path.is_file() or name.endswith(".head") or "/" in name:
        have = sorted(p.stem for p in folder.glob("*.safetensors") if not p.name.endswith(".head.safetensors"))
        raise DataError(path, f"no bundled checkpoint {name!r} (bundled: {', '.join(have) or 'none'})")
    return path


def official_class_names(dataset: str | None, num_classes: int) -> list[str]:
    """The class names official weights get: the dataset's when known (NTU, NW-UCLA), else by class count
    (60 / 120: NTU, 10: NW-UCLA), else ``class_000``-style."""
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes, numbered_classes

    bench = dataset or {60: "ntu", 120: "ntu", 10: "ucla"}.get(num_classes, "")
    if bench.startswith("ntu") and num_classes in (60, 120):
        return ntu_classes(num_classes)
    if bench == "ucla" and num_classes == len(UCLA_CLASSES):
        return list(UCLA_CLASSES)
    return numbered_classes(num_classes)


def load(source: str | os.PathLike, which: str = "best", official: OfficialSpec | None = None,
         map_location: str | torch.device = "cpu") -> LoadedWeights:
    """The encoder and metadata of ``source`` (see the module docstring); ``which``: ``best`` or ``last``
    of a run directory. A one-line :class:`DataError` naming the file when it cannot be used."""
    text = str(source)
    if text.startswith(BUNDLED_PREFIX):
        path, kind = bundled_path(text[len(BUNDLED_PREFIX):]), "bundled"
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(path, "no such file or folder")
        kind = "run" if path.is_dir() else "file"
    if official is not None or path.suffix.lower() in OFFICIAL_SUFFIXES:
        if official is None:
            raise DataError(path, "an official PyTorch checkpoint: import it with its encoder, class count and "
                                  "layout (stdcl import-official)")
        return _load_official(path, official)
    weights = checkpoint_of(path, which)
    if weights.suffix != ".safetensors":
        raise DataError(weights, "not a .safetensors checkpoint (official .pt weights are imported with their "
                                 "encoder and class count)")
    if kind == "file" and weights.parent.resolve() == BUNDLED_DIR.resolve():
        kind = "bundled"
    encoder, meta = load_encoder(weights, map_location)
    head = head_path(weights)
    has_head = bool(meta.get("stdcl")) and (meta.get("head") or {}).get("head") is not None and head.is_file()
    return LoadedWeights(encoder, meta, weights, kind, head if has_head else None)


def _load_official(path: Path, spec: OfficialSpec) -> LoadedWeights:
    sd = load_official_file(path)
    try:
        encoder = from_official(spec.encoder, sd, spec.num_classes, spec.layout, spec.num_person, spec.window,
                                spec.in_channels, **spec.options)
    except ConfigError as e:
        raise DataError(path, str(e)) from None
    names = list(spec.class_names) if spec.class_names is not None else \
        official_class_names(spec.dataset, spec.num_classes)
    if len(names) != spec.num_classes:
        raise DataError(path, f"{len(names)} class names for {spec.num_classes} classes")
    meta = {"format": "stdcl-encoder", "version": __version__, "encoder": encoder_config(encoder),
            "class_names": names, "dataset": spec.dataset, "protocol": spec.dataset, "modality": spec.modality,
            "layout": encoder.layout.name, "num_classes": spec.num_classes, "stdcl": False, "kind": "official",
            "imported_from": path.name}
    meta = validate_meta(json.loads(json.dumps(meta)), path)  # as the saved .json reads back
    return LoadedWeights(encoder, meta, path, "official", None)


@dataclass
class InitResult:
    """What :func:`init_encoder` did: the source it read and the tensors it left at their initial values."""

    source: LoadedWeights
    skipped: list[str]


def init_encoder(encoder: Encoder, source: str | os.PathLike, strict: bool = True,
                 what: str = "train.init_from") -> InitResult:
    """Copy the weights of ``source`` (any :func:`load` source but an official .pt) into ``encoder``.

    ``strict``: every tensor must be there with the same shape; otherwise tensors whose shape differs
    (e.g. the classifier of a dataset with another class count) keep their initial values. A one-line
    :class:`ConfigError` starting ``"<what> <source>:"`` when the checkpoint does not fit.
    """
    src = load(source)
    if src.encoder.name != encoder.name:
        raise ConfigError(f"{what} {source}: a {src.encoder.name} checkpoint, but the config trains {encoder.name}")
    own, sd = encoder.state_dict(), src.encoder.state_dict()
    skipped = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    if skipped and strict:
        raise ConfigError(f"{what} {source}: shapes differ for {', '.join(skipped[:3])}"
                          f"{' ...' if len(skipped) > 3 else ''} (set train.init_strict=false to skip them)")
    missing = [k for k in own if k not in sd]
    if missing and strict:
        raise ConfigError(f"{what} {source}: missing {', '.join(missing[:3])}")
    encoder.load_state_dict({k: v for k, v in sd.items() if k in own and k not in skipped}, strict=False)
    return InitResult(src, skipped)


__all__ = ["BUNDLED_DIR", "InitResult", "LoadedWeights", "OfficialSpec", "bundled_path", "init_encoder",
           "load", "meta_path", "official_class_names"]
