"""Every embedding space of a model, from one forward pass of its encoder (and STD-CL head).

``global`` is the classifier's input (``encoder.pre_logits``); ``spatial_pooled`` /
``temporal_pooled`` are the parameter-free poolings of the last feature map
(:data:`POOLED_DEFINITION`), so they exist for every encoder; ``spatial`` / ``temporal`` are the
trained head's ``s`` and ``t`` when the model has one. The analysis layer and the training-time
probes (:mod:`stdcl.train.probes`) both read the spaces through :func:`embedding_spaces`.
"""

from __future__ import annotations

import torch
from torch import nn

from stdcl.encoders.base import Encoder

POOLED_DEFINITION = (
    "Pooled spatial embedding: the encoder's last feature map X (C' x T' x V' per person) averaged over "
    "frames, giving one C'-vector per joint, flattened joint by joint (C'·V' values), averaged over persons. "
    "Pooled temporal embedding: X averaged over joints, one C'-vector per frame, flattened (C'·T' values), "
    "averaged over persons. These are exactly what the STD-CL head reads before its learned reduction and "
    "projection, so they exist for every checkpoint and compare baseline and STD-CL encoders on equal terms.")


def pooled_embeddings(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spatial (N, C'V'), temporal (N, C'T'))`` of a map ``(N, M, C', T', V')``: see :data:`POOLED_DEFINITION`."""
    spatial = fmap.mean(3).flatten(2).mean(1)  # (N, M, C', V') -> (N, C'V')
    temporal = fmap.mean(4).flatten(2).mean(1)  # (N, M, C', T') -> (N, C'T')
    return spatial, temporal


@torch.no_grad()
def embedding_spaces(encoder: Encoder, head: nn.Module | None, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``logits``, ``global``, ``spatial_pooled``, ``temporal_pooled`` and, with a head, its ``spatial`` /
    ``temporal`` for a batch ``(N, C, T, V, M)``; encoder and head are put in eval mode, no gradients."""
    encoder.eval()
    feats = encoder.features(x)
    pre = encoder.pre_logits(feats)
    sp, tp = pooled_embeddings(feats.map)
    out = {"logits": encoder.classifier(pre), "global": pre.flatten(1), "spatial_pooled": sp, "temporal_pooled": tp}
    if head is not None:
        head.eval()
        out.update(head(feats.map))
    return out


__all__ = ["POOLED_DEFINITION", "embedding_spaces", "pooled_embeddings"]
