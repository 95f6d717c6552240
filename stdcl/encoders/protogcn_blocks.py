"""ProtoGCN building blocks, parameter-compatible with firework8/ProtoGCN (pyskl-based).

``GCNBlock`` (``GCN_Block``), ``UnitGCN`` (``unit_gcn`` with motion topology enhancement),
``MSTCN`` (pyskl ``mstcn`` with the per-joint global-context coefficient ``add_coeff``),
``UnitTCN`` (pyskl ``unit_tcn``), ``PrototypeReconstruction`` (``Prototype_Reconstruction_Network``)
and ``ClassSpecificContrastiveLoss`` (``Class_Specific_Contrastive_Loss``, the prototype loss).

Attribute names, registration order and initialisation follow the official code (PyTorch's
default init everywhere: pyskl never calls these modules' ``init_weights``), so a seeded build
draws the official numbers and official state dicts load unchanged. The forward passes compute
the same function faster on CPU: 1x1 convs as batched matmuls (``gcn_blocks.pointwise``), those
on the same input fused into one (the strided 1x1 branch takes every ``stride``-th frame of it,
which is what a strided 1x1 conv computes), and ``conv1``/``conv2`` on the time-averaged input
(they are linear, so this equals averaging their outputs).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stdcl.encoders.gcn_blocks import cat_conv, pointwise

#: the official (and only) multi-scale TCN configuration of every ProtoGCN config
MS_CFG: tuple = ((3, 1), (3, 2), (3, 3), (3, 4), ("max", 3), "1x1")


class UnitTCN(nn.Module):
    """pyskl ``unit_tcn``: (k x 1) dilated temporal conv with stride, BN (or none), dropout."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, stride: int = 1,
                 dilation: int = 1, norm: bool = True, dropout: float = 0.0):
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1), dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.pointwise_stride = stride if kernel_size == 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise_stride:
            y = pointwise(x, self.conv.weight, self.conv.bias, self.pointwise_stride)
        else:
            y = self.conv(x)
        return self.drop(self.bn(y))


class MSTCN(nn.Module):
    """pyskl ``mstcn``: six branches over the frames of the V joints plus their mean ("global" joint);
    each joint's output adds ``add_coeff[v]`` times the global joint's, then BN-ReLU-1x1 and BN.

    ``add_coeff`` has ``max(25, V)`` entries: the official code fixes 25 and uses the first V.
    """

    def __init__(self, in_channels: int, out_channels: int, num_joints: int = 25, stride: int = 1,
                 ms_cfg: Sequence = MS_CFG, dropout: float = 0.0):
        super().__init__()
        nb = len(ms_cfg)
        self.stride = stride
        self.add_coeff = nn.Parameter(torch.zeros(max(25, num_joints)))
        mid = out_channels // nb
        rem = out_channels - mid * (nb - 1)
        branches = []
        for i, cfg in enumerate(ms_cfg):
            bc = rem if i == 0 else mid
            if cfg == "1x1":
                branches.append(nn.Conv2d(in_channels, bc, kernel_size=1, stride=(stride, 1)))
            elif cfg[0] == "max":
                branches.append(nn.Sequential(nn.Conv2d(in_channels, bc, kernel_size=1), nn.BatchNorm2d(bc), nn.ReLU(),
                                              nn.MaxPool2d(kernel_size=(cfg[1], 1), stride=(stride, 1),
                                                           padding=(1, 0))))
            else:
                branches.append(nn.Sequential(nn.Conv2d(in_channels, bc, kernel_size=1), nn.BatchNorm2d(bc), nn.ReLU(),
                                              UnitTCN(bc, bc, kernel_size=cfg[0], stride=stride, dilation=cfg[1],
                                                      norm=False)))
        self.branches = nn.ModuleList(branches)
        self.split_sizes = [rem] + [mid] * (nb - 1)
        tin = mid * (nb - 1) + rem
        self.transform = nn.Sequential(nn.BatchNorm2d(tin), nn.ReLU(), nn.Conv2d(tin, out_channels, kernel_size=1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.shape[-1]
        x = torch.cat([x, x.mean(-1, keepdim=True)], -1)
        opening = [b if isinstance(b, nn.Conv2d) else b[0] for b in self.branches]
        h = pointwise(x, *cat_conv(opening)).split(self.split_sizes, dim=1)
        outs = []
        for b, hb in zip(self.branches, h):
            if isinstance(b, nn.Conv2d):  # the strided 1x1 branch
                outs.append(hb[:, :, ::self.stride] if self.stride > 1 else hb)
                continue
            for mod in list(b)[1:]:
                hb = mod(hb)
            outs.append(hb)
        out = torch.cat(outs, dim=1)
        feat = out[..., :v] + out[..., v:] * self.add_coeff[:v]
        bn, relu, conv = self.transform
        feat = pointwise(relu(bn(feat)), conv.weight, conv.bias)
        return self.drop(self.bn(feat))


class UnitGCN(nn.Module):
    """``unit_gcn``: per subset k, ``A_k + alpha_0 tanh(x1_u - x2_v) + beta_0 softmax_u(<x1_u, x2_v>)``
    (x1, x2: time-averaged 1x1 convs, per mid-channel), applied to ``pre(x)``; then ``post``, BN,
    residual ``down`` and ReLU. ``forward`` also returns the motion-enhanced part of the topology
    (the two learned terms, ``(N, K * C_mid, V, V)``) when ``with_graph`` is set, else None.
    """

    def __init__(self, in_channels: int, out_channels: int, a: torch.Tensor, ratio: float = 0.125):
        super().__init__()
        k = a.shape[0]
        self.num_subsets = k
        self.mid_channels = mid = int(ratio * out_channels)
        self.A = nn.Parameter(a.clone())
        self.pre = nn.Sequential(nn.Conv2d(in_channels, mid * k, 1), nn.BatchNorm2d(mid * k), nn.ReLU())
        self.post = nn.Conv2d(mid * k, out_channels, 1)
        self.alpha = nn.Parameter(torch.zeros(k))
        self.beta = nn.Parameter(torch.zeros(k))
        self.conv1 = nn.Conv2d(in_channels, mid * k, 1)
        self.conv2 = nn.Conv2d(in_channels, mid * k, 1)
        self.down = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
                     if in_channels != out_channels else None)
        self.bn = nn.BatchNorm2d(out_channels)

    def topology(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(learned part ``(N, K, C_mid, V, V)``, full topology ``A + learned``) for the input ``x``."""
        n, _, _, v = x.shape
        k, c = self.num_subsets, self.mid_channels
        q = pointwise(x.mean(2, keepdim=True), *cat_conv([self.conv1, self.conv2])).view(n, 2, k, c, v)
        x1, x2 = q[:, 0], q[:, 1]
        inter = torch.tanh(x1.unsqueeze(-1) - x2.unsqueeze(-2)) * self.alpha[0]
        intra = torch.softmax(torch.einsum("nkcv,nkcw->nkvw", x1, x2), dim=-2).unsqueeze(2) * self.beta[0]
        learned = inter + intra
        return learned, learned + self.A[None, :, None]

    def forward(self, x: torch.Tensor, with_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, _, t, v = x.shape
        kc = self.num_subsets * self.mid_channels
        h = pointwise(x, *cat_conv([self.pre[0]] + ([] if self.down is None else [self.down[0]])))
        res = x if self.down is None else self.down[1](h[:, kc:])
        pre = self.pre[2](self.pre[1](h[:, :kc])).view(n, self.num_subsets, self.mid_channels, t, v)
        learned, a = self.topology(x)
        y = torch.einsum("nkctv,nkcvw->nkctw", pre, a).reshape(n, -1, t, v)
        y = F.relu(self.bn(pointwise(y, self.post.weight, self.post.bias)) + res)
        return y, (learned.reshape(n, -1, v, v) if with_graph else None)


class GCNBlock(nn.Module):
    """``GCN_Block``: ``ReLU(tcn(gcn(x)) + residual(x))``; the residual is none, the identity or a
    strided 1x1 ``unit_tcn``."""

    def __init__(self, in_channels: int, out_channels: int, a: torch.Tensor, stride: int = 1,
                 residual: bool = True, num_joints: int = 25, ms_cfg: Sequence = MS_CFG):
        super().__init__()
        self.gcn = UnitGCN(in_channels, out_channels, a)
        self.tcn = MSTCN(out_channels, out_channels, num_joints=num_joints, stride=stride, ms_cfg=ms_cfg)
        self.res_mode = "none" if not residual else ("id" if in_channels == out_channels and stride == 1 else "conv")
        if self.res_mode == "conv":
            self.residual = UnitTCN(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor, with_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, graph = self.gcn(x, with_graph)
        y = self.tcn(y)
        if self.res_mode == "id":
            y = y + x
        elif self.res_mode == "conv":
            y = y + self.residual(x)
        return F.relu(y), graph


class PrototypeReconstruction(nn.Module):
    """``Prototype_Reconstruction_Network``: softmax attention over ``n_prototype`` memory rows, dropout."""

    def __init__(self, dim: int, n_prototype: int = 100, dropout: float = 0.1):
        super().__init__()
        self.query_matrix = nn.Linear(dim, n_prototype, bias=False)
        self.memory_matrix = nn.Linear(n_prototype, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.memory_matrix(torch.softmax(self.query_matrix(x), dim=-1)))


class ClassSpecificContrastiveLoss(nn.Module):
    """``Class_Specific_Contrastive_Loss``: the reconstructed relation map ``(N, V*V)`` is projected by
    ``cl_fc`` to 256-d and contrasted (temperature 0.125) with a per-class memory, which each step
    moves (momentum 0.9) towards the mean projection of the batch's correctly classified samples.

    The memory ``avg_f`` (256, classes) is a plain attribute, drawn ``randn`` at construction as
    officially (it is not in the state dict there either, so a checkpoint does not carry it).
    """

    def __init__(self, n_class: int, n_channel: int = 625, h_channel: int = 256, tmp: float = 0.125,
                 mom: float = 0.9, pred_threshold: float = 0.0):
        super().__init__()
        self.n_class, self.tmp, self.mom, self.pred_threshold = int(n_class), float(tmp), float(mom), pred_threshold
        self.avg_f = torch.randn(h_channel, self.n_class)
        self.cl_fc = nn.Linear(n_channel, h_channel)

    def forward(self, feature: torch.Tensor, label: torch.Tensor, logit: torch.Tensor,
                update: bool = True) -> torch.Tensor:
        """Mean cross-entropy of the memory similarities; ``update`` moves the memory (training)."""
        f = self.cl_fc(feature)
        label = label.long()
        logit = logit.detach()
        lbl_one = F.one_hot(label, self.n_class).to(f.dtype)
        pred_one = F.one_hot(logit.argmax(1), self.n_class).to(f.dtype)
        mask = lbl_one * pred_one * (torch.softmax(logit, 1) > self.pred_threshold).to(f.dtype)
        avg = self.avg_f.to(device=f.device, dtype=f.dtype)
        mask_sum = mask.sum(0, keepdim=True)
        f_mask = (f.t() @ mask) / (mask_sum + 1e-12)
        keep = torch.where(mask_sum > 1e-8, torch.full_like(mask_sum, self.mom), torch.ones_like(mask_sum))
        f_mem = avg * keep + (1 - keep) * f_mask
        if update:
            self.avg_f = f_mem.detach()
        fn = f / (f.norm(p=2, dim=1, keepdim=True) + 1e-12)
        mem = f_mem.t()
        mem = mem / (mem.norm(p=2, dim=-1, keepdim=True) + 1e-12)
        score = (fn @ mem.t()) / self.tmp  # (N, classes)
        return F.cross_entropy(score, label)
