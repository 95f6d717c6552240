"""HCN (Li et al., IJCAI 2018) as the reference reproduction huguyuehuhu/HCN-pytorch builds it.

Same parameter names, shapes, initialisation and forward as ``model/HCN.py`` there, so its
checkpoints load with ``from_official("hcn", sd, ...)`` unchanged (no key conversion).

Per person and per stream (positions ``x`` and frame differences resized back to ``T``):
``conv1`` (1x1, C->64, ReLU) -> ``conv2`` (3x1, 64->window, no activation) -> transpose
``(N, W, T, V) -> (N, V, T, W)`` so the joints become channels -> ``conv3`` (3x3, V->32,
max-pool 2) -> ``conv4`` (3x3, 32->64, channel dropout 0.5, max-pool 2). The streams are
concatenated (128) -> ``conv5`` (3x3, ReLU, dropout, pool) -> ``conv6`` (3x3 -> 256, ReLU,
dropout, pool); element-wise max over persons; ``fc7`` (256*(W//16)^2 -> 512, ReLU,
dropout 0.5) -> ``fc8``.

Window constraint: ``conv2``'s width and ``fc7``'s input size are set by ``window``, so the
input must have exactly ``T == window`` frames, and ``window >= 16`` (four 2x max-pools);
a window not divisible by 16 is fine (the pools floor, as in the reference: 52 -> 3).

The "joint" axis for the STD-CL head
------------------------------------
HCN's last map ``(256, T/16, W/16)`` has no joint axis: the transpose sends the joints to
*channels* and ``conv2``'s output channels (size ``window``) to the last spatial axis, so
that axis is a pooled bank of learned filters, not joints. ``features(x).map`` is therefore
the last map on which joints are still a spatial axis: the ``conv2`` outputs of both
streams, concatenated on channels (positions first, then motion), per person:

    map: (N, M, 2 * window, window, V)      feature_shape(window) == (2*window, window, V)

It feeds the whole classification path (``classify`` runs conv3..fc8 on exactly this
tensor, so ``extra`` is None), so the contrastive gradient trains ``conv1``/``conv2`` of both
streams, and "spatial" keeps meaning joints (per-joint and per-frame attention maps are
about real joints and frames). The deeper layers are trained by the classification loss
only.

Differences from the reference that do not change results: persons are folded into the
batch instead of a Python loop (the max over persons is ``amax``, identical to the
reference's ``torch.max(p0, p1)`` for two persons and also valid for one, which the
reference cannot run); the post-transpose convs run in channels-last memory format (faster
on CPU); ``fc7``'s dropout is ``nn.Dropout`` (the reference applies ``Dropout2d`` to a 2-D
tensor, which is element-wise dropout with a deprecation warning). In training mode the
dropout masks are drawn in a different order, so they are not bit-identical to the
reference's for the same seed (same distribution). No NaN/zero asserts inside ``forward``
(they force a host sync and break ``torch.compile`` graphs).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder, Features
from stdcl.encoders.registry import register_encoder
from stdcl.errors import ConfigError

_CL = torch.channels_last


def _reference_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv/linear, in module order.

    Bound ``sqrt(6 / (fan_in + fan_out))`` with conv fans ``in*kh*kw`` / ``out*kh*kw``, drawn
    with ``uniform_`` in the same order as the reference, so a seeded build matches it.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            shape = list(m.weight.shape)
            if isinstance(m, nn.Conv2d):
                fan_in, fan_out = math.prod(shape[1:4]), math.prod(shape[2:4]) * shape[0]
            else:
                fan_in, fan_out = shape[1], shape[0]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                m.weight.uniform_(-bound, bound)
                if m.bias is not None:
                    m.bias.zero_()


@register_encoder("hcn", title="HCN (Li et al., IJCAI 2018)", source="huguyuehuhu/HCN-pytorch",
                  cpu_cost=0.012)
class HCN(Encoder):
    """Hierarchical co-occurrence network; see the module docstring for the feature map."""

    name = "hcn"
    classifier_attr = "fc8"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int = 3, num_person: int = 2,
                 window: int = 64, **options: Any) -> None:
        super().__init__(num_classes, layout, in_channels, num_person, window)
        unknown = sorted(set(options) - {"out_channel", "dropout"})
        if unknown:
            raise ConfigError(f"hcn: unknown option(s) {', '.join(unknown)}; known: out_channel, dropout")
        if self.window < 16:
            raise ConfigError(f"hcn: window must be >= 16 frames (four 2x max-pools), got window={self.window}")
        if self.num_person < 1:
            raise ConfigError(f"hcn: num_person must be >= 1, got {self.num_person}")
        oc = int(options.get("out_channel", 64))
        p = float(options.get("dropout", 0.5))
        v, w, c = layout.num_joints, self.window, self.in_channels
        self.out_channel = oc
        # Construction order and layer order follow the reference (it fixes the seeded init).
        self.conv1 = nn.Sequential(nn.Conv2d(c, oc, kernel_size=1), nn.ReLU())
        self.conv2 = nn.Conv2d(oc, w, kernel_size=(3, 1), padding=(1, 0))
        self.conv3 = nn.Sequential(nn.Conv2d(v, oc // 2, kernel_size=3, padding=1), nn.MaxPool2d(2))
        self.conv4 = nn.Sequential(nn.Conv2d(oc // 2, oc, kernel_size=3, padding=1), nn.Dropout2d(p),
                                   nn.MaxPool2d(2))
        self.conv1m = nn.Sequential(nn.Conv2d(c, oc, kernel_size=1), nn.ReLU())
        self.conv2m = nn.Conv2d(oc, w, kernel_size=(3, 1), padding=(1, 0))
        self.conv3m = nn.Sequential(nn.Conv2d(v, oc // 2, kernel_size=3, padding=1), nn.MaxPool2d(2))
        self.conv4m = nn.Sequential(nn.Conv2d(oc // 2, oc, kernel_size=3, padding=1), nn.Dropout2d(p),
                                    nn.MaxPool2d(2))
        self.conv5 = nn.Sequential(nn.Conv2d(2 * oc, 2 * oc, kernel_size=3, padding=1), nn.ReLU(),
                                   nn.Dropout2d(p), nn.MaxPool2d(2))
        self.conv6 = nn.Sequential(nn.Conv2d(2 * oc, 4 * oc, kernel_size=3, padding=1), nn.ReLU(),
                                   nn.Dropout2d(p), nn.MaxPool2d(2))
        self.fc7 = nn.Sequential(nn.Linear(4 * oc * (w // 16) ** 2, 512), nn.ReLU(), nn.Dropout(p))
        self.fc8 = nn.Linear(512, self.num_classes)
        _reference_init(self)

    def feature_shape(self, window: int | None = None) -> tuple[int, int, int]:
        """``(2*window, window, V)``: conv2 outputs of both streams, joints kept as the last axis."""
        t = self.window if window is None else int(window)
        if t != self.window:
            raise ConfigError(f"hcn: built for window={self.window} frames (conv2 width and fc7 size depend "
                              f"on it), asked for window={t}")
        return 2 * self.window, t, self.layout.num_joints

    @staticmethod
    def _motion(x: torch.Tensor) -> torch.Tensor:
        """Frame differences resized back to T (bilinear, as the reference), persons in the batch.

        ``x``: (N, C, T, V, M) -> (N*M, C, T, V).
        """
        n, c, t, v, m = x.shape
        d = (x[:, :, 1:] - x[:, :, :-1]).permute(0, 4, 1, 2, 3).reshape(n * m, c, t - 1, v)
        return F.interpolate(d, size=(t, v), mode="bilinear", align_corners=False)

    def features(self, x: torch.Tensor) -> Features:
        """(N, C, T, V, M) -> map (N, M, 2*window, window, V), the conv2 outputs (see module doc)."""
        self.check_input(x)
        n, c, t, v, m = x.shape
        if t != self.window:
            raise ConfigError(f"hcn: expected T={self.window} frames (the window the model was built for), "
                              f"got shape {tuple(x.shape)}")
        pos = x.permute(0, 4, 2, 3, 1).reshape(n * m, t, v, c).permute(0, 3, 1, 2)  # channels-last view
        mot = self._motion(x).contiguous(memory_format=_CL)
        p = self.conv2(self.conv1(pos))
        q = self.conv2m(self.conv1m(mot))
        fmap = torch.cat((p, q), dim=1).view(n, m, 2 * self.window, t, v)
        return Features(map=fmap, extra=None)

    def pre_logits(self, features: Features) -> torch.Tensor:
        """conv3..conv6 per stream/person on the map, max over persons, fc7: the input of ``fc8``."""
        fmap = features.map
        expect = (self.num_person, *self.feature_shape())
        if fmap.dim() != 5 or tuple(fmap.shape[1:]) != expect:
            raise ConfigError(f"hcn: classify expects a map (N, {', '.join(map(str, expect))}), "
                              f"got shape {tuple(fmap.shape)}")
        n, m, c2, t, v = fmap.shape
        w = c2 // 2
        z = fmap.reshape(n * m, c2, t, v)
        # the transpose: (N, W, T, V) -> (N, V, T, W), joints become channels
        p = z[:, :w].permute(0, 3, 2, 1).contiguous(memory_format=_CL)
        q = z[:, w:].permute(0, 3, 2, 1).contiguous(memory_format=_CL)
        p = self.conv4(self.conv3(p))
        q = self.conv4m(self.conv3m(q))
        z = self.conv6(self.conv5(torch.cat((p, q), dim=1)))
        z = z.reshape(n, m, -1).amax(dim=1)  # element-wise max over persons, flattened (C, T', W')
        return self.fc7(z)
