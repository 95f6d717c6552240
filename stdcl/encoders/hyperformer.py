"""Hyperformer (Zhou et al., 2022): hypergraph transformer over joints + multi-scale temporal conv.

State-dict compatible with the official ``ZhouYuxuanYX/Hyperformer`` ``model.Hyperformer.Model``:
official checkpoints load with ``from_official("hyperformer", sd, num_classes, layout, ...)``
without any key conversion. Layer order, widths, strides and initialisation follow the
official code; the forward pass is re-derived for speed (see :mod:`hyperformer_blocks`).

Input ``(N, C, T, V, M)`` -> data BatchNorm over (M, V, C) -> 10 blocks of ``24 * num_heads``
channels (stride 2 at blocks 5 and 8) -> feature map ``(N, M, C', ceil(ceil(T/2)/2), V)`` ->
mean over (T', V), then persons -> optional dropout -> ``fc``.

Options: ``num_heads`` (9), ``drop_out`` (0, the official default), ``graph`` ("official": the
official Hyperformer NTU graph for ``ntu25``, whose hand tip and thumb hang off the hand; a
custom layout's own edges otherwise; "layout": always the layout's edges — for ``ntu25`` this
gives 13 hop buckets instead of 12, so official checkpoints then do not fit), ``groups`` (joint
group ids overriding ``layout.groups``, e.g. :data:`UCLA_BONE_GROUPS` for the official NW-UCLA
bone streams).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder, Features
from stdcl.encoders.hyperformer_blocks import (UCLA_BONE_GROUPS, HyperBlock, group_ids, hyperformer_edges,
                                               hyperformer_hops, temporal_length)
from stdcl.encoders.registry import register_encoder
from stdcl.errors import ConfigError

__all__ = ["Hyperformer", "UCLA_BONE_GROUPS", "hyperformer_edges", "hyperformer_hops"]

STRIDES = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)
HEAD_WIDTH = 24
RELATION_KINDS = ("effective", "attention")
OPTIONS = ("num_heads", "drop_out", "graph", "groups")


@register_encoder("hyperformer", title="Hyperformer (Zhou et al., 2022)", source="ZhouYuxuanYX/Hyperformer",
                  cpu_cost=0.41)
class Hyperformer(Encoder):
    """Hyperformer encoder with the official parameter names (``data_bn``, ``l1`` .. ``l10``, ``fc``)."""

    name = "hyperformer"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int = 3, num_person: int = 2,
                 window: int = 64, **options: Any):
        super().__init__(num_classes, layout, in_channels, num_person, window)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"hyperformer: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        num_heads = int(options.get("num_heads", 9))
        drop_out = float(options.get("drop_out", 0.0))
        graph = str(options.get("graph", "official"))
        groups = options.get("groups")
        if groups is not None:
            groups = [int(g) for g in groups]
        #: constructor options, saved with checkpoints (build_encoder replaces them by the options it was given)
        self.options: dict[str, Any] = {"num_heads": num_heads, "drop_out": drop_out, "graph": graph}
        if groups is not None:
            self.options["groups"] = groups
        if self.num_classes < 1 or self.in_channels < 1 or self.num_person < 1 or self.window < 1:
            raise ConfigError(f"hyperformer: num_classes, in_channels, num_person and window must be >= 1, got "
                              f"{num_classes}, {in_channels}, {num_person}, {window}")
        if num_heads < 1:
            raise ConfigError(f"hyperformer: num_heads must be >= 1, got {num_heads}")
        v = layout.num_joints
        self.num_heads = int(num_heads)
        self.dim = HEAD_WIDTH * self.num_heads
        self.graph_mode = graph
        hops = hyperformer_hops(layout, graph)
        gids = group_ids(layout, groups)
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * v)
        chans = [self.in_channels] + [self.dim] * len(STRIDES)
        for i, s in enumerate(STRIDES):
            self.add_module(f"l{i + 1}", HyperBlock(chans[i], chans[i + 1], self.num_heads, hops, gids, stride=s))
        self.fc = nn.Linear(self.dim, self.num_classes)
        nn.init.normal_(self.fc.weight, 0.0, math.sqrt(2.0 / self.num_classes))
        nn.init.ones_(self.data_bn.weight)
        nn.init.zeros_(self.data_bn.bias)
        self.drop_out = nn.Dropout(drop_out) if drop_out else nn.Identity()
        self.register_buffer("joint_groups", torch.as_tensor(gids), persistent=False)
        self.register_buffer("hop_matrix", torch.as_tensor(hops), persistent=False)

    @property
    def blocks(self) -> list[HyperBlock]:
        return [getattr(self, f"l{i + 1}") for i in range(len(STRIDES))]

    def features(self, x: torch.Tensor) -> Features:
        self.check_input(x)
        n, c, t, v, m = x.shape
        x = self.data_bn(x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t))
        # (N, M, V, C, T) -> (N*M, C, T, V) stored channels-last, the layout every block works in
        x = x.view(n, m, v, c, t).permute(0, 1, 4, 2, 3).reshape(n * m, t, v, c).permute(0, 3, 1, 2)
        for block in self.blocks:
            x = block(x)
        return Features(map=x.reshape(n, m, *x.shape[1:]).contiguous())

    def pre_logits(self, features: Features) -> torch.Tensor:
        """Official head up to ``fc``: mean over T' and V, then over persons, dropout."""
        f = features.map
        pooled = f.reshape(f.shape[0], f.shape[1], f.shape[2], -1).mean(3).mean(1)
        return self.drop_out(pooled)

    def feature_shape(self, window: int | None = None) -> tuple[int, int, int]:
        t = self.window if window is None else int(window)
        if t < 1:
            raise ConfigError(f"hyperformer: window must be >= 1, got {t}")
        return self.dim, temporal_length(t, STRIDES), self.layout.num_joints

    @torch.no_grad()
    def joint_relations(self, x: torch.Tensor, kind: str = "effective") -> list[torch.Tensor]:
        """Per-block (V, V) joint mixing maps, row = query joint, column = joint attended to.

        ``kind="effective"`` (default): the matrix each block actually applies to the values,
        ``alpha * softmax(logits) + outer``; ``kind="attention"``: the softmax part alone (rows sum
        to 1). Both are averaged over heads, frames and all samples and persons of ``x``. Runs in
        eval mode (BatchNorm running statistics are not touched) and restores the mode after.
        """
        if kind not in RELATION_KINDS:
            raise ConfigError(f"hyperformer: joint_relations kind must be one of {RELATION_KINDS}, got {kind!r}")
        was_training = self.training
        units = [b.vit1 for b in self.blocks]
        records: list[list[torch.Tensor]] = [[] for _ in units]
        self.eval()
        try:
            for u, rec in zip(units, records):
                u.record, u.record_kind = rec, kind
            self.features(x)
        finally:
            for u in units:
                u.record = None
            self.train(was_training)
        return [rec[0] for rec in records]
