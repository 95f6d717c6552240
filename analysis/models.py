"""Loading the models the analysis reads: bundled demo checkpoints, run directories, loose
``.safetensors`` checkpoints and official ``.pt`` weights (``weights_only=True``).

A :class:`LoadedModel` carries the encoder (eval mode), its trained STD-CL head when the
checkpoint has one, the metadata and a content digest that keys every cache downstream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.bundled import BUNDLED_DIR  # re-exported: the bundled demo folder
from analysis.cache import file_digest, make_key
from stdcl.checkpoint import load_encoder, meta_path
from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder
from stdcl.encoders.official import from_official, load_official_file
from stdcl.errors import ConfigError, DataError
from stdcl.head.checkpoint import head_path, load_head
from stdcl.head.decoupling import DecouplingHead
from stdcl.train.run_dir import checkpoint_of, is_run_dir



@dataclass
class LoadedModel:
    """An encoder ready for analysis (eval mode, fp32)."""

    encoder: Encoder
    head: DecouplingHead | None
    meta: dict[str, Any]
    path: Path  # the encoder weights file
    digest: str  # content hash of weights, head and metadata
    label: str
    kind: str  # "bundled", "run", "file" or "official"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stdcl(self) -> bool:
        return self.head is not None

    @property
    def encoder_name(self) -> str:
        return self.encoder.name

    @property
    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        return list(names) if names else [f"class {i}" for i in range(self.encoder.num_classes)]

    @property
    def layout(self) -> Layout:
        return self.encoder.layout

    @property
    def config(self) -> dict[str, Any] | None:
        cfg = self.meta.get("config")
        return cfg if isinstance(cfg, dict) else None

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.encoder.to(device)
        if self.head is not None:
            self.head.to(device)
        return self

    def describe(self) -> str:
        """One line: label, encoder, STD-CL or baseline, dataset, classes."""
        ds = self.meta.get("dataset") or "unknown dataset"
        return (f"{self.label}: {self.encoder.name}, {'STD-CL' if self.stdcl else 'baseline'}, {ds}, "
                f"{self.encoder.num_classes} classes, window {self.encoder.window}")


@dataclass(frozen=True)
class ModelRef:
    """A model the user can pick: what to call it and where it is."""

    label: str
    path: Path
    kind: str


def bundled_models(folder: str | os.PathLike | None = None) -> list[ModelRef]:
    """The bundled demo checkpoints (encoder files, not heads), sorted by name."""
    folder = Path(folder or BUNDLED_DIR)
    return [ModelRef(p.stem, p, "bundled") for p in sorted(folder.glob("*.safetensors"))
            if not p.name.endswith(".head.safetensors") and meta_path(p).is_file()]


def discover_models(folder: str | os.PathLike, max_depth: int = 3) -> list[ModelRef]:
    """Run directories and loose checkpoints under ``folder`` (up to ``max_depth`` levels)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(root, "not a folder")
    found: list[ModelRef] = []

    def walk(d: Path, depth: int) -> None:
        if is_run_dir(d):
            try:
                checkpoint_of(d)
            except DataError:
                return  # a run that has not saved a checkpoint yet
            found.append(ModelRef(str(d.relative_to(root)) if d != root else d.name, d, "run"))
            return
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        for p in entries:
            if p.is_file() and p.suffix == ".safetensors" and not p.name.endswith(".head.safetensors") \
                    and meta_path(p).is_file():
                found.append(ModelRef(str(p.relative_to(root).with_suffix("")), p, "file"))
            elif p.is_dir() and depth < max_depth and not p.name.startswith("."):
                walk(p, depth + 1)

    walk(root, 0)
    return found


def _digest(weights: Path) -> str:
    return file_digest([weights, head_path(weights), meta_path(weights)])


def load_model(target: str | os.PathLike | ModelRef, which: str = "best",
               device: str | torch.device = "cpu") -> LoadedModel:
    """A run directory (its ``which`` checkpoint), a ``.safetensors`` checkpoint or a :class:`ModelRef`."""
    ref = target if isinstance(target, ModelRef) else None
    path = Path(ref.path if ref else target)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    weights = checkpoint_of(path, which)
    if weights.suffix != ".safetensors":
        raise DataError(weights, "not a .safetensors checkpoint (import official .pt files with load_official_model)")
    encoder, meta = load_encoder(weights)
    head = load_head(weights, encoder, meta)
    if ref is not None:
        label, kind = ref.label, ref.kind
    elif path.is_dir():
        label, kind = f"{path.name}/{weights.stem}", "run"
    else:
        label, kind = weights.stem, "bundled" if weights.parent.resolve() == BUNDLED_DIR.resolve() else "file"
    return LoadedModel(encoder, head, meta, weights, _digest(weights), label, kind).to(device)


def load_official_model(path: str | os.PathLike, encoder: str, num_classes: int, layout: str | Layout = "ntu25",
                        window: int = 64, num_person: int = 2, in_channels: int = 3,
                        class_names: list[str] | None = None, dataset: str | None = None,
                        options: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Official weights (``.pt``, read with ``weights_only=True``) as a baseline model."""
    path = Path(path)
    sd = load_official_file(path)
    try:
        model = from_official(encoder, sd, num_classes, layout, num_person, window, in_channels, **(options or {}))
    except ConfigError as e:
        raise DataError(path, str(e)) from None
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{path}: {len(class_names)} class names for {num_classes} classes")
    meta = {"encoder": {"name": encoder, "options": options or {}}, "class_names": class_names,
            "dataset": dataset, "num_classes": num_classes, "stdcl": False, "kind": "official",
            "modality": "joint"}
    digest = make_key(file_digest([path]), encoder, num_classes, str(layout), window, num_person, in_channels,
                      options or {})
    return LoadedModel(model, None, meta, path, digest, path.stem, "official").to(device)


def classifier_layer(encoder: Encoder) -> nn.Linear:
    """The encoder's final linear layer (out_features = num_classes): its input is the global embedding."""
    last = None
    for m in encoder.modules():
        if isinstance(m, nn.Linear) and m.out_features == encoder.num_classes:
            last = m
    if last is None:
        raise ConfigError(f"{encoder.name}: no final linear classifier found")
    return last
