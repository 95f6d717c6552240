"""CTR-GCN (Chen et al., ICCV 2021), parameter-compatible with Uason-Chen/CTR-GCN.

Parameter and buffer names, shapes, layer order and initialisation follow the official
``model/ctrgcn.py`` so its state dicts load directly (``from_official("ctrgcn", sd, ...)``).

Differences from the official code that do not change the function (parity: fp64 logits
agree to ~1e-11, see ``tests/encoders/test_ctrgcn.py``):
- every 1x1 conv runs as a batched matmul (same sums; on CPU 1.5-3x faster than oneDNN's
  NCHW convolution);
- the three subsets' ``conv1``/``conv2`` are applied to the time-averaged input (they are
  linear, so this equals averaging their outputs); all ``conv3`` share one matmul;
  ``alpha`` and ``A_k`` are folded into ``conv4``'s weight and bias; the subsets'
  aggregations accumulate into one output;
- the four 1x1 convs that open the multi-scale temporal branches share one matmul (the
  strided branch takes every ``stride``-th frame of it, which is what a strided 1x1 conv
  computes), and the (3 x 1) max-pool runs channels-last (faster on CPU, same result);
- for ``in_channels`` other than 3 or 9 the official relation width ``in_channels // 8``
  is kept unless it would be 0 (e.g. 2-D input), where 8 is used as for 3 channels;
- ``adaptive=False`` keeps the graph as a non-persistent buffer ``A`` (the official code
  keeps it outside the state dict as well, and copies it to the GPU in ``forward``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.encoders.gcn_blocks import GraphEncoder, GraphUnit, ResidualBlock, cat_conv, conv_init, pointwise
from stdcl.encoders.registry import register_encoder
from stdcl.errors import ConfigError


def _bn_normal_init(m: nn.Module) -> None:
    """The multi-scale TCN's init: Kaiming fan-out convs, BN weight ~ N(1, 0.02), zero biases."""
    if isinstance(m, nn.Conv2d):
        conv_init(m)
    elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


class TemporalConv(nn.Module):
    """(k x 1) dilated temporal conv with stride, then BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1), dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class MultiScaleTemporalConv(nn.Module):
    """Branches: 1x1+BN+ReLU then a dilated k x 1 conv+BN per dilation; 1x1+BN+ReLU+max-pool(3)+BN;
    strided 1x1+BN. Outputs concatenated (no residual: CTR-GCN builds it with ``residual=False``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1,
                 dilations: tuple[int, ...] = (1, 2)):
        super().__init__()
        nb = len(dilations) + 2
        if out_channels % nb:
            raise ValueError(f"out_channels {out_channels} is not a multiple of {nb} branches")
        bc = out_channels // nb
        self.branch_channels, self.stride, self.num_dilated = bc, stride, len(dilations)
        branches = [nn.Sequential(nn.Conv2d(in_channels, bc, 1), nn.BatchNorm2d(bc), nn.ReLU(inplace=True),
                                  TemporalConv(bc, bc, kernel_size, stride=stride, dilation=d))
                    for d in dilations]
        branches.append(nn.Sequential(nn.Conv2d(in_channels, bc, 1), nn.BatchNorm2d(bc), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(kernel_size=(3, 1), stride=(stride, 1), padding=(1, 0)),
                                      nn.BatchNorm2d(bc)))
        branches.append(nn.Sequential(nn.Conv2d(in_channels, bc, 1, stride=(stride, 1)), nn.BatchNorm2d(bc)))
        self.branches = nn.ModuleList(branches)
        for m in self.modules():  # leaves in the order of the official post-order ``apply``
            _bn_normal_init(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = cat_conv([br[0] for br in self.branches])
        h = pointwise(x, w, b).split(self.branch_channels, dim=1)
        outs = [br[3](F.relu(br[1](hi), inplace=True)) for br, hi in zip(self.branches[:self.num_dilated], h)]
        pool = self.branches[self.num_dilated]
        p = F.relu(pool[1](h[self.num_dilated]), inplace=True)
        # (3 x 1) max-pooling is ~3x faster channels-last on CPU (same values and argmax ties)
        p = pool[3](p.contiguous(memory_format=torch.channels_last)).contiguous()
        outs.append(pool[4](p))
        h_last = h[-1] if self.stride == 1 else h[-1][:, :, ::self.stride]
        outs.append(self.branches[-1][1](h_last))
        return torch.cat(outs, dim=1)


class CTRGC(nn.Module):
    """Parameter holder for one subset's channel-wise topology refinement (conv1..conv4)."""

    def __init__(self, in_channels: int, out_channels: int, rel_reduction: int = 8):
        super().__init__()
        rel = 8 if in_channels in (3, 9) or in_channels // rel_reduction == 0 else in_channels // rel_reduction
        self.rel_channels = rel
        self.conv1 = nn.Conv2d(in_channels, rel, 1)
        self.conv2 = nn.Conv2d(in_channels, rel, 1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv4 = nn.Conv2d(rel, out_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)


class CTRGraphConv(GraphUnit):
    """``unit_gcn``: sum over subsets of ``(alpha * conv4(tanh(phi(x)_u - psi(x)_v)) + A_k) . conv3(x)``,
    BN (gamma 1e-6), residual, ReLU. ``A_k`` is the learned ``PA`` (initialised to the graph)."""

    def __init__(self, in_channels: int, out_channels: int, a: torch.Tensor, adaptive: bool = True):
        super().__init__()
        self.num_subset = a.shape[0]
        self.adaptive = adaptive
        self.convs = nn.ModuleList(CTRGC(in_channels, out_channels) for _ in range(self.num_subset))
        if adaptive:
            self.PA = nn.Parameter(a.clone())
        else:
            self.register_buffer("A", a.clone(), persistent=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        # ``down`` and ``bn`` come after ``convs`` as in the official code (``PA`` and ``alpha`` draw no
        # random numbers, and parameters precede submodules in the state dict either way)
        self._init_output(in_channels, out_channels)

    def _topologies(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per subset k, ``M_k = alpha * conv4(tanh(q1_u - q2_v)) + A_k`` as ``(N, C_out, V*V)``.

        ``alpha`` and ``A_k`` are folded into conv4's weight and bias, so each ``M_k`` is a
        single batched matmul (no passes over the large ``(N, C_out, V, V)`` tensors).
        """
        n, v = x.shape[0], x.shape[-1]
        k, r = self.num_subset, self.convs[0].rel_channels
        w12, b12 = cat_conv([cv for m in self.convs for cv in (m.conv1, m.conv2)])
        q = pointwise(x.mean(2), w12, b12).view(n, k, 2, r, v)  # conv1/conv2 of the time-averaged input
        rel = torch.tanh(q[:, :, 0].unsqueeze(-1) - q[:, :, 1].unsqueeze(-2)).view(n, k, r, v * v)
        a = (self.PA if self.adaptive else self.A).view(k, 1, v * v)
        out = []
        for i, m in enumerate(self.convs):
            w4 = (m.conv4.weight.view(-1, r) * self.alpha).expand(n, -1, -1)
            b4 = (m.conv4.bias * self.alpha).view(-1, 1) + a[i]
            out.append(torch.baddbmm(b4, w4, rel[:, i]))
        return out

    def topology(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K, C_out, V, V) refined topologies ``M[u, v]``; the unit computes ``out[u] = sum_v M[u, v] x3[v]``."""
        n, v = x.shape[0], x.shape[-1]
        return torch.stack(self._topologies(x), dim=1).view(n, self.num_subset, -1, v, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        k = self.num_subset
        ms = self._topologies(x)
        o = ms[0].shape[1]
        # conv3 of all subsets in one matmul, output channels ordered (o, k) so that each
        # subset's (N*O, T, V) slice is a strided view
        w3 = torch.stack([cv.conv3.weight.view(-1, c) for cv in self.convs], dim=1).view(o * k, c)
        b3 = torch.stack([cv.conv3.bias for cv in self.convs], dim=1).view(-1)
        x3 = pointwise(x, w3, b3).view(n, o, k, t, v)
        y = None
        for i in range(k):  # y[n, o, t, u] += sum_v x3_i[n, o, t, v] M_i[n, o, u, v]
            xi = x3[:, :, i].reshape(n * o, t, v)
            mi = ms[i].view(n * o, v, v).transpose(1, 2)
            y = torch.bmm(xi, mi) if y is None else torch.baddbmm(y, xi, mi)
        return self._output(y.view(n, o, t, v), x)


class CTRGCNBlock(ResidualBlock):
    """``TCN_GCN_unit``: ReLU(tcn1(gcn1(x)) + residual(x)) with the multi-scale ``tcn1``."""

    def __init__(self, in_channels: int, out_channels: int, a: torch.Tensor, stride: int = 1, residual: bool = True,
                 adaptive: bool = True, kernel_size: int = 5, dilations: tuple[int, ...] = (1, 2)):
        super().__init__()
        self.gcn1 = CTRGraphConv(in_channels, out_channels, a, adaptive=adaptive)
        self.tcn1 = MultiScaleTemporalConv(out_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                           dilations=dilations)
        self._init_residual(in_channels, out_channels, stride, residual)


@register_encoder("ctrgcn", title="CTR-GCN (Chen et al., ICCV 2021)", source="Uason-Chen/CTR-GCN",
                  cpu_cost=0.23, paper_gflops=1.97)
class CTRGCN(GraphEncoder):
    """CTR-GCN. Options: ``drop_out`` (before fc, default 0), ``adaptive`` (learned ``PA``, default True).

    ``features(x).map`` is ``(N, M, 256, ceil(ceil(T/2)/2), V)``.
    ``joint_relations(x)``: per block, the refined topology ``alpha * conv4(...) + PA_k``
    averaged over output channels, the three subsets and the batch's present persons,
    as ``R[u, v]`` (receiver u, sender v), the orientation the model itself uses.
    """

    name = "ctrgcn"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int = 3, num_person: int = 2,
                 window: int = 64, drop_out: float = 0.0, adaptive: bool = True, **unknown: Any):
        if unknown:
            raise ConfigError(f"ctrgcn: unknown option(s) {', '.join(sorted(unknown))}; known: drop_out, adaptive")
        self._adaptive = bool(adaptive)
        super().__init__(num_classes, layout, in_channels, num_person, window, drop_out=drop_out)

    def _make_block(self, in_channels: int, out_channels: int, a: torch.Tensor, stride: int,
                    residual: bool) -> nn.Module:
        return CTRGCNBlock(in_channels, out_channels, a, stride=stride, residual=residual, adaptive=self._adaptive)

    def _block_relation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.gcn1.topology(x).mean(dim=(1, 2))
