"""Encoder registry: ``build_encoder("ctrgcn", num_classes=60)`` and ``available()``."""

from __future__ import annotations

import importlib
from typing import Callable

from stdcl.data.layouts import Layout, get_layout
from stdcl.encoders.base import Encoder
from stdcl.errors import ConfigError

_MODULES = {"hcn": "stdcl.encoders.hcn", "agcn": "stdcl.encoders.agcn", "ctrgcn": "stdcl.encoders.ctrgcn",
            "hyperformer": "stdcl.encoders.hyperformer"}
_BUILDERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Class decorator registering an encoder under ``name``."""

    def deco(cls: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _BUILDERS[name] = cls
        return cls

    return deco


def _load(name: str) -> Callable[..., Encoder]:
    if name not in _BUILDERS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _BUILDERS:
        raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(available())}")
    return _BUILDERS[name]


def available() -> list[str]:
    """Names of the registered encoders."""
    return sorted(set(_MODULES) | set(_BUILDERS))


def build_encoder(name: str, num_classes: int, layout: str | Layout = "ntu25", in_channels: int = 3,
                  num_person: int = 2, window: int = 64, **options) -> Encoder:
    """Build encoder ``name`` for a layout, channel count, person count and input window."""
    model = _load(name)(num_classes=num_classes, layout=get_layout(layout), in_channels=in_channels,
                        num_person=num_person, window=window, **options)
    model.options = dict(options)  # recorded in checkpoints so the encoder can be rebuilt
    return model
