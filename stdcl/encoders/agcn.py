"""Single-stream 2s-AGCN (Shi et al., CVPR 2019), parameter-compatible with lshiwjx/2s-AGCN.

Parameter and buffer names, shapes, layer order and initialisation follow the official
``model/agcn.py`` so its state dicts load directly (``from_official("agcn", sd, ...)``).
The fixed graph ``A`` is a non-persistent buffer (the official code keeps it outside the
state dict and copies it to the GPU in every ``forward``; here it follows ``.to()``).

Differences from the official code that do not change the function (parity: fp64 logits
agree to ~1e-10, see ``tests/encoders/test_agcn.py``):
- every 1x1 conv runs as a batched matmul (same sums; on CPU 1.5-3x faster than oneDNN's
  NCHW convolution); the three subsets' ``conv_a``/``conv_b`` share one matmul, and the
  subsets' ``conv_d`` outputs accumulate in place of separate convs and sums;
- ``l1`` takes ``in_channels`` inputs (the official code hard-codes 3 there);
- an optional ``drop_out`` before ``fc`` (the official model has none; default 0).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.encoders.gcn_blocks import (GraphEncoder, GraphUnit, ResidualBlock, UnitTCN, cat_conv, conv_branch_init,
                                       pointwise)
from stdcl.encoders.registry import register_encoder
from stdcl.errors import ConfigError


class AdaptiveGraphConv(GraphUnit):
    """``unit_gcn``: sum over subsets k of ``conv_d[k](x @ (A_k + B_k + C_k(x)))``, BN, residual, ReLU.

    ``A_k`` is the fixed graph (buffer ``A``), ``B_k`` the learned ``PA`` (initialised to
    1e-6) and ``C_k(x) = softmax_v(theta_k(x)^T phi_k(x) / (C_e T))`` the data-dependent
    similarity (``conv_a`` = theta, ``conv_b`` = phi, softmax over the first joint axis).
    """

    def __init__(self, in_channels: int, out_channels: int, a: torch.Tensor, coff_embedding: int = 4):
        super().__init__()
        self.inter_c = out_channels // coff_embedding
        self.num_subset = a.shape[0]
        self.PA = nn.Parameter(a.clone())
        nn.init.constant_(self.PA, 1e-6)
        self.register_buffer("A", a.clone(), persistent=False)
        convs = [[nn.Conv2d(in_channels, self.inter_c, 1), nn.Conv2d(in_channels, self.inter_c, 1),
                  nn.Conv2d(in_channels, out_channels, 1)] for _ in range(self.num_subset)]  # official order
        self.conv_a = nn.ModuleList(c[0] for c in convs)
        self.conv_b = nn.ModuleList(c[1] for c in convs)
        self.conv_d = nn.ModuleList(c[2] for c in convs)
        self._init_output(in_channels, out_channels)
        for conv in self.conv_d:
            conv_branch_init(conv, self.num_subset)

    def adjacency(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K, V, V) maps ``S_k = A_k + B_k + C_k(x)``; the unit computes ``out[w] = sum_v x[v] S_k[v, w]``."""
        n, _, t, v = x.shape
        k, ic = self.num_subset, self.inter_c
        w, b = cat_conv([*self.conv_a, *self.conv_b])
        ab = pointwise(x, w, b).view(n, 2, k, ic * t, v)
        s = torch.matmul(ab[:, 0].transpose(-1, -2), ab[:, 1]) / (ic * t)
        return torch.softmax(s, dim=-2) + (self.A + self.PA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        s = self.adjacency(x)
        xv = x.reshape(n, c * t, v)
        y = sum(d.bias for d in self.conv_d).view(1, -1, 1)
        for k, d in enumerate(self.conv_d):  # y += W_k (x @ S_k), accumulated in place of a concat
            xs = torch.matmul(xv, s[:, k]).view(n, c, t * v)
            y = torch.baddbmm(y, d.weight.view(-1, c).expand(n, -1, -1), xs)
        return self._output(y.view(n, -1, t, v), x)


class AGCNBlock(ResidualBlock):
    """``TCN_GCN_unit``: ReLU(tcn1(gcn1(x)) + residual(x)), tcn1 a 9x1 ``unit_tcn``."""

    def __init__(self, in_channels: int, out_channels: int, a: torch.Tensor, stride: int = 1, residual: bool = True):
        super().__init__()
        self.gcn1 = AdaptiveGraphConv(in_channels, out_channels, a)
        self.tcn1 = UnitTCN(out_channels, out_channels, kernel_size=9, stride=stride)
        self._init_residual(in_channels, out_channels, stride, residual)


@register_encoder("agcn", title="2s-AGCN (Shi et al., CVPR 2019), joint stream", source="lshiwjx/2s-AGCN",
                  cpu_cost=0.19)
class AGCN(GraphEncoder):
    """Single-stream 2s-AGCN. Options: ``drop_out`` (before fc, default 0).

    ``features(x).map`` is ``(N, M, 256, ceil(ceil(T/2)/2), V)``.
    ``joint_relations(x)``: per block, the adaptive adjacency ``A_k + B_k + C_k(x)`` averaged
    over the three subsets and over the batch's present persons, transposed to the
    receiver-by-sender convention ``R[u, v]`` shared with CTR-GCN.
    """

    name = "agcn"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int = 3, num_person: int = 2,
                 window: int = 300, drop_out: float = 0.0, **unknown: Any):
        if unknown:
            raise ConfigError(f"agcn: unknown option(s) {', '.join(sorted(unknown))}; known: drop_out")
        super().__init__(num_classes, layout, in_channels, num_person, window, drop_out=drop_out)

    def _make_block(self, in_channels: int, out_channels: int, a: torch.Tensor, stride: int,
                    residual: bool) -> nn.Module:
        return AGCNBlock(in_channels, out_channels, a, stride=stride, residual=residual)

    def _block_relation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.gcn1.adjacency(x).mean(1).transpose(-1, -2)
