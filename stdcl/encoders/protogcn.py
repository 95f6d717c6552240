"""ProtoGCN (Liu et al., CVPR 2025), parameter-compatible with firework8/ProtoGCN's ``RecognizerGCN``.

The encoder holds the official recognizer's two parts under their official names, so its state
dicts (``backbone.*``, ``cls_head.*``; with or without ``module.``) load with
``from_official("protogcn", sd, ...)`` without any key conversion:

- ``backbone`` (``ProtoGCN``): data BatchNorm over (V, C) shared by the persons, ten
  :class:`GCNBlock` (96 channels, x2 at blocks 5 and 8 with stride 2), then, from the last
  block's motion-enhanced topology averaged over persons, the prototype reconstruction
  (``prn``), a 1x1 conv ``post``, BN, ReLU and the mean over channels: the reconstructed
  relation map ``(N, V*V)``, ``features(x).extra``;
- ``cls_head`` (``SimpleHead``): mean over (T', V), then persons, dropout, ``fc_cls``; and the
  prototype loss ``csc_loss`` (``Class_Specific_Contrastive_Loss``, holding ``cl_fc``).

The graph is the official ``mode='random'`` one: ``num_filter=8`` subsets of a ``V x V`` matrix
``N(0.04, 0.02^2)`` drawn from NumPy's global generator as the official ``Graph`` does (seed
both ``np.random`` and ``torch`` to reproduce the official initialisation); it depends only on
the layout's joint count, so any layout works. NTU (25 joints) and 20-joint layouts
(NW-UCLA; the official ``coco_new`` head setting) run as officially; above 25 joints
``add_coeff`` grows to V entries (the official code fixes 25).

Input ``(N, C, T, V, M)`` (pyskl's is ``(N, M, T, V, C)``); ``classify`` gives the head's logits
on one clip (pyskl's test mode averages the softmax over clips; for one clip that is
``softmax(classify(...))``).

Training loss (official ``BaseHead.loss``): ``CE + proto_loss_weight * L_csc`` with
``proto_loss_weight`` 0.2 as in every official config; :meth:`ProtoGCN.auxiliary_loss` returns
the second term for the training engine to add to its cross-entropy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from stdcl.data.layouts import Layout
from stdcl.encoders.base import Encoder, Features, present_person_weights
from stdcl.encoders.gcn_blocks import pointwise
from stdcl.encoders.protogcn_blocks import ClassSpecificContrastiveLoss, GCNBlock, PrototypeReconstruction
from stdcl.encoders.registry import register_encoder
from stdcl.errors import ConfigError

__all__ = ["ProtoGCN", "ProtoGCNBackbone", "ProtoGCNHead", "random_graph"]

OPTIONS = ("num_prototype", "drop_out", "proto_loss_weight")
BASE_CHANNELS = 96
NUM_STAGES = 10
INFLATE_STAGES = DOWN_STAGES = (5, 8)
NUM_FILTER, INIT_STD, INIT_OFF = 8, 0.02, 0.04
#: the official default of ``Prototype_Reconstruction_Network``'s width (``dim = 384``, hard-coded)
PRN_DIM = 384


def random_graph(num_joints: int, num_filter: int = NUM_FILTER, init_std: float = INIT_STD,
                 init_off: float = INIT_OFF) -> torch.Tensor:
    """The official ``Graph(mode='random')``: ``randn(K, V, V) * std + off`` from NumPy's global generator."""
    return torch.tensor(np.random.randn(num_filter, num_joints, num_joints) * init_std + init_off,
                        dtype=torch.float32)


class ProtoGCNBackbone(nn.Module):
    """The official ``ProtoGCN`` backbone (``data_bn_type='VC'``): ``forward`` returns
    (map ``(N, M, C', T', V')``, reconstructed relation map ``(N, V*V)``)."""

    def __init__(self, num_joints: int, in_channels: int = 3, num_prototype: int = 400):
        super().__init__()
        a = random_graph(num_joints)
        self.data_bn = nn.BatchNorm1d(in_channels * num_joints)
        blocks: list[nn.Module] = []
        if in_channels != BASE_CHANNELS:
            blocks.append(GCNBlock(in_channels, BASE_CHANNELS, a.clone(), 1, residual=False, num_joints=num_joints))
        c, inflate = BASE_CHANNELS, 0
        for i in range(2, NUM_STAGES + 1):
            inflate += i in INFLATE_STAGES
            out = int(BASE_CHANNELS * 2 ** inflate + 1e-4)
            blocks.append(GCNBlock(c, out, a.clone(), 1 + (i in DOWN_STAGES), num_joints=num_joints))
            c = out
        self.gcn = nn.ModuleList(blocks)
        self.out_channels = c
        self.post = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)
        self.prn = PrototypeReconstruction(PRN_DIM, num_prototype)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> data BatchNorm -> (N*M, C, T, V), n-major."""
        n, c, t, v, m = x.shape
        x = self.data_bn(x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t))
        return x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, _, v, m = x.shape
        x = self.embed(x)
        graph = None
        last = len(self.gcn) - 1
        for i, block in enumerate(self.gcn):
            x, graph = block(x, with_graph=i == last)
        x = x.reshape(n, m, *x.shape[1:])
        cg = x.shape[2]
        graph = graph.view(n, m, cg, v * v).mean(1)  # (N, C, V*V), persons averaged
        re = self.prn(graph.transpose(1, 2)).transpose(1, 2).reshape(n, cg, v, v)  # per sample, (V*V, C) rows
        re = torch.relu(self.bn(pointwise(re, self.post.weight, self.post.bias)))
        return x, re.mean(1).reshape(n, v * v)


class ProtoGCNHead(nn.Module):
    """The official ``SimpleHead`` (mode 'GCN') with its ``csc_loss``; parameters in the official order."""

    def __init__(self, num_classes: int, in_channels: int, num_joints: int, drop_out: float = 0.0):
        super().__init__()
        self.csc_loss = ClassSpecificContrastiveLoss(num_classes, num_joints * num_joints)
        self.dropout = nn.Dropout(drop_out) if drop_out else None
        self.fc_cls = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.fc_cls.weight, 0.0, 0.01)  # mmcv normal_init(std=0.01), run by init_weights
        nn.init.constant_(self.fc_cls.bias, 0.0)

    def pre_logits(self, f: torch.Tensor) -> torch.Tensor:
        x = f.reshape(f.shape[0], f.shape[1], f.shape[2], -1).mean(3).mean(1)
        return x if self.dropout is None else self.dropout(x)


#: cpu_cost: ``bench_train_step("protogcn", batch=16, window=32, num_classes=13, device="cpu")`` on one thread,
#: STD-CL step median 0.46 s/sample wall in the same process where CTR-GCN measured 0.23 (its table value);
#: CPU seconds (process_time) 0.37 vs CTR-GCN's 0.175 there, the same 2.1x. The prototype loss (through an
#: engine hook reusing the forward's features) adds well under 1 % (one 625 -> 256 linear layer per sample).
@register_encoder("protogcn", title="ProtoGCN (Liu et al., CVPR 2025)", source="firework8/ProtoGCN",
                  cpu_cost=0.46)
class ProtoGCN(Encoder):
    """ProtoGCN. Options: ``num_prototype`` (400, the official configs), ``drop_out`` (head dropout, 0),
    ``proto_loss_weight`` (0.2, the official ``cls_head.weight``; 0 switches the prototype loss off).

    ``features(x).map`` is ``(N, M, 384, ceil(ceil(T/2)/2), V)``; ``features(x).extra`` the
    reconstructed relation map ``(N, V*V)`` the prototype loss contrasts.
    """

    name = "protogcn"

    def __init__(self, num_classes: int, layout: Layout, in_channels: int = 3, num_person: int = 2,
                 window: int = 64, **options: Any):
        super().__init__(num_classes, layout, in_channels, num_person, window)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"protogcn: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        num_prototype = int(options.get("num_prototype", 400))
        drop_out = float(options.get("drop_out", 0.0))
        self.proto_loss_weight = float(options.get("proto_loss_weight", 0.2))
        if min(self.num_classes, self.in_channels, self.num_person, self.window, num_prototype) < 1:
            raise ConfigError(f"protogcn: num_classes, in_channels, num_person, window and num_prototype must be "
                              f">= 1, got {num_classes}, {in_channels}, {num_person}, {window}, {num_prototype}")
        if not 0.0 <= drop_out < 1.0 or not np.isfinite(self.proto_loss_weight) or self.proto_loss_weight < 0:
            raise ConfigError(f"protogcn: drop_out must be in [0, 1) and proto_loss_weight >= 0, got {drop_out}, "
                              f"{self.proto_loss_weight}")
        #: constructor options, saved with checkpoints (build_encoder replaces them by the options it was given)
        self.options = {"num_prototype": num_prototype, "drop_out": drop_out,
                        "proto_loss_weight": self.proto_loss_weight}
        v = layout.num_joints
        self.backbone = ProtoGCNBackbone(v, self.in_channels, num_prototype)
        self.cls_head = ProtoGCNHead(self.num_classes, self.backbone.out_channels, v, drop_out)

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer ``cls_head.fc_cls``."""
        return self.cls_head.fc_cls

    def features(self, x: torch.Tensor) -> Features:
        self.check_input(x)
        fmap, relation = self.backbone(x)
        return Features(map=fmap, extra=relation)

    def pre_logits(self, features: Features) -> torch.Tensor:
        """Official head up to ``fc_cls``: mean over T' and V, then over persons, dropout."""
        return self.cls_head.pre_logits(features.map)

    def classify(self, features: Features) -> torch.Tensor:
        return self.classifier(self.pre_logits(features))

    def feature_shape(self, window: int | None = None) -> tuple[int, int, int]:
        t = self.window if window is None else int(window)
        if t < 1:
            raise ConfigError(f"protogcn: window must be >= 1, got {t}")
        for _ in DOWN_STAGES:
            t = (t - 1) // 2 + 1
        return self.backbone.out_channels, t, self.layout.num_joints

    def joint_relations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block (V, V) maps ``R[u, v]`` = weight with which joint v feeds joint u: the topology
        ``A_k + alpha tanh(...) + beta softmax(...)`` each block applies, averaged over its subsets and
        channels, the batch's samples and the persons present (all-zero persons left out unless none is
        present). Eval mode, no gradients; the training flag is restored."""
        self.check_input(x)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                w = present_person_weights(x)  # (N*M,), n-major
                h = self.backbone.embed(x)
                out = []
                for block in self.backbone.gcn:
                    topo = block.gcn.topology(h)[1].mean(dim=(1, 2))  # (N*M, V_send, V_recv)
                    out.append(torch.einsum("n,nvu->uv", w.to(topo.dtype), topo))
                    h = block(h)[0]
        finally:
            self.train(was_training)
        return out

    def auxiliary_loss(self, features: Features, logits: torch.Tensor, labels: torch.Tensor,
                       update: bool | None = None) -> dict[str, torch.Tensor] | None:
        """The official training term beside the cross-entropy: ``{"loss": weight * L_csc, "proto": L_csc}``.

        ``L_csc`` is the class-specific contrastive loss of ``features.extra`` against the class
        memory (logits are detached, as officially). The memory moves when ``update`` (default:
        in training mode). None when ``proto_loss_weight`` is 0.
        """
        if self.proto_loss_weight == 0:
            return None
        if features.extra is None:
            raise ConfigError("protogcn: auxiliary_loss needs the features of ProtoGCN.features (extra is None)")
        upd = self.training if update is None else bool(update)
        raw = self.cls_head.csc_loss(features.extra, labels, logits, update=upd)
        return {"loss": raw * self.proto_loss_weight, "proto": raw.detach()}
