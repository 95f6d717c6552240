"""Building blocks of BlockGCN (Zhou et al., CVPR 2024), state-dict compatible with the official code.

Names, shapes, construction order and initialisation mirror ``ZhouYuxuanYX/BlockGCN``
(``model/BlockGCN.py``); what differs is only how the same sums are computed:

* :class:`BlockGC` (official ``unit_gcn``): each head mixes joints with its normalised ``fc1``
  matrix plus the normalised hop embedding ``rpe[hops]``, then the grouped 1x1 ``fc2`` projects;
  the grouped convolutions run as one batched matmul per subset;
* :func:`topology_features` + :class:`StructureElements` (official ``Topo``): the 0-dimensional
  persistent homology of the Vietoris--Rips filtration, which the official code computes with
  ``torch_topological`` / ``giotto-ph``, is the set of minimum-spanning-tree edge lengths; here
  Prim's algorithm (numpy, no gradient) picks the edges and the lengths are read from the
  distance tensor, as the official code reads its pairing, so gradients flow the same way.
  Zero-length bars are dropped and each missing bar contributes ``exp(0) = 1``, as the official
  NaN padding + ``nansum`` does. The official float32 cast of the diagram is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stdcl.encoders.ctrgcn import MultiScaleTemporalConv
from stdcl.encoders.gcn_blocks import GraphUnit, ResidualBlock, conv_init, bn_init

#: number of structure elements (official ``StructureElementLayer(n_elements=64)``)
NUM_ELEMENTS = 64


def mst_edges(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-spanning-tree edges of each (V, V) distance matrix of ``dist`` (N, V, V), by Prim's
    algorithm vectorised over the batch: two (N, V-1) index arrays (one end, other end)."""
    n, v = dist.shape[:2]
    rows = np.arange(n)
    in_tree = np.zeros((n, v), dtype=bool)
    in_tree[:, 0] = True
    best = dist[:, 0, :].copy()
    parent = np.zeros((n, v), dtype=np.int64)
    src, dst = np.zeros((n, max(v - 1, 0)), np.int64), np.zeros((n, max(v - 1, 0)), np.int64)
    for k in range(v - 1):
        j = np.argmin(np.where(in_tree, np.inf, best), axis=1)
        src[:, k], dst[:, k] = parent[rows, j], j
        in_tree[rows, j] = True
        dj = dist[rows, j, :]
        closer = dj < best
        best = np.where(closer, dj, best)
        parent = np.where(closer, j[:, None], parent)
    return src, dst


def topology_distances(x: torch.Tensor) -> torch.Tensor:
    """(N, V, V) Vietoris--Rips distances of official ``Topo`` for input ``x`` (N, C, T, V, M).

    Joint distance matrix of the person- and time-averaged skeleton, min-max normalised over the
    whole batch (as the official code does), whose rows are the points of the filtration. A batch
    whose joints all coincide (the official code gives NaN there) gives zero distances.
    """
    a = x.mean(-1)
    d = (a.unsqueeze(-1) - a.unsqueeze(-2)).mean(-3)
    d = torch.linalg.vector_norm(d, 2, dim=1)
    lo, hi = torch.min(d), torch.max(d)
    d = (d - lo) / (hi - lo) if bool(hi > lo) else torch.zeros_like(d)
    return torch.cdist(d, d, p=2)


def persistence_deaths(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite 0-dimensional death times (N, V-1) of each sample and a mask of the bars that giotto-ph
    reports (positive length); births are all 0."""
    src, dst = mst_edges(dist.detach().cpu().double().numpy())
    rows = torch.arange(dist.shape[0]).unsqueeze(1)
    deaths = dist[rows, torch.from_numpy(src), torch.from_numpy(dst)]
    return deaths, deaths.detach().float() > 0


class StructureElements(nn.Module):
    """``torch_topological``'s ``StructureElementLayer``: ``centres`` and ``sharpness`` (64, 2); element
    k of a diagram is ``sum_bars exp(-sum_j sharpness_kj^2 (centre_kj - bar_j)^2)``."""

    def __init__(self, n_elements: int = NUM_ELEMENTS):
        super().__init__()
        self.n_elements = n_elements
        self.centres = nn.Parameter(torch.rand(n_elements, 2))
        self.sharpness = nn.Parameter(torch.ones(n_elements, 2) * 3)

    def forward(self, deaths: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(N, n_elements) from death times (N, B) with ``valid`` mask; births are 0. The diagram is cast
        to float32 first and every bar the batch's longest diagram has beyond a sample's own counts 1
        (the official NaN padding)."""
        d = deaths.float().to(self.centres.dtype)
        s2 = self.sharpness.pow(2)
        c = self.centres
        e = s2[:, 0].mul(c[:, 0].pow(2)).view(1, -1, 1) + (c[:, 1].view(1, -1, 1) - d.unsqueeze(1)).pow(2) \
            * s2[:, 1].view(1, -1, 1)
        terms = torch.where(valid.unsqueeze(1), torch.exp(-e), torch.zeros((), dtype=e.dtype))
        counts = valid.sum(1)
        pad = (counts.max() - counts).to(e.dtype) if counts.numel() else counts.to(e.dtype)
        return terms.sum(-1) + pad.unsqueeze(1)


class Topology(nn.Module):
    """Official ``Topo``: persistence features (N, 64) of the input's joint distance matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.pl = StructureElements()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deaths, valid = persistence_deaths(topology_distances(x))
        return self.pl(deaths, valid)


class TopoTrans(nn.Module):
    """Official ``TopoTrans``: Linear(64, C) -> BatchNorm1d -> ReLU, one row per (sample, person) row
    of the backbone (see :meth:`forward`), as (N*M, C, 1, 1)."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.mlp = nn.Linear(NUM_ELEMENTS, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, a: torch.Tensor, num_person: int, pairing: str) -> torch.Tensor:
        """``pairing="official"`` tiles the (N, 64) features ``num_person`` times (the official
        ``x.repeat(2, 1)``, so backbone row ``r`` gets sample ``r mod N``'s features; for one person this
        is the official NW-UCLA line ``x = x``); ``"sample"`` gives each person its own sample's."""
        a = a.repeat(num_person, 1) if pairing == "official" else a.repeat_interleave(num_person, 0)
        return torch.relu(self.bn(self.mlp(a))).unsqueeze(2).unsqueeze(3)


class BlockGC(GraphUnit):
    """Official ``unit_gcn``: per subset ``i``, heads mix joints with ``fc1[i] / ||fc1[i]|| +
    rpe_i[hops] / ||rpe_i[hops]||`` (column norms + 1e-4), the grouped 1x1 ``fc2[i]`` projects;
    summed over subsets, BN, residual (``down``), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, hops: np.ndarray, num_subset: int = 3):
        super().__init__()
        v = hops.shape[0]
        self.num_heads = 8 if in_channels > 8 else 1
        self.fc1 = nn.Parameter(torch.stack([torch.stack([torch.eye(v) for _ in range(self.num_heads)])
                                             for _ in range(num_subset)]))
        self.fc2 = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1, groups=self.num_heads)
                                 for _ in range(num_subset))
        self._init_output(in_channels, out_channels)  # down, bn; Kaiming convs, BN 1, bn 1e-6
        self.register_buffer("hops", torch.as_tensor(hops, dtype=torch.long), persistent=False)
        self.rpe = nn.Parameter(torch.zeros(num_subset, self.num_heads, int(hops.max()) + 1))
        for _ in range(2):  # the official constructor runs its init loop twice more (bn's weight ends at 1)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    conv_init(m)
                elif isinstance(m, nn.BatchNorm2d):
                    bn_init(m, 1)

    @staticmethod
    def _normed(w: torch.Tensor) -> torch.Tensor:
        return w / (torch.linalg.vector_norm(w, 2, dim=-2, keepdim=True) + 1e-4)

    def mixing(self) -> torch.Tensor:
        """(K, H, V, V) joint-mixing matrices ``W[v, w]`` (joint v feeds joint w)."""
        return self._normed(self.fc1) + self._normed(self.rpe[:, :, self.hops])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        h = self.num_heads
        w1 = self.mixing()
        xh = x.reshape(n, h, (c // h) * t, v)
        y = None
        for i, conv in enumerate(self.fc2):
            z = torch.matmul(xh, w1[i]).view(n, h, c // h, t * v)  # einsum nhctv,hvw->nhctw
            w = conv.weight.view(h, -1, c // h)
            out = torch.matmul(w, z) + conv.bias.view(1, h, -1, 1)  # grouped 1x1 conv
            y = out if y is None else y + out
        return self._output(y.view(n, -1, t, v), x)


class BlockGCNBlock(ResidualBlock):
    """Official ``TCN_GCN_unit``: ReLU(tcn1(gcn1(x)) + residual(x)), multi-scale ``tcn1`` (kernel 5,
    dilations 1 and 2)."""

    def __init__(self, in_channels: int, out_channels: int, hops: np.ndarray, stride: int = 1):
        super().__init__()
        self.gcn1 = BlockGC(in_channels, out_channels, hops)
        self.tcn1 = MultiScaleTemporalConv(out_channels, out_channels, kernel_size=5, stride=stride,
                                           dilations=(1, 2))
        self._init_residual(in_channels, out_channels, stride, residual=True)
