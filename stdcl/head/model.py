"""An encoder with the optional STD-CL head and loss: the training-time model.

``model.encoder`` is the plain encoder (its ``state_dict`` has exactly the baseline's names,
so exporting ``model.encoder.state_dict()`` gives a deployable baseline model); the head and
the loss are training-only and never change the logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stdcl.encoders.base import Encoder
from stdcl.errors import ConfigError
from stdcl.head.decoupling import DecouplingHead
from stdcl.head.loss import STDCLLoss

HEAD_OPTIONS = ("enabled", "reduction", "dim", "pooling", "branches", "init")
LOSS_SCHEDULE_OPTIONS = ("start_epoch", "ramp_epochs")  # read by the training loop; accepted and ignored here
LOSS_OPTIONS = ("bank", "num_pos", "num_neg", "tau", "weight", "queue_length", "seed", "scale_to_data",
                "scale_fraction", "strict")


class STDCLModel(nn.Module):
    """``encoder`` + optional :class:`DecouplingHead` + optional :class:`STDCLLoss` (None, None = baseline)."""

    def __init__(self, encoder: Encoder, head: DecouplingHead | None, loss: STDCLLoss | None):
        super().__init__()
        if loss is not None and head is None:
            raise ConfigError("STD-CL model: a contrastive loss needs the decoupling head")
        if head is not None and loss is not None and set(loss.branches) - set(head.branches):
            raise ConfigError(f"STD-CL model: the loss uses branches {loss.branches}, the head has {head.branches}")
        self.encoder = encoder
        self.head = head
        self.loss = loss

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                indices: torch.Tensor | None = None) -> dict[str, Any]:
        """``{"logits"}`` (= ``encoder(x)``); with a head and ``labels`` also ``"embeddings"``
        (``{branch: (N, D)}``, unnormalised) and, in training mode with a loss and ``indices``,
        ``"contrastive"``: the :class:`STDCLLoss` dict (``"loss"``: the weighted term to add to the
        cross-entropy; ``<branch>`` and ``"valid_frac_<branch>"``: floats). The banks are only
        updated in training mode, so evaluation batches never reach them. In training mode with
        ``labels``, ``"auxiliary"``: the encoder's own term (``Encoder.auxiliary_loss``) when it has one.
        """
        feats = self.encoder.features(x)
        out: dict[str, Any] = {"logits": self.encoder.classify(feats)}
        if labels is not None and self.training:  # the encoder's own training term, if it has one
            aux = self.encoder.auxiliary_loss(feats, out["logits"], labels)
            if aux is not None:
                out["auxiliary"] = aux
        if self.head is not None and labels is not None:
            emb = self.head(feats.map)
            out["embeddings"] = emb
            if self.loss is not None and indices is not None and self.training:
                out["contrastive"] = self.loss(emb, labels, indices)
        return out


def build_stdcl_model(encoder: Encoder, window: int, head_options: dict | None, loss_options: dict | None,
                      slot_labels: torch.Tensor | None = None, num_classes: int | None = None) -> STDCLModel:
    """Wrap ``encoder``; the head is sized from ``encoder.feature_shape(window)``.

    ``head_options`` (None or ``enabled: false`` = baseline): ``reduction``, ``dim``, ``pooling``,
    ``branches``, ``init``. ``loss_options`` (None = head without loss): ``bank``, ``num_pos``,
    ``num_neg``, ``tau``, ``weight``, ``queue_length``, ``seed``, ``scale_to_data``,
    ``scale_fraction``, ``strict`` (raise instead of warn when P/K can never be met).
    ``slot_labels`` is the training set's ``index_labels``; ``num_classes`` defaults to the encoder's.
    Feasibility of P/K is checked (and logged) here.
    """
    if head_options is None:
        return STDCLModel(encoder, None, None)
    head_options = dict(head_options)
    if not head_options.pop("enabled", True):
        return STDCLModel(encoder, None, None)
    _check_keys("head", head_options, HEAD_OPTIONS)
    if "branches" in head_options:
        head_options["branches"] = tuple(head_options["branches"])
    head = DecouplingHead(encoder.feature_shape(window), **head_options)
    loss = None
    if loss_options is not None:
        opts = {k: v for k, v in loss_options.items() if k not in LOSS_SCHEDULE_OPTIONS}
        _check_keys("loss", opts, LOSS_OPTIONS + LOSS_SCHEDULE_OPTIONS)
        strict = bool(opts.pop("strict", False))
        if slot_labels is not None:
            slot_labels = torch.as_tensor(slot_labels, dtype=torch.long)
        loss = STDCLLoss(dim=head.dim, branches=head.branches, slot_labels=slot_labels,
                         num_classes=int(num_classes or encoder.num_classes), **opts)
        loss.check(strict=strict)
    return STDCLModel(encoder, head, loss)


def _check_keys(what: str, opts: dict, known: tuple[str, ...]) -> None:
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ConfigError(f"{what} options: unknown {', '.join(unknown)}; known: {', '.join(known)}")
