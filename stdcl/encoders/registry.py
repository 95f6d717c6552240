"""Encoder registry: one description per encoder, registered beside its class.

``@register_encoder("ctrgcn", title=..., source=..., cpu_cost=...)`` on the class is all an
encoder needs: every module of :mod:`stdcl.encoders` is discovered on first use, and the CLI
choice lists, the config validator, the job-time estimate, the encoder bench, the app's lists
and the shared tests all read :func:`available` / :func:`spec`.
``build_encoder("ctrgcn", num_classes=60)`` builds one.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from stdcl.data.layouts import Layout, get_layout
from stdcl.encoders.base import Encoder
from stdcl.errors import ConfigError

#: modules of the package that hold no encoder (skipped by discovery)
_NOT_ENCODERS = {"base", "registry", "official"}


@dataclass(frozen=True)
class EncoderSpec:
    """What the project knows about one encoder besides its code."""

    name: str
    factory: Callable[..., Encoder]
    #: human-readable name and reference, e.g. "CTR-GCN (Chen et al., ICCV 2021)"
    title: str
    #: the official implementation, "owner/repo" on GitHub
    source: str
    #: CPU seconds per training sample of one full STD-CL step (forward, CE + contrastive loss with
    #: P=128 / K=512 on full banks, backward, optimiser step) at window 32, input (3, 32, 25, 2),
    #: 13 classes, batch 16: ``stdcl.train.bench.bench_train_step`` timed in CPU seconds of one
    #: thread (torch 2.13 CPU, the 2-core development VM, 2026-11; wall clock there while shared was
    #: 1.5-2.7x these, and the real loop adds data loading, about +25 % for HCN). The job-time
    #: estimates scale it (stdcl.train.estimate) and calibrate it on the machine at hand.
    cpu_cost: float
    #: GFLOPs per sample the paper reports for the official NTU setting (None: not reported)
    paper_gflops: float | None = None
    #: the packaged recipe (``stdcl/configs/<recipe>.yaml``), with its per-dataset differences
    recipe: str = ""

    @property
    def joint_relations(self) -> bool:
        """Whether the encoder learns joint-to-joint maps (``Encoder.joint_relations`` overridden)."""
        own = getattr(self.factory, "joint_relations", None)
        return own is not None and own is not Encoder.joint_relations

    @property
    def official_conversion(self) -> bool:
        """Whether official state dicts need key conversion (``convert_official``) before loading."""
        return callable(getattr(self.factory, "convert_official", None))


_SPECS: dict[str, EncoderSpec] = {}
_discovered = False


def register_encoder(name: str, *, title: str, source: str, cpu_cost: float, paper_gflops: float | None = None,
                     recipe: str | None = None) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator registering an encoder and its description under ``name``."""
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"encoder name {name!r} must be a lower-case identifier")
    if not cpu_cost > 0:
        raise ValueError(f"encoder {name!r}: cpu_cost must be > 0, got {cpu_cost!r}")

    def deco(cls: type[Encoder]) -> type[Encoder]:
        old = _SPECS.get(name)
        if old is not None and old.factory.__qualname__ != cls.__qualname__:
            raise ValueError(f"encoder {name!r} registered twice ({old.factory.__module__}, {cls.__module__})")
        cls.name = name
        _SPECS[name] = EncoderSpec(name, cls, title, source, float(cpu_cost), paper_gflops,
                                   recipe or f"encoder/{name}")
        return cls

    return deco


def _discover() -> None:
    """Import every encoder module of the package once (each registers itself)."""
    global _discovered
    if _discovered:
        return
    import stdcl.encoders as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _NOT_ENCODERS and not info.name.endswith("_blocks"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _discovered = True


def available() -> list[str]:
    """Names of the registered encoders, sorted."""
    _discover()
    return sorted(_SPECS)


def spec(name: str) -> EncoderSpec:
    """The description of encoder ``name``; a one-line :class:`ConfigError` for an unknown name."""
    _discover()
    if name not in _SPECS:
        raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(available())}")
    return _SPECS[name]


def specs() -> list[EncoderSpec]:
    """Every registered encoder's description, by name."""
    return [_SPECS[n] for n in available()]


def build_encoder(name: str, num_classes: int, layout: str | Layout = "ntu25", in_channels: int = 3,
                  num_person: int = 2, window: int = 64, **options) -> Encoder:
    """Build encoder ``name`` for a layout, channel count, person count and input window."""
    model = spec(name).factory(num_classes=num_classes, layout=get_layout(layout), in_channels=in_channels,
                               num_person=num_person, window=window, **options)
    model.options = dict(options)  # recorded in checkpoints so the encoder can be rebuilt
    return model
