"""Memory banks of L2-normalised embeddings for the STD-CL contrastive loss.

Two kinds, both ``nn.Module``s whose whole state lives in registered buffers (saved and
restored with ``state_dict`` for an exact resume):

- :class:`PerSampleBank` (released code): one slot per training index, overwritten whenever
  that index appears in a batch;
- :class:`ClassQueueBank` (the paper's figure): a FIFO ring of fixed length per class.

Both expose ``update(emb, labels, indices)``, ``entries() -> (feats, labels, filled)`` and
``capacity_per_class()``. Under data-parallel training pass the output of
:func:`gather_for_bank` to ``update`` so every rank holds the same bank (and keep the banks out
of DDP's buffer broadcast: ``broadcast_buffers=False``, they are identical on every rank).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from stdcl.errors import ConfigError


def _last_writes(slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slots sorted, source row of each)``: every write to a slot carries the row of that slot's last occurrence
    (later writes win), so repeated slots write equal rows and the result does not depend on the write order.
    Unlike dropping the repeats, this needs no device sync."""
    s, order = torch.sort(slots, stable=True)
    return s, order[torch.searchsorted(s, s, right=True).sub_(1)]


def _write(bank: nn.Module, slots: torch.Tensor, emb: torch.Tensor) -> None:
    """``bank.feats[slots] = emb`` and ``bank.filled[slots] = True`` (later rows win on repeated slots)."""
    slots, rows = _last_writes(slots)
    bank.feats.index_copy_(0, slots, emb.detach()[rows].to(bank.feats))
    bank.filled.index_fill_(0, slots, True)


def _check_batch(emb: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, dim: int) -> None:
    if emb.dim() != 2 or emb.shape[1] != dim:
        raise ConfigError(f"bank: expected embeddings (B, {dim}), got shape {tuple(emb.shape)}")
    if labels.shape != (emb.shape[0],) or indices.shape != (emb.shape[0],):
        raise ConfigError(f"bank: labels {tuple(labels.shape)} and indices {tuple(indices.shape)} must be "
                          f"({emb.shape[0]},) like the embeddings")


class PerSampleBank(nn.Module):
    """One slot per training index (``slot_labels[i]`` is the label of index ``i``).

    Buffers: ``feats`` (size, D) float32, ``filled`` (size,) bool, ``labels`` (size,) long.
    """

    def __init__(self, size: int, dim: int, slot_labels: torch.Tensor, num_classes: int | None = None):
        super().__init__()
        slot_labels = torch.as_tensor(slot_labels, dtype=torch.long).flatten()
        if slot_labels.numel() != size:
            raise ConfigError(f"bank: size {size} but {slot_labels.numel()} slot labels")
        if size < 1 or (slot_labels < 0).any():
            raise ConfigError("bank: needs at least one slot and non-negative slot labels")
        self.size, self.dim = int(size), int(dim)
        k = int(slot_labels.max()) + 1
        if num_classes is not None and int(num_classes) < k:
            raise ConfigError(f"bank: slot label {k - 1} is out of range for num_classes={num_classes}")
        self.num_classes = int(num_classes) if num_classes is not None else k
        self.register_buffer("feats", torch.zeros(size, dim, dtype=torch.float32))
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("labels", slot_labels.clone())

    @torch.no_grad()
    def update(self, emb: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, check: bool = True) -> None:
        """Overwrite slots ``indices`` with ``emb`` (L2-normalised, detached); labels must match the slots.

        ``check=False`` skips that validation (its one device sync) for a batch already checked
        against a bank with the same slot labels.
        """
        _check_batch(emb, labels, indices, self.dim)
        if emb.shape[0] == 0:
            return
        indices = indices.to(self.feats.device, torch.long)
        labels = labels.to(self.feats.device, torch.long)
        if check:
            safe = indices.clamp(0, self.size - 1)
            bad_index, bad_label = torch.stack([safe != indices, self.labels[safe] != labels]).any(1).tolist()
            if bad_index:
                raise ConfigError(f"bank: index out of range 0..{self.size - 1} (the bank is sized by the training "
                                  "set)")
            if bad_label:
                raise ConfigError("bank: batch labels disagree with the slot labels of their indices; slot_labels "
                                  "must be the training dataset's index_labels")
        _write(self, indices, emb)

    def entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(feats (S, D), labels (S,), filled (S,) bool)``."""
        return self.feats, self.labels, self.filled

    def capacity_per_class(self) -> torch.Tensor:
        """``(K,)``: how many slots each class owns (the most entries it can ever hold)."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, num_classes={self.num_classes}"


class ClassQueueBank(nn.Module):
    """A FIFO ring of ``length`` entries per class; class ``k`` owns slots ``k*L .. k*L+L-1``.

    Buffers: ``feats`` (K*L, D) float32, ``labels`` (K*L,) long, ``filled`` (K*L,) bool and
    ``ptr`` (K,) long (the next slot each class writes, relative to its block).
    """

    def __init__(self, num_classes: int, length: int, dim: int):
        super().__init__()
        if num_classes < 1 or length < 1:
            raise ConfigError(f"bank: class_queue needs num_classes >= 1 and queue_length >= 1, got "
                              f"{num_classes} and {length}")
        self.num_classes, self.length, self.dim = int(num_classes), int(length), int(dim)
        k, n = self.num_classes, self.length
        self.register_buffer("feats", torch.zeros(k * n, dim, dtype=torch.float32))
        self.register_buffer("labels", torch.arange(k).repeat_interleave(n))
        self.register_buffer("filled", torch.zeros(k * n, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros(k, dtype=torch.long))

    @torch.no_grad()
    def update(self, emb: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, check: bool = True) -> None:
        """Enqueue ``emb`` in batch order into its class's ring (``indices`` is accepted and unused);
        ``check=False`` skips the label range check (a device sync)."""
        _check_batch(emb, labels, indices, self.dim)
        if emb.shape[0] == 0:
            return
        labels = labels.to(self.feats.device, torch.long)
        if check and bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ConfigError(f"bank: label out of range 0..{self.num_classes - 1}")
        onehot = nn.functional.one_hot(labels, self.num_classes)  # (B, K)
        rank = (onehot.cumsum(0) - 1).gather(1, labels[:, None]).squeeze(1)  # order within its class
        slots = labels * self.length + (self.ptr[labels] + rank) % self.length
        _write(self, slots, emb)  # more than L of one class in a batch: the latest L stay
        self.ptr.add_(onehot.sum(0)).remainder_(self.length)

    def entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(feats (S, D), labels (S,), filled (S,) bool)`` with ``S = K * L``."""
        return self.feats, self.labels, self.filled

    def capacity_per_class(self) -> torch.Tensor:
        """``(K,)``: ``L`` for every class."""
        return torch.full((self.num_classes,), self.length, dtype=torch.long)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, length={self.length}, dim={self.dim}"


def gather_for_bank(emb: torch.Tensor, labels: torch.Tensor,
                    indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ranks' ``(emb, labels, indices)`` in rank order when torch.distributed runs, else the inputs.

    ``emb`` is detached. Ranks may hold different batch sizes (an uneven last batch): each pads
    to the largest and a validity mask drops the padding after the all_gather.
    """
    emb = emb.detach()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return emb, labels, indices
    world = dist.get_world_size()
    dev = emb.device
    b = emb.shape[0]
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([b], dtype=torch.long, device=dev))
    top = int(max(int(s) for s in sizes))

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((top, *x.shape[1:]))
        out[:b] = x
        return out

    valid = torch.ones(b, dtype=torch.bool, device=dev)
    parts = []
    for x in (emb, labels.to(dev, torch.long), indices.to(dev, torch.long), valid):
        padded = pad(x).contiguous()
        bufs = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(bufs, padded)
        parts.append(torch.cat(bufs))
    g_emb, g_lab, g_idx, g_valid = parts
    return g_emb[g_valid], g_lab[g_valid], g_idx[g_valid]
