"""What 2s-AGCN and CTR-GCN share: init helpers, the graph unit's residual/BN/init, the temporal conv
unit and the 10-block backbone.

Both official models have the same outer structure (parameter names included):
``data_bn`` (BatchNorm1d over M*V*C) -> ``l1`` .. ``l10`` (3->64, 64, 64, 64, 64->128 stride 2,
128, 128, 128->256 stride 2, 256, 256; ``l1`` without block residual) -> mean over (T, V),
then over persons -> optional dropout -> ``fc``. :class:`GraphEncoder` implements that once;
subclasses only say how a block is built (``_make_block``) and how its graph unit exposes
the joint-to-joint map (``_block_relation``).

Modules are constructed and initialised in the official order, so under the same
``torch.manual_seed`` the initial weights equal the official models' bit for bit.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from stdcl.data.graph import spatial_adjacency
from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder, Features, present_person_weights
from stdcl.errors import ConfigError

#: (in, out, stride, residual) per block, for ``in_channels`` input channels and base width 64.
BLOCK_WIDTHS: tuple[tuple[int, int], ...] = ((64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1),
                                             (256, 2), (256, 1), (256, 1))


def conv_init(conv: nn.Module) -> None:
    """Kaiming-normal (fan-out) weight, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


def conv_branch_init(conv: nn.Conv2d, branches: int) -> None:
    """Normal(0, sqrt(2 / (out * in * kt * branches))) weight, zero bias (2s-AGCN's conv_d)."""
    w = conv.weight
    nn.init.normal_(w, 0, math.sqrt(2.0 / (w.size(0) * w.size(1) * w.size(2) * branches)))
    nn.init.constant_(conv.bias, 0)


def bn_init(bn: nn.Module, scale: float) -> None:
    """Constant ``scale`` weight, zero bias."""
    nn.init.constant_(bn.weight, scale)
    nn.init.constant_(bn.bias, 0)


def cat_conv(convs: Sequence[nn.Conv2d]) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and biases of several 1x1 convs on the same input, stacked along the output axis."""
    return torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
              stride: int = 1) -> torch.Tensor:
    """A 1x1 convolution of ``(N, C, T, ...)`` (time stride ``stride``) as one batched matmul.

    Same sums as ``F.conv2d`` with a 1x1 kernel, but on CPU it avoids oneDNN's reorders of
    NCHW tensors and runs 1.5-3x faster.
    """
    if stride > 1:
        x = x[:, :, ::stride]
    n, c = x.shape[:2]
    w = weight.reshape(weight.shape[0], c).expand(n, -1, -1)
    xf = x.reshape(n, c, -1)
    y = torch.bmm(w, xf) if bias is None else torch.baddbmm(bias.view(1, -1, 1), w, xf)
    return y.view(n, -1, *x.shape[2:])


def adjacency_tensor(layout: Layout) -> torch.Tensor:
    """The (3, V, V) float32 reference adjacency of ``layout``."""
    return torch.from_numpy(spatial_adjacency(layout).astype(np.float32))


class UnitTCN(nn.Module):
    """``unit_tcn``: (k x 1) temporal conv with stride, then BN (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, stride: int = 1):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        conv_init(self.conv)
        bn_init(self.bn, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:
            return self.bn(pointwise(x, self.conv.weight, self.conv.bias, self.stride))
        return self.bn(self.conv(x))


def down_residual(down: nn.Sequential | None, x: torch.Tensor) -> torch.Tensor:
    """The graph unit's residual: ``x`` itself, or ``down`` = (1x1 conv, BN) of it."""
    return x if down is None else down[1](pointwise(x, down[0].weight, down[0].bias))


class GraphUnit(nn.Module):
    """What the official 2s-AGCN and CTR-GCN ``unit_gcn`` share around their graph aggregation.

    Subclasses create their convs (and graph parameters) and then call :meth:`_init_output`,
    which adds ``down`` (1x1 conv + BN when the width changes, else none) and the output
    ``bn``, and initialises every module in the official order: Kaiming convs, BN weight 1,
    then ``bn``'s weight 1e-6. :meth:`_output` is the unit's tail: ``ReLU(bn(y) + residual(x))``.
    """

    def _init_output(self, in_channels: int, out_channels: int) -> None:
        self.down = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
                     if in_channels != out_channels else None)
        self.bn = nn.BatchNorm2d(out_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)
            elif isinstance(m, nn.BatchNorm2d):
                bn_init(m, 1)
        bn_init(self.bn, 1e-6)

    def _output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``ReLU(bn(y) + residual(x))`` for the aggregated ``y`` (N, C_out, T, V) of the unit's input ``x``."""
        y = self.bn(y)
        y += down_residual(self.down, x)
        return y.relu_()


class ResidualBlock(nn.Module):
    """``TCN_GCN_unit``: ``ReLU(tcn1(gcn1(x)) + residual(x))``.

    Subclasses create ``gcn1`` and ``tcn1`` and then call :meth:`_init_residual` (the
    official construction order). The residual is none (``l1``), the identity, or a
    strided 1x1 ``unit_tcn`` when the width or the frame rate changes.
    """

    def _init_residual(self, in_channels: int, out_channels: int, stride: int, residual: bool) -> None:
        self.res_mode = "none" if not residual else ("id" if in_channels == out_channels and stride == 1 else "conv")
        self.residual = UnitTCN(in_channels, out_channels, kernel_size=1, stride=stride) \
            if self.res_mode == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tcn1(self.gcn1(x))
        if self.res_mode == "id":
            y += x
        elif self.res_mode == "conv":
            y += self.residual(x)
        return y.relu_()


def temporal_out(t: int, stride: int) -> int:
    """Frames after a same-padded temporal conv (or pool) with ``stride``: ceil(t / stride)."""
    return (t - 1) // stride + 1


class GraphEncoder(Encoder):
    """The shared 2s-AGCN / CTR-GCN backbone and head; subclasses provide the blocks."""

    out_channels = 256

    def __init__(self, num_classes: int, layout: Layout, in_channels: int, num_person: int, window: int,
                 drop_out: float = 0.0):
        super().__init__(num_classes, layout, in_channels, num_person, window)
        if min(self.num_classes, self.in_channels, self.num_person, self.window) < 1:
            raise ConfigError(f"{self.name}: num_classes, in_channels, num_person and window must be >= 1, got "
                              f"{num_classes}, {in_channels}, {num_person}, {window}")
        if not 0.0 <= float(drop_out) < 1.0:
            raise ConfigError(f"{self.name}: drop_out must be in [0, 1), got {drop_out}")
        v = layout.num_joints
        a = adjacency_tensor(layout)
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * v)
        c_in = in_channels
        for i, (c_out, stride) in enumerate(BLOCK_WIDTHS, start=1):
            setattr(self, f"l{i}", self._make_block(c_in, c_out, a, stride=stride, residual=i > 1))
            c_in = c_out
        self.fc = nn.Linear(c_in, num_classes)
        nn.init.normal_(self.fc.weight, 0, math.sqrt(2.0 / num_classes))
        bn_init(self.data_bn, 1)
        self.drop_out = nn.Dropout(drop_out) if drop_out else nn.Identity()
        self.strides = tuple(s for _, s in BLOCK_WIDTHS)

    def _make_block(self, in_channels: int, out_channels: int, a: torch.Tensor, stride: int,
                    residual: bool) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def blocks(self) -> list[nn.Module]:
        return [getattr(self, f"l{i}") for i in range(1, len(BLOCK_WIDTHS) + 1)]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> data_bn over (M, V, C) -> (N*M, C, T, V)."""
        n, c, t, v, m = x.shape
        x = self.data_bn(x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t))
        return x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)

    def features(self, x: torch.Tensor) -> Features:
        """Last block's map, ``(N, M, 256, T', V)``."""
        self.check_input(x)
        n, m = x.shape[0], x.shape[-1]
        x = self._embed(x)
        for block in self.blocks:
            x = block(x)
        return Features(map=x.view(n, m, *x.shape[1:]))

    def pre_logits(self, features: Features) -> torch.Tensor:
        """Official head up to ``fc``: mean over T' and V, then over persons, dropout."""
        f = features.map
        x = f.reshape(f.shape[0], f.shape[1], f.shape[2], -1).mean(3).mean(1)
        return self.drop_out(x)

    def feature_shape(self, window: int | None = None) -> tuple[int, int, int]:
        t = self.window if window is None else int(window)
        for s in self.strides:
            t = temporal_out(t, s)
        return self.out_channels, t, self.layout.num_joints

    def _block_relation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(N*M, V, V) receiver-by-sender map of ``block``'s graph unit for its input ``x``."""
        raise NotImplementedError

    def joint_relations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block (V, V) maps ``R[u, v]`` = weight with which joint v feeds joint u.

        Computed in eval mode without gradients (the training flag is restored) and
        averaged over the samples of the batch and the persons present in them (a person
        whose input is all zero, e.g. NTU's padded second actor, is left out unless no
        person is present at all).
        """
        self.check_input(x)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                w = present_person_weights(x)  # (N*M,), n-major
                h = self._embed(x)
                out = []
                for block in self.blocks:
                    r = self._block_relation(block, h)
                    out.append(torch.einsum("n,nuv->uv", w.to(r.dtype), r))
                    h = block(h)
        finally:
            self.train(was_training)
        return out
