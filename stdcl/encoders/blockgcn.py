"""BlockGCN (Zhou et al., CVPR 2024), parameter-compatible with ZhouYuxuanYX/BlockGCN.

Official state dicts load without key conversion (``from_official("blockgcn", sd, ...)``); names,
shapes, construction order and initialisation follow ``model/BlockGCN.py``, so a seeded build draws
the official initial weights. See :mod:`stdcl.encoders.blockgcn_blocks` for how the forward pass is
computed.

Input ``(N, C, T, V, M)`` -> per-joint ``Linear(C, 128)`` + learned joint embedding -> data
BatchNorm over (M, V, 128) -> 10 BlockGC blocks (128 x 4, 256 with stride 2, 256 x 2, 256 with
stride 2, 256 x 2), each fed ``x + t_i(topology)`` where the topology vector is the persistent
homology of the batch's joint distances -> feature map ``(N, M, 256, ceil(ceil(T/2)/2), V)`` ->
mean over (T', V), then persons -> optional dropout -> ``fc``.

Official behaviours kept (they change results, so parity needs them):
- the topology features are min-max normalised over the whole batch, so a sample's logits
  depend on the other samples of its batch;
- ``pairing="official"`` (default): the (N, 64) features are tiled over persons, so with two
  persons backbone row ``r = n*M + m`` gets sample ``r mod N``'s features (official
  ``x.repeat(2, 1)``); ``pairing="sample"`` gives each person its own sample's features instead;
- the topology is computed from the encoder's input; the official training loop passes the raw
  joint coordinates for it (``joint``) next to the stream's input, which for the joint stream
  differs only in the centre joint (the official feeder re-centres the others on it).
For one person (NW-UCLA) the official code needs its commented "for ucla" line in ``TopoTrans``;
tiling over ``num_person`` gives exactly that.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder, Features
from stdcl.encoders.blockgcn_blocks import BlockGCNBlock, Topology, TopoTrans
from stdcl.encoders.gcn_blocks import bn_init, temporal_out
from stdcl.encoders.hyperformer_blocks import hyperformer_hops
from stdcl.encoders.registry import register_encoder
from stdcl.errors import ConfigError

#: (out channels, stride) of blocks l1 .. l10
BLOCKS: tuple[tuple[int, int], ...] = ((128, 1), (128, 1), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1),
                                       (256, 2), (256, 1), (256, 1))
EMBED = 128
OPTIONS = ("drop_out", "pairing")
PAIRINGS = ("official", "sample")


def blockgcn_hops(layout: Layout):
    """(V, V) hop distances BlockGCN's ``rpe`` is indexed by: on the official graph (for ``ntu25`` the
    hand tip and thumb hang off the hand, as in Hyperformer, by the same authors), else the layout's."""
    return hyperformer_hops(layout, "official")


@register_encoder("blockgcn", title="BlockGCN (Zhou et al., CVPR 2024)", source="ZhouYuxuanYX/BlockGCN",
                  cpu_cost=0.28)
class BlockGCN(Encoder):
    """BlockGCN. Options: ``drop_out`` (before fc, default 0), ``pairing`` ("official" or "sample").

    ``joint_relations(x)``: per block, the learned joint-mixing matrix (``fc1`` + hop embedding,
    both normalised) averaged over heads and subsets, as ``R[u, v]`` (receiver u, sender v); it
    does not depend on the input.
    """

    name = "blockgcn"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int = 3, num_person: int = 2,
                 window: int = 64, **options: Any):
        super().__init__(num_classes, layout, in_channels, num_person, window)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"blockgcn: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        if min(self.num_classes, self.in_channels, self.num_person, self.window) < 1:
            raise ConfigError(f"blockgcn: num_classes, in_channels, num_person and window must be >= 1, got "
                              f"{num_classes}, {in_channels}, {num_person}, {window}")
        drop_out = float(options.get("drop_out", 0.0))
        if not 0.0 <= drop_out < 1.0:
            raise ConfigError(f"blockgcn: drop_out must be in [0, 1), got {drop_out}")
        self.pairing = str(options.get("pairing", "official"))
        if self.pairing not in PAIRINGS:
            raise ConfigError(f"blockgcn: pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        v = layout.num_joints
        hops = blockgcn_hops(layout)
        # construction order of the official Model (each step draws its random numbers in turn)
        self.data_bn = nn.BatchNorm1d(num_person * EMBED * v)
        self.to_joint_embedding = nn.Linear(in_channels, EMBED)
        self.pos_embedding = nn.Parameter(torch.randn(1, v, EMBED))
        c_in = EMBED
        for i, (c_out, stride) in enumerate(BLOCKS, start=1):
            self.add_module(f"l{i}", BlockGCNBlock(c_in, c_out, hops, stride=stride))
            c_in = c_out
        for i in range(len(BLOCKS)):  # t_i feeds block l_{i+1}: its input width
            self.add_module(f"t{i}", TopoTrans(BLOCKS[i - 1][0] if i else EMBED))
        self.topo = Topology()
        self.fc = nn.Linear(c_in, num_classes)
        nn.init.normal_(self.fc.weight, 0, math.sqrt(2.0 / num_classes))
        bn_init(self.data_bn, 1)
        self.drop_out = nn.Dropout(drop_out) if drop_out else nn.Identity()

    @property
    def blocks(self) -> list[BlockGCNBlock]:
        return [getattr(self, f"l{i}") for i in range(1, len(BLOCKS) + 1)]

    @property
    def topo_trans(self) -> list[TopoTrans]:
        return [getattr(self, f"t{i}") for i in range(len(BLOCKS))]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> joint embedding + data BN over (M, V, 128) -> (N*M, 128, T, V)."""
        n, c, t, v, m = x.shape
        h = self.to_joint_embedding(x.permute(0, 4, 2, 3, 1)) + self.pos_embedding  # (N, M, T, V, 128)
        h = self.data_bn(h.permute(0, 1, 3, 4, 2).reshape(n, m * v * EMBED, t))
        return h.view(n, m, v, EMBED, t).permute(0, 1, 3, 4, 2).reshape(n * m, EMBED, t, v)

    def features(self, x: torch.Tensor) -> Features:
        """Last block's map, ``(N, M, 256, T', V)``; ``extra`` is the (N, 64) topology vector."""
        self.check_input(x)
        n, m = x.shape[0], x.shape[-1]
        a = self.topo(x)
        h = self._embed(x)
        for block, trans in zip(self.blocks, self.topo_trans):
            h = block(h + trans(a, m, self.pairing))
        return Features(map=h.view(n, m, *h.shape[1:]), extra=a)

    def pre_logits(self, features: Features) -> torch.Tensor:
        """Official head up to ``fc``: mean over T' and V, then over persons, dropout."""
        f = features.map
        return self.drop_out(f.reshape(f.shape[0], f.shape[1], f.shape[2], -1).mean(3).mean(1))

    def classify(self, features: Features) -> torch.Tensor:
        return self.fc(self.pre_logits(features))

    def feature_shape(self, window: int | None = None) -> tuple[int, int, int]:
        t = self.window if window is None else int(window)
        if t < 1:
            raise ConfigError(f"blockgcn: window must be >= 1, got {t}")
        for _, s in BLOCKS:
            t = temporal_out(t, s)
        return BLOCKS[-1][0], t, self.layout.num_joints

    @torch.no_grad()
    def joint_relations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block (V, V) maps ``R[u, v]``: the mixing weight with which joint v feeds joint u, averaged
        over heads and subsets (input-independent; ``x`` is only checked)."""
        self.check_input(x)
        return [b.gcn1.mixing().mean(dim=(0, 1)).transpose(0, 1).to(x.dtype) for b in self.blocks]
