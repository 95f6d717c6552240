"""The training objective of one batch: cross-entropy plus the STD-CL contrastive term, ramped in
by ``stdcl.loss.start_epoch`` / ``ramp_epochs`` and, under data parallelism, weighted so that the
gradient is that of the global batch; plus the encoder's own term when it has one (ProtoGCN)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from stdcl.train import distributed as D
from stdcl.train.optim import contrastive_factor


def training_loss(out: dict[str, Any], y: torch.Tensor, loss_cfg: dict[str, Any], epochs_done: float,
                  dist: D.DistInfo, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(total, ce, logged values)`` of a forward output ``out`` (``logits``; with the head,
    ``contrastive``; for an encoder with its own term, ``auxiliary``) on labels ``y``, ``epochs_done``
    (fractional) into training."""
    logits = out["logits"].float()
    ce = F.cross_entropy(logits, y)
    total = ce
    values: dict[str, Any] = {}
    con = out.get("contrastive")
    if con is not None:
        factor = contrastive_factor(epochs_done, float(loss_cfg.get("start_epoch") or 0),
                                    float(loss_cfg.get("ramp_epochs") or 0))
        term = con["loss"] * factor  # before start_epoch the banks fill, the term adds 0 (graph kept for DDP)
        if dist.enabled:
            term = term * contrastive_scale(con, y.shape[0], dist, device)
        total = total + term
        values.update({k: v for k, v in con.items() if k != "loss"})
        values["contrastive_factor"] = factor
    aux = out.get("auxiliary")
    if aux is not None:  # the encoder's own term (e.g. ProtoGCN's prototype loss), separate from STD-CL's
        total = total + aux["loss"].float()
        values.update({k: float(v) for k, v in aux.items() if k != "loss"})
    return total, ce, values


def contrastive_scale(con: dict[str, Any], batch: int, dist: D.DistInfo, device: torch.device) -> float:
    """Make the data-parallel gradient that of the global batch's contrastive mean.

    Each rank's term is a mean over its own valid anchors and DDP averages the ranks, so
    ranks with few valid anchors would weigh as much as ranks with many. Scaling rank
    ``r``'s term by ``world * n_r / N`` (``n_r`` its valid anchors, ``N`` all ranks') gives
    exactly ``sum of rows / all valid rows``, the single-process loss of the global batch.
    Both branches share one valid mask (their banks hold the same slots), so one scale fits.
    """
    branch = next(k for k in con if k.startswith("valid_frac_"))
    n_local = round(float(con[branch]) * batch)
    total = D.all_reduce_sum(torch.tensor([float(n_local)], device=device), dist).item()
    return dist.world_size * n_local / total if total > 0 else 0.0
