"""Spatial adjacency of a layout, built exactly as the CTR-GCN / 2s-AGCN graph tools do."""

from __future__ import annotations

import numpy as np

from stdcl.data.layouts import Layout, get_layout


def edge_matrix(edges: list[tuple[int, int]], num_joints: int) -> np.ndarray:
    """Edge (i, j) sets ``A[j, i] = 1``."""
    a = np.zeros((num_joints, num_joints))
    for i, j in edges:
        a[j, i] = 1
    return a


def normalize_digraph(a: np.ndarray) -> np.ndarray:
    """``A @ D^-1`` with ``D`` the column sums (zero columns stay zero)."""
    col = a.sum(0)
    inv = np.zeros_like(col)
    nz = col > 0
    inv[nz] = 1.0 / col[nz]
    return a @ np.diag(inv)


def spatial_adjacency(layout: Layout | str) -> np.ndarray:
    """The (3, V, V) float64 stack: identity, normalised inward, normalised outward."""
    layout = get_layout(layout)
    v = layout.num_joints
    ident = edge_matrix([(i, i) for i in range(v)], v)
    inward = normalize_digraph(edge_matrix(layout.inward, v))
    outward = normalize_digraph(edge_matrix(layout.outward, v))
    return np.stack((ident, inward, outward))


def hop_distance(layout: Layout | str, max_hop: int | None = None) -> np.ndarray:
    """Graph hop distance between joints on the undirected skeleton (inf beyond ``max_hop``)."""
    layout = get_layout(layout)
    v = layout.num_joints
    adj = np.eye(v, dtype=bool)
    for c, p in layout.edges:
        adj[c, p] = adj[p, c] = True
    dist = np.full((v, v), np.inf)
    reach = np.eye(v, dtype=bool)
    step = np.eye(v, dtype=bool)
    dist[reach] = 0
    hops = v if max_hop is None else max_hop
    for d in range(1, hops + 1):
        step = (step.astype(np.int64) @ adj.astype(np.int64)) > 0
        new = step & ~reach
        dist[new] = d
        reach |= step
    return dist
