"""The interface every encoder implements, so the STD-CL head never needs to know which one it sits on.

``features(x)`` -> :class:`Features` whose ``map`` is the last feature map per person,
``(N, M, C', T', V')``; ``pre_logits(features)`` -> the pooled ``(N, D)`` input of the final
linear layer ``classifier`` (as timm's ``forward_head(pre_logits=True)`` / ``get_classifier()``);
``classify(features) = classifier(pre_logits(features))``, the logits exactly as the official
head computes them; ``forward(x) = classify(features(x))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.errors import ConfigError


def present_person_weights(x: torch.Tensor) -> torch.Tensor:
    """``(N*M,)`` weights (n-major) that average over a batch's samples and the persons present in them:
    a person whose input ``(N, C, T, V, M)`` is all zero (e.g. NTU's padded second actor) is left out,
    unless no person is present at all."""
    present = x.abs().sum(dim=(1, 2, 3)).gt(0).reshape(-1).to(x.dtype)
    if present.sum() == 0:
        present = torch.ones_like(present)
    return present / present.sum()


class Features(NamedTuple):
    """An encoder's last feature map and whatever its classifier needs besides."""

    map: torch.Tensor  # (N, M, C', T', V')
    extra: Any = None


class Encoder(nn.Module):
    """Base class: subclasses implement ``features``, ``pre_logits`` and ``feature_shape``."""

    name: str = "?"
    #: attribute holding the final ``nn.Linear`` (``D -> num_classes``)
    classifier_attr: str = "fc"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int, num_person: int, window: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.layout = layout
        self.in_channels = int(in_channels)
        self.num_person = int(num_person)
        self.window = int(window)

    def check_input(self, x: torch.Tensor) -> None:
        """One-line errors for wrong rank, channel, joint or person counts."""
        if x.dim() != 5:
            raise ConfigError(f"{self.name}: expected input (N, C, T, V, M) of rank 5, got shape {tuple(x.shape)}")
        _, c, _, v, m = x.shape
        if c != self.in_channels:
            raise ConfigError(f"{self.name}: expected C={self.in_channels} channels, got shape {tuple(x.shape)}")
        if v != self.layout.num_joints:
            raise ConfigError(f"{self.name}: layout {self.layout.name!r} has V={self.layout.num_joints} joints, "
                              f"input has V={v} (shape {tuple(x.shape)})")
        if m != self.num_person:
            raise ConfigError(f"{self.name}: expected M={self.num_person} persons, got shape {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def pre_logits(self, features: Features) -> torch.Tensor:  # pragma: no cover - abstract
        """The classifier's input ``(N, D)``: the official head up to (not including) its final linear layer."""
        raise NotImplementedError

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer: ``classify(f) == classifier(pre_logits(f))``."""
        return getattr(self, self.classifier_attr)

    def classify(self, features: Features) -> torch.Tensor:
        """Logits ``(N, num_classes)`` as the official head computes them."""
        return self.classifier(self.pre_logits(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def feature_shape(self, window: int | None = None) -> tuple[int, int, int]:  # pragma: no cover
        """(C', T', V') of ``features(x).map`` for an input of ``window`` frames."""
        raise NotImplementedError

    def auxiliary_loss(self, features: Features, logits: torch.Tensor,
                       labels: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The encoder's own training term beside the cross-entropy, e.g. ProtoGCN's prototype loss:
        ``{"loss": weighted term to add, <name>: detached parts to log}``; None (the default) when it has none."""
        return None

    def joint_relations(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """Per-layer (V, V) joint-to-joint maps for the attention views (None if not learned)."""
        return None
