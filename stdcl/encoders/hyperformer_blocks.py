"""Building blocks of Hyperformer (Zhou et al., 2022), state-dict compatible with the official code.

Module and parameter names mirror ``ZhouYuxuanYX/Hyperformer`` (``model/Hyperformer.py``) so that
its checkpoints load unchanged; the forward passes are re-derived for speed:

* activations stay in channels-last memory (``(B, C, T, V)`` tensors stored as ``(B, T, V, C)``),
  so the layer norm needs no permute and the 1x1 convolutions run as plain GEMMs;
* q, k and v come from one convolution with the softmax scale folded into the q weights;
* the hyperedge term ``q.e_m + w1.e_m`` is computed by adding the joint's group embedding to its
  key, and the relative term ``q_n . rpe[hop(n, m)]`` by one small matmul against the ``K`` hop
  embeddings followed by a gather (instead of materialising ``rpe[hops]`` of size V x V x C);
* the four 1x1 convolutions of the multi-scale temporal block run as one (two when strided) and,
  in eval mode, every BatchNorm that follows a convolution is folded into it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stdcl.data.graph import hop_distance
from stdcl.data.layouts import Layout
from stdcl.errors import ConfigError

#: Hand edges of the official Hyperformer NTU graph (0-based (child, parent)): hand tip and thumb
#: both hang off the hand joint. The ``ntu25`` layout (as 2s-AGCN / CTR-GCN) chains tip -> thumb -> hand.
HYPERFORMER_NTU_HAND_EDGES: tuple[tuple[int, int], ...] = ((21, 7), (22, 7), (23, 11), (24, 11))

#: Joint groups the official NW-UCLA *bone* and *bone-motion* configs use (joint/motion use the layout's).
UCLA_BONE_GROUPS: tuple[int, ...] = (0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 2, 2, 2, 0, 2, 2, 2)

GRAPH_MODES = ("official", "layout")


def hyperformer_edges(layout: Layout, graph: str = "official") -> tuple[tuple[int, int], ...]:
    """Skeleton edges Hyperformer's hop matrix is built from.

    ``graph="official"``: for the ``ntu25`` layout the official graph (hand tip and thumb attached
    to the hand, see :data:`HYPERFORMER_NTU_HAND_EDGES`), for every other layout its own edges.
    ``graph="layout"``: always the layout's edges.
    """
    if graph not in GRAPH_MODES:
        raise ConfigError(f"hyperformer: graph must be one of {GRAPH_MODES}, got {graph!r}")
    if graph == "official" and layout.name == "ntu25" and layout.num_joints == 25:
        hand_children = {c for c, _ in HYPERFORMER_NTU_HAND_EDGES}
        return tuple(e for e in layout.edges if e[0] not in hand_children) + HYPERFORMER_NTU_HAND_EDGES
    return tuple(layout.edges)


def hyperformer_hops(layout: Layout, graph: str = "official") -> np.ndarray:
    """(V, V) int64 hop distances on the undirected Hyperformer graph of ``layout``.

    Equal to the official ``MHSA.hops`` for NTU and NW-UCLA. Joints that cannot reach each other
    (only possible in custom layouts) get their own bucket ``max_hop + 1``; the official code
    would put them in bucket 0, together with the joint itself.
    """
    edges = hyperformer_edges(layout, graph)
    dist = hop_distance(dataclasses.replace(layout, edges=edges, bone_pairs=layout.bone_pairs))
    finite = np.isfinite(dist)
    top = int(dist[finite].max()) if finite.any() else 0
    return np.where(finite, dist, top + 1).astype(np.int64)


def group_ids(layout: Layout, groups: Sequence[int] | None = None) -> np.ndarray:
    """Compact (0..G-1) body-part group id per joint: ``groups`` if given, else ``layout.groups``."""
    raw = list(layout.groups if groups is None else groups)
    if len(raw) != layout.num_joints:
        raise ConfigError(f"hyperformer: {len(raw)} group ids for layout {layout.name!r} "
                          f"with V={layout.num_joints} joints")
    _, ids = np.unique(np.asarray(raw, dtype=np.int64), return_inverse=True)
    return ids.astype(np.int64)


def _bn_affine(bns: Sequence[nn.BatchNorm2d]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode (scale, shift) of a list of BatchNorms, concatenated over channels."""
    scale = torch.cat([b.weight * torch.rsqrt(b.running_var + b.eps) for b in bns])
    shift = torch.cat([b.bias for b in bns]) - torch.cat([b.running_mean for b in bns]) * scale
    return scale, shift


def _bn_train(x: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """Training-mode BatchNorm of ``x`` whose channels are the concatenation of ``bns``' channels.

    Batch statistics are per channel, so this equals applying each BN to its own slice; the
    running statistics are written back to the modules.
    """
    if len(bns) == 1:
        return bns[0](x)
    b0 = bns[0]
    rm = torch.cat([b.running_mean for b in bns])
    rv = torch.cat([b.running_var for b in bns])
    y = F.batch_norm(x, rm, rv, torch.cat([b.weight for b in bns]), torch.cat([b.bias for b in bns]),
                     True, 0.0 if b0.momentum is None else b0.momentum, b0.eps)
    with torch.no_grad():
        sizes = [b.num_features for b in bns]
        for b, m, v in zip(bns, rm.split(sizes), rv.split(sizes)):
            b.running_mean.copy_(m)
            b.running_var.copy_(v)
            b.num_batches_tracked.add_(1)
    return y


def _max_pool_t3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``max_pool2d(x, (3, 1), (stride, 1), (1, 0))``.

    Without autograd, two element-wise maxima of shifted views: several times faster than the
    pooling kernel on a channel slice of a channels-last tensor (and bit-identical). With
    autograd, the kernel, whose backward is the faster one.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, (3, 1), (stride, 1), (1, 0))
    t_out = (x.shape[2] - 1) // stride + 1
    span = (t_out - 1) * stride + 1
    p = F.pad(x, (0, 0, 1, 1), value=float("-inf"))
    return torch.maximum(torch.maximum(p[:, :, 0:span:stride], p[:, :, 1:span + 1:stride]),
                         p[:, :, 2:span + 2:stride])


class TemporalConv(nn.Module):
    """Temporal convolution (kernel k x 1, dilation, stride) + BatchNorm (official ``TemporalConv``)."""

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(channels, channels, (kernel_size, 1), padding=(pad, 0), stride=(stride, 1),
                              dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.training:
            return self.bn(c(x))
        scale, shift = _bn_affine([self.bn])
        w = c.weight * scale.view(-1, 1, 1, 1)
        b = c.bias * scale + shift
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation)


class MultiScaleTemporalConv(nn.Module):
    """Multi-scale temporal block: two dilated k x 1 branches, a max-pool branch and a 1x1 branch.

    ``branches.{0,1}``: 1x1 conv, BN, ReLU, :class:`TemporalConv` (dilations 1 and 2);
    ``branches.2``: 1x1 conv, BN, ReLU, max-pool 3 x 1, BN; ``branches.3``: strided 1x1 conv, BN.
    Outputs are concatenated (no inner residual, as the official Hyperformer configures it).
    """

    def __init__(self, channels: int, kernel_size: int = 5, stride: int = 1, dilations: Sequence[int] = (1, 2)):
        super().__init__()
        nb = len(dilations) + 2
        if channels % nb:
            raise ConfigError(f"hyperformer: {channels} channels do not split into {nb} temporal branches")
        bc = channels // nb
        self.stride = stride
        self.branch_channels = bc
        self.branches = nn.ModuleList()
        for d in dilations:
            self.branches.append(nn.Sequential(nn.Conv2d(channels, bc, 1), nn.BatchNorm2d(bc), nn.ReLU(inplace=True),
                                               TemporalConv(bc, kernel_size, stride, d)))
        self.branches.append(nn.Sequential(nn.Conv2d(channels, bc, 1), nn.BatchNorm2d(bc), nn.ReLU(inplace=True),
                                           nn.MaxPool2d((3, 1), (stride, 1), (1, 0)), nn.BatchNorm2d(bc)))
        self.branches.append(nn.Sequential(nn.Conv2d(channels, bc, 1, stride=(stride, 1)), nn.BatchNorm2d(bc)))
        self._init_weights()

    def _init_weights(self) -> None:
        # official ``weights_init``: convs Kaiming-normal (fan_out), zero bias; BN weight N(1, 0.02), zero bias
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.normal_(1.0, 0.02)
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        br, bc, s = self.branches, self.branch_channels, self.stride
        nd = len(br) - 2
        heads = [br[i][0] for i in range(nd + 1)]  # 1x1 convs followed by BN + ReLU
        last = br[-1][0]
        w = torch.cat([c.weight for c in heads])
        b = torch.cat([c.bias for c in heads])
        xs = x if s == 1 else x[:, :, ::s]
        if self.training:
            h = _bn_train(F.conv2d(x, w, b), [br[i][1] for i in range(nd + 1)])
            y_last = br[-1][1](F.conv2d(xs, last.weight, last.bias))
        else:
            scale, shift = _bn_affine([br[i][1] for i in range(nd + 1)])
            h = F.conv2d(x, w * scale.view(-1, 1, 1, 1), b * scale + shift)
            scale, shift = _bn_affine([br[-1][1]])
            y_last = F.conv2d(xs, last.weight * scale.view(-1, 1, 1, 1), last.bias * scale + shift)
        parts = torch.relu_(h).split(bc, dim=1)  # split, not slicing: its backward is one cat
        outs = [br[i][3](parts[i]) for i in range(nd)]
        outs.append(br[nd][4](_max_pool_t3(parts[nd], s)))
        outs.append(y_last)
        return torch.cat(outs, dim=1)


class UnitTCN(nn.Module):
    """k x 1 temporal conv + BN (official ``unit_tcn``; here the block's strided 1x1 residual)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0), stride=(stride, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.zeros_(self.conv.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.training:
            return self.bn(c(x))
        scale, shift = _bn_affine([self.bn])
        return F.conv2d(x, c.weight * scale.view(-1, 1, 1, 1), c.bias * scale + shift, c.stride, c.padding)


class HyperAttention(nn.Module):
    """Parameters of the joint self-attention (official ``MHSA``); :class:`HyperUnit` runs it.

    ``rpe`` (K, C): one embedding per hop distance; ``w1`` (H, C/H): per-head bias on the hyperedge
    embedding; ``outer`` (H, V, V): learned per-head joint mixing, initialised to the identity;
    ``alpha``: weight of the data-dependent attention (initialised to 0); ``q``, ``kv``: 1x1
    projections without bias; ``proj``: grouped (6 groups) 1x1 output projection.
    """

    def __init__(self, dim_in: int, dim: int, num_heads: int, hops: np.ndarray, groups: np.ndarray,
                 proj_groups: int = 6):
        super().__init__()
        if dim % num_heads or dim % proj_groups:
            raise ConfigError(f"hyperformer: width {dim} must be divisible by {num_heads} heads "
                              f"and {proj_groups} projection groups")
        v = hops.shape[0]
        self.num_heads = num_heads
        self.dim = dim
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.num_hops = int(hops.max()) + 1
        self.rpe = nn.Parameter(torch.zeros(self.num_hops, dim))
        self.w1 = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.outer = nn.Parameter(torch.eye(v).repeat(num_heads, 1, 1))
        self.alpha = nn.Parameter(torch.zeros(1))
        self.kv = nn.Conv2d(dim_in, dim * 2, 1, bias=False)
        self.q = nn.Conv2d(dim_in, dim, 1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, groups=proj_groups)
        hops_t = torch.as_tensor(hops, dtype=torch.long)
        self.register_buffer("hops", hops_t, persistent=False)
        # flat gather index: logits[n, m] += (q_n . rpe)[hop(n, m)] from a (V, K) table per head
        rel = torch.arange(v).view(v, 1) * self.num_hops + hops_t
        self.register_buffer("rel_index", rel.reshape(-1), persistent=False)
        self.register_buffer("groups", torch.as_tensor(groups, dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, dim={self.dim}, hops={self.num_hops}"


class HyperUnit(nn.Module):
    """Pre-norm joint self-attention with hyperedges and a residual (official ``unit_vit``)."""

    def __init__(self, dim_in: int, dim: int, num_heads: int, hops: np.ndarray, groups: np.ndarray):
        super().__init__()
        self.dim_in, self.dim = dim_in, dim
        self.norm1 = nn.LayerNorm(dim_in)
        self.attn = HyperAttention(dim_in, dim, num_heads, hops, groups)
        if dim_in != dim:
            self.skip_proj = nn.Conv2d(dim_in, dim, 1, bias=False)
        self.pe_proj = nn.Conv2d(dim_in, dim, 1, bias=False)
        g = int(groups.max()) + 1
        member = np.zeros((g, len(groups)), dtype=np.float32)
        member[groups, np.arange(len(groups))] = 1.0
        # one-hot membership and joint counts: exact in every dtype (1/3 is not)
        self.register_buffer("group_member", torch.from_numpy(member), persistent=False)  # (G, V)
        self.register_buffer("group_size", torch.from_numpy(member.sum(1)).view(g, 1), persistent=False)
        self.record: list[torch.Tensor] | None = None  # set by Hyperformer.joint_relations
        self.record_kind = "effective"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, V) -> (B, C, T, V), both in channels-last memory."""
        a = self.attn
        bsz, _, t, v = x.shape
        h, d, dim = a.num_heads, a.head_dim, a.dim
        xl = x.permute(0, 2, 3, 1)  # (B, T, V, C_in), contiguous for channels-last x
        # hyperedge embedding: mean of the raw input over each body part, projected
        z = torch.matmul(self.group_member.to(x.dtype), xl) / self.group_size  # (B, T, G, C_in)
        e = F.conv2d(z.permute(0, 3, 1, 2), self.pe_proj.weight).permute(0, 2, 3, 1)  # (B, T, G, C)
        e_joint = e.index_select(2, a.groups)  # (B, T, V, C)
        # bias of the hyperedge on each key joint: w1 . e_m (softmax scale folded in)
        w1e = (e.reshape(bsz, t, -1, h, d) * (a.w1 * a.scale)).sum(-1).index_select(2, a.groups)  # (B, T, V, H)

        ln = F.layer_norm(xl, (self.dim_in,), self.norm1.weight, self.norm1.bias, self.norm1.eps)
        w = torch.cat([a.q.weight * a.scale, a.kv.weight])
        qkv = F.conv2d(ln.permute(0, 3, 1, 2), w).permute(0, 2, 3, 1)  # (B, T, V, 3C)
        q, k, val = qkv.split(dim, dim=-1)
        k = k + e_joint

        def heads(y: torch.Tensor) -> torch.Tensor:  # (B, T, V, C) -> (H, B*T, V, d) contiguous
            return y.reshape(bsz, t, v, h, d).permute(3, 0, 1, 2, 4).contiguous().view(h, bsz * t, v, d)

        q, k, val = heads(q), heads(k), heads(val)
        # relative term q_n . rpe[hop(n, m)]: scores against the K hop embeddings, then gather
        rpe = a.rpe.view(a.num_hops, h, d).permute(1, 2, 0)  # (H, d, K)
        qr = torch.matmul(q.view(h, bsz * t * v, d), rpe).view(h * bsz * t, v * a.num_hops)
        bias = qr.index_select(1, a.rel_index).view(h * bsz * t, v, v)
        bias.add_(w1e.permute(3, 0, 1, 2).reshape(h * bsz * t, 1, v))  # in place: 3-D broadcast is fast
        logits = torch.baddbmm(bias, q.view(-1, v, d), k.view(-1, v, d).transpose(1, 2))
        attn = logits.softmax(dim=-1).view(h, bsz * t, v, v)
        mix = torch.addcmul(a.outer.unsqueeze(1), attn, a.alpha)  # alpha * attn + outer
        if self.record is not None:
            rel = mix if self.record_kind == "effective" else attn
            self.record.append(rel.detach().float().mean(dim=(0, 1)))
        y = torch.matmul(mix, val)  # (H, B*T, V, d)
        # back to channels-last (B, T, V, C) with channel = head * d + c, as the official reshape
        y = y.view(h, bsz, t, v, d).permute(1, 2, 3, 0, 4).reshape(bsz, t, v, dim).permute(0, 3, 1, 2)
        y = F.conv2d(y, a.proj.weight, a.proj.bias, groups=a.proj.groups)
        skip = F.conv2d(x, self.skip_proj.weight) if self.dim_in != self.dim else x
        return skip + y


class HyperBlock(nn.Module):
    """One Hyperformer layer: attention unit, multi-scale temporal conv, block residual, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_heads: int, hops: np.ndarray, groups: np.ndarray,
                 stride: int = 1, kernel_size: int = 5, dilations: Sequence[int] = (1, 2)):
        super().__init__()
        self.vit1 = HyperUnit(in_channels, out_channels, num_heads, hops, groups)
        self.tcn1 = MultiScaleTemporalConv(out_channels, kernel_size, stride, dilations)
        self.stride = stride
        if in_channels != out_channels or stride != 1:
            self.residual = UnitTCN(in_channels, out_channels, kernel_size=1, stride=stride)
        else:
            self.residual = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tcn1(self.vit1(x))
        res = x if self.residual is None else self.residual(x)
        return torch.relu_(y + res)


def temporal_length(window: int, strides: Sequence[int]) -> int:
    """Frames left after the strided blocks (each stride-s block maps T to ceil(T / s))."""
    t = int(window)
    for s in strides:
        t = math.ceil(t / s)
    return t
