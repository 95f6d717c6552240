"""The models the analysis reads: bundled demo checkpoints, run directories, loose ``.safetensors``
checkpoints and official ``.pt`` weights, all loaded by :func:`stdcl.weights.load`.

A :class:`LoadedModel` carries the encoder (eval mode), its trained STD-CL head when the
checkpoint has one, the metadata and a content digest that keys every cache downstream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.bundled import BUNDLED_DIR  # re-exported: the bundled demo folder
from analysis.cache import file_digest, make_key
from stdcl.checkpoint import meta_path
from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder
from stdcl.errors import DataError
from stdcl.head.checkpoint import head_path, load_head
from stdcl.head.decoupling import DecouplingHead
from stdcl.train.run_dir import checkpoint_of, is_run_dir
from stdcl.weights import OfficialSpec
from stdcl.weights import load as load_weights



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


def load_model(target: str | os.PathLike | ModelRef, which: str = "best", device: str | torch.device = "cpu",
               official: OfficialSpec | None = None) -> LoadedModel:
    """Any source :func:`stdcl.weights.load` reads (``bundled:NAME``, a run directory's ``which``
    checkpoint, a ``.safetensors`` checkpoint, an official ``.pt`` with its ``official`` spec) or a
    :class:`ModelRef`."""
    ref = target if isinstance(target, ModelRef) else None
    source = ref.path if ref else target
    lw = load_weights(source, which, official)
    if lw.kind == "official":
        spec = official
        digest = make_key(file_digest([lw.source]), spec.encoder, spec.num_classes, str(spec.layout), spec.window,
                          spec.num_person, spec.in_channels, spec.options)
        return LoadedModel(lw.encoder, None, lw.meta, lw.source, digest, ref.label if ref else lw.source.stem,
                           "official").to(device)
    head = load_head(lw.source, lw.encoder, lw.meta) if lw.head_file is not None else None
    if ref is not None:
        label, kind = ref.label, ref.kind
    elif lw.kind == "run":
        label, kind = f"{Path(source).name}/{lw.source.stem}", "run"
    else:
        label, kind = lw.source.stem, lw.kind
    return LoadedModel(lw.encoder, head, lw.meta, lw.source, _digest(lw.source), label, kind).to(device)


def load_official_model(path: str | os.PathLike, encoder: str, num_classes: int, layout: str | Layout = "ntu25",
                        window: int = 64, num_person: int = 2, in_channels: int = 3,
                        class_names: list[str] | None = None, dataset: str | None = None,
                        options: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Official weights (``.pt``, read with ``weights_only=True``) as a baseline model."""
    layout = layout.name if isinstance(layout, Layout) else layout
    spec = OfficialSpec(encoder, num_classes, layout, window, num_person, in_channels, dataset,
                        class_names=None if class_names is None else tuple(class_names), options=dict(options or {}))
    return load_model(path, official=spec, device=device)
