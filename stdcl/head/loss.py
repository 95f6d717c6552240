"""The STD-CL contrastive loss: hard-mined supervised InfoNCE against a memory bank.

:func:`hard_mined_infonce` is the released code's ``ContrastLoss`` computation, batched: per
anchor (L2-normalised, label ``y``), positives are the filled bank slots of class ``y`` and
negatives the filled slots of other classes; an anchor with fewer than ``P`` positives or
``K`` negatives is skipped. Of the rest, the ``P`` positives with the lowest similarity, the
``K`` negatives with the highest, and ``K`` negatives drawn uniformly without replacement
(the released ``random.sample``) form ``2P`` rows ``[s_p, hard negatives]`` and
``[s_p, random negatives]``, scaled by ``1/tau`` and scored by cross-entropy against index 0;
the loss is the mean over all rows of all valid anchors. Since every row of one anchor shares
its negatives, ``CE(row) = softplus(logsumexp(negatives / tau) - s_p / tau)`` exactly, so the
batched form needs one similarity matrix, three top-k's (hard positives, hard negatives, random
keys) and no ``(B, P, K)`` tensor; mining runs without autograd and the gradient to the anchors
is an embedding-bag over the ``P + 2K`` picked bank rows. It reads one pair of numbers back
from the device per call (the widest class block and the count of rows short of random
negatives), a second only when some row is short.

:class:`STDCLLoss` owns the spatial and temporal banks: it L2-normalises each branch's
embeddings, gathers them across ranks, overwrites the bank *before* comparing (an anchor's own
slot counts among its positives) and returns ``weight * (L_spa + L_tem)``, added only when
positive (released: ``CE + (L_s + L_t) / 2``). Both branches run as one :func:`mined_infonce`
(one hashing pass, sort and top-k of each kind for the two banks; bit-identical to two
single-branch calls), the constants it needs are built once per device
(:mod:`stdcl.head.sampling`) and ``(seed, step)`` is mirrored on the host: a step copies no
constant to the device and syncs three times (slot check, mining, the logged numbers).

Random negatives in :class:`STDCLLoss` are a pure function of (seed, step, branch, the anchor's
dataset index), by counter-based hashing: an anchor draws the same negatives whichever rank
or batch position it has (so data-parallel training equals one process), on CPU and CUDA
alike, and the whole state is the buffer ``rng`` = ``[seed, step]`` (exact resume).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from stdcl.errors import ConfigError
from stdcl.head.banks import ClassQueueBank, PerSampleBank, gather_for_bank
from stdcl.head.sampling import arange, branch_keys, const, fill_short, first_draws, scalar

log = logging.getLogger(__name__)

BANKS = ("per_sample", "class_queue")
_INF = float("inf")  # masked-out similarities never win a top-k


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise ``x / ||x||`` (the eps only guards all-zero rows)."""
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


def _stack(ts: Sequence[torch.Tensor]) -> torch.Tensor:  # no copy for one tensor
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(list(ts))


class _MinedSims(torch.autograd.Function):
    """``sims.gather(-1, idx)`` of precomputed ``sims[n] = anchors[n] @ banks[n].T`` with the gradient to ``anchors``
    ``(N, B, D)`` only: ``grad[n, b] = sum_j g[n, b, j] * banks[n][idx[n, b, j]]`` (an embedding-bag per branch),
    never a dense ``(B, S)`` pass."""

    @staticmethod
    def forward(ctx, anchors: torch.Tensor, sims: torch.Tensor, idx: torch.Tensor, *banks: torch.Tensor):
        ctx.save_for_backward(idx, *banks)
        return sims.gather(-1, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        idx, *banks = ctx.saved_tensors
        b, j = idx.shape[1:]
        offsets = const(idx.device, ("bags", b, j), lambda d: torch.arange(0, b * j, j, device=d))  # as for 2-D input
        g = [F.embedding_bag(i.reshape(-1), bank, offsets, per_sample_weights=w.to(bank.dtype).reshape(-1), mode="sum")
             for i, w, bank in zip(idx, grad, banks)]
        return _stack(g), None, None, *(None for _ in banks)


def _class_blocks(labels: torch.Tensor, bank_labels: torch.Tensor,
                  filled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The filled bank columns grouped by label, ``order (N, S)`` (one stable sort), and each anchor's class block
    in it: ``start`` and ``count`` ``(N, B)``. A positive is ~1/C of the bank, so only its block is read."""
    key = torch.where(filled, bank_labels, scalar(torch.iinfo(torch.long).min, torch.long, filled.device))
    ordered, order = key.sort(dim=-1, stable=True)
    start = torch.searchsorted(ordered, labels)
    return order, start, torch.searchsorted(ordered, labels, right=True) - start


def _lowest_positives(sd: torch.Tensor, order: torch.Tensor, start: torch.Tensor, count: torch.Tensor, width: int,
                      p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``P`` lowest similarities among each anchor's filled same-class bank entries and their columns.

    Reads ``width`` (>= the largest ``count``) columns of the anchor's class block; missing
    positives come back as ``+inf``, as from a masked top-k.
    """
    n, b, s = sd.shape
    offs = arange(width, sd.device)
    cols = order.gather(1, (start.unsqueeze(-1) + offs).clamp_max_(s - 1).view(n, -1)).view(n, b, width)
    vals = torch.where(offs < count.unsqueeze(-1), sd.gather(2, cols), scalar(_INF, sd.dtype, sd.device))
    lo, j = vals.topk(p, dim=-1, largest=False)
    return lo, cols.gather(-1, j)


def _similarities(anchors: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(N, B, S)``: ``anchors[n] @ feats[n].T``, one matrix product per branch into one tensor."""
    if len(feats) == 1:  # as before (a plain product also under autocast)
        return (anchors[0] @ feats[0].t()).unsqueeze(0)
    sd = anchors.new_empty((len(feats), anchors.shape[1], feats[0].shape[0]))
    for a, f, out in zip(anchors, feats, sd):
        torch.mm(a, f.t(), out=out)
    return sd


def mined_infonce(anchors: torch.Tensor, labels: torch.Tensor,
                  banks: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], num_pos: int, num_neg: int,
                  tau: float, random_neg: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  row_keys: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`hard_mined_infonce` of ``N`` branches at once; returns ``([loss of each branch], valid (N, B))``.

    ``anchors`` ``(N, B, D)`` share ``labels`` ``(B,)``; branch ``n`` compares against
    ``banks[n] = (feats (S, D), labels (S,), filled (S,))``. ``random_neg`` and ``row_keys`` are
    ``(N, B, K)`` and ``(N, B)``. Only exact steps are batched (the similarities into one
    tensor, the mining, the gather) and the scoring runs per branch, so each branch's result
    equals its own single-branch call bit for bit when the banks fill the same slots (as in
    :class:`STDCLLoss`; otherwise the shared class-block width could only reorder exact ties).
    One host sync (that width with the count of rows short of random negatives; a second only
    when some row is short).
    """
    p, k = int(num_pos), int(num_neg)
    n, b = anchors.shape[:2]
    s = banks[0][0].shape[0]
    if p > s or k > s or b == 0:
        return list((anchors * 0).sum((1, 2))), torch.zeros((n, b), dtype=torch.bool, device=anchors.device)
    feats = [f.detach().to(anchors.dtype) for f, _, _ in banks]
    with torch.no_grad():  # mining picks indices only; the gradient goes through _MinedSims
        sd = _similarities(anchors.detach(), feats)  # (N, B, S)
        dev = sd.device
        labels = labels.to(dev, torch.long).view(1, b).expand(n, b).contiguous()
        bank_labels = _stack([bl.to(dev, torch.long) for _, bl, _ in banks])  # (N, S)
        filled = _stack([bf.to(dev).bool() for _, _, bf in banks])
        neg = (labels.unsqueeze(-1) != bank_labels.unsqueeze(1)) & filled.unsqueeze(1)  # (N, B, S)
        order, start, count = _class_blocks(labels, bank_labels, filled)
        hi, hard_idx = torch.where(neg, sd, scalar(-_INF, sd.dtype, dev)).topk(k, dim=-1)  # the K highest negatives
        if random_neg is None:
            neg_rows = neg.view(n * b, s)
            keys = None if row_keys is None else row_keys.reshape(n * b)
            rnd, short = first_draws(neg_rows, k, generator, keys)
            width, n_short = torch.stack([count.max(), short.sum()]).tolist()  # one sync for both
            if n_short:
                fill_short(rnd, short, neg_rows, generator, keys)
            random_neg = rnd.view(n, b, k)
        else:
            width = int(count.max())
        lo, pos_idx = _lowest_positives(sd, order, start, count, max(width, p), p)
        # >= P positives and >= K negatives filled (lo ascends, hi descends)
        valid = (lo[..., -1] != scalar(_INF, lo.dtype, dev)) & (hi[..., -1] != scalar(-_INF, hi.dtype, dev))
        idx = torch.cat([pos_idx, hard_idx, random_neg.to(dev, torch.long).view(n, b, k)], dim=-1)
    sel = _MinedSims.apply(anchors, sd, idx, *feats) / tau  # (N, B, P + 2K): [s_p, hard, random] / tau
    rows = ((2 * p) * valid.sum(-1).to(sel.dtype)).clamp_min(1)  # the valid anchors' 2P rows per branch
    return [_branch_loss(x, v, r, p, k) for x, v, r in zip(sel, valid, rows)], valid


def _branch_loss(sel: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor, p: int, k: int) -> torch.Tensor:
    """The mean of the valid anchors' ``2P`` row cross-entropies from ``sel (B, P + 2K) = [s_p, hard, random] / tau``.

    Per branch on purpose: CPU kernels of exp / log / softplus round a tensor's vectorised
    body and its scalar tail differently, so stacking the branches would move the last bits.
    """
    sp, hard, rnd = sel.split([p, k, k], dim=1)
    lse_h = torch.logsumexp(hard, dim=1, keepdim=True)
    lse_r = torch.logsumexp(rnd, dim=1, keepdim=True)
    per_anchor = (F.softplus(lse_h - sp).sum(1) + F.softplus(lse_r - sp).sum(1)) * valid  # the 2P row CEs
    return per_anchor.sum() / rows


def hard_mined_infonce(anchors: torch.Tensor, labels: torch.Tensor, bank_feats: torch.Tensor,
                       bank_labels: torch.Tensor, bank_filled: torch.Tensor, num_pos: int = 128,
                       num_neg: int = 512, tau: float = 0.8, random_neg: torch.Tensor | None = None,
                       generator: torch.Generator | None = None,
                       row_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched hard-mined InfoNCE; returns ``(loss scalar, valid-anchor mask (B,))``.

    Args:
        anchors: ``(B, D)`` L2-normalised embeddings (with grad; the only gradient path).
        labels: ``(B,)`` anchor labels.
        bank_feats, bank_labels, bank_filled: ``(S, D)``, ``(S,)``, ``(S,)`` bank entries (detached here).
        num_pos, num_neg, tau: ``P``, ``K`` and the temperature.
        random_neg: ``(B, K)`` bank columns to use as the random negatives (tests fix them);
            otherwise each anchor draws ``K`` of its filled negatives uniformly without
            replacement (:func:`draw_random_negatives`: from ``row_keys`` ``(B,)`` when given,
            else from ``generator``, or from the global generator when None).

    A zero loss (still attached to ``anchors``' graph) is returned when no anchor is valid.
    """
    p, k = int(num_pos), int(num_neg)
    if p < 1 or k < 1 or not tau > 0:
        raise ConfigError(f"contrastive loss: need num_pos >= 1, num_neg >= 1 and tau > 0, got {p}, {k}, {tau}")
    loss, valid = mined_infonce(anchors.unsqueeze(0), labels, [(bank_feats, bank_labels, bank_filled)], p, k, tau,
                                None if random_neg is None else random_neg.unsqueeze(0), generator,
                                None if row_keys is None else row_keys.view(1, -1))
    return loss[0], valid[0]


# -- feasibility -------------------------------------------------------------------------------
@dataclass
class FeasibilityReport:
    """Whether anchors of each class can ever reach ``P`` positives and ``K`` negatives."""

    num_pos: int
    num_neg: int
    capacity: list[int]  # per class: the most bank entries it can hold = the most positives
    max_negatives: list[int]  # per class: total capacity minus its own
    can_contribute: list[bool]
    suggested: tuple[int, int] = (0, 0)  # scaled_pos_neg(capacity, P, K)
    message: str = ""
    never: list[int] = field(default_factory=list)  # classes that can never contribute

    @property
    def feasible(self) -> bool:
        """True when at least one class can contribute."""
        return any(self.can_contribute)


def check_feasibility(capacity_per_class: torch.Tensor, num_pos: int, num_neg: int) -> FeasibilityReport:
    """A class contributes iff its capacity >= P and the other classes' capacity >= K."""
    cap = [int(c) for c in torch.as_tensor(capacity_per_class).flatten().tolist()]
    total = sum(cap)
    negs = [total - c for c in cap]
    ok = [c >= num_pos and n >= num_neg and c > 0 for c, n in zip(cap, negs)]
    present = [i for i, c in enumerate(cap) if c > 0]
    never = [i for i in present if not ok[i]]
    sugg = scaled_pos_neg(torch.tensor(cap), num_pos, num_neg) if present else (1, 1)
    head = (f"STD-CL contrastive loss: P={num_pos} positives and K={num_neg} negatives per anchor; bank capacity "
            f"{total} over {len(present)} classes (per class {min(cap[i] for i in present) if present else 0}.."
            f"{max(cap) if cap else 0}).")
    if not any(ok):
        msg = (f"{head} NO class can ever reach P positives and K negatives, so the contrastive loss would stay "
               f"ZERO for the whole run (training would be the plain baseline). Recommended for small data: "
               f"{SMALL_DATA_SETTING} (-> P={sugg[0]}, K={sugg[1]}). Other ways: repeat the training set "
               f"(NW-UCLA trains with repeat 5), lower num_pos/num_neg, or a class_queue bank with queue_length >= P.")
    elif never:
        msg = (f"{head} {len(present) - len(never)} of {len(present)} classes can contribute; classes "
               f"{never} never reach P positives and K negatives, so their anchors are always skipped.")
    else:
        msg = f"{head} Every class can contribute once its bank entries are filled."
    return FeasibilityReport(num_pos, num_neg, cap, negs, ok, sugg, msg, never)


#: What the feasibility check recommends when the released P / K cannot be met (measured on UEA NATOPS,
#: 30 per class: scaling alone did not help, scaling with a late start did; README "Evidence on real data").
SMALL_DATA_SETTING = ("stdcl.loss.scale_to_data=true with the term starting after a quarter of the run "
                      "(stdcl.loss.start_epoch = epochs / 4, ramp_epochs = epochs / 4)")


def small_data_advice(capacity_per_class: torch.Tensor, num_pos: int, epochs: int, start_epoch: float,
                      scale_to_data: bool) -> str | None:
    """The recommended small-data setting, when the bank cannot hold ``num_pos`` positives for some class
    (the data is small for the configured P) and the run does not already use it; else None."""
    cap = [int(c) for c in torch.as_tensor(capacity_per_class).flatten().tolist() if int(c) > 0]
    if not cap or min(cap) >= num_pos or (scale_to_data and start_epoch > 0):
        return None
    q = max(epochs // 4, 1)
    return (f"small data for P={num_pos} (smallest class holds {min(cap)} bank entries): recommended "
            f"stdcl.loss.scale_to_data=true stdcl.loss.start_epoch={q} stdcl.loss.ramp_epochs={q} "
            f"(for this run's {epochs} epochs; on UEA NATOPS scaling alone did not help, the late start did)")


def scaled_pos_neg(capacity_per_class: torch.Tensor, num_pos: int, num_neg: int,
                   fraction: float = 0.5) -> tuple[int, int]:
    """``(P, K)`` scaled to the data: ``P <= fraction * smallest class``, ``K <= fraction * (total - largest class)``.

    Classes with zero capacity are ignored; both results are at least 1.
    """
    cap = torch.as_tensor(capacity_per_class).flatten().long()
    cap = cap[cap > 0]
    if cap.numel() == 0:
        raise ConfigError("scale_to_data: the bank has no entries for any class")
    total = int(cap.sum())
    p = min(int(num_pos), math.floor(fraction * int(cap.min())))
    k = min(int(num_neg), math.floor(fraction * (total - int(cap.max()))))
    return max(1, p), max(1, k)


# -- the module --------------------------------------------------------------------------------
class STDCLLoss(nn.Module):
    """Spatial and temporal banks plus the hard-mined InfoNCE; ``forward`` returns the weighted term.

    Args:
        bank: ``"per_sample"`` (released; needs ``slot_labels``, the training set's
            ``index_labels``) or ``"class_queue"`` (needs ``num_classes`` and ``queue_length``).
        dim: embedding size ``D``.
        num_pos, num_neg, tau: ``P``, ``K`` and the temperature.
        weight: the contrastive term is ``weight * (L_spa + L_tem)`` (released: 0.5).
        branches: which banks to keep.
        seed: seed of the random negatives.
        scale_to_data: replace ``P``/``K`` by :func:`scaled_pos_neg` of the bank capacity
            (with ``scale_fraction``).
    """

    def __init__(self, bank: str = "per_sample", dim: int = 256, num_pos: int = 128, num_neg: int = 512,
                 tau: float = 0.8, weight: float = 0.5, branches: tuple[str, ...] = ("spatial", "temporal"),
                 slot_labels: torch.Tensor | None = None, num_classes: int | None = None,
                 queue_length: int | None = None, seed: int = 0, scale_to_data: bool = False,
                 scale_fraction: float = 0.5):
        super().__init__()
        from stdcl.head.decoupling import BRANCHES

        branches = tuple(branches)
        if not branches or any(b not in BRANCHES for b in branches) or len(set(branches)) != len(branches):
            raise ConfigError(f"loss: branches must be a non-empty subset of {', '.join(BRANCHES)}, "
                              f"got {list(branches)}")
        if bank not in BANKS:
            raise ConfigError(f"loss: unknown bank {bank!r}; choose from {', '.join(BANKS)}")
        if int(num_pos) < 1 or int(num_neg) < 1 or not float(tau) > 0:
            raise ConfigError(f"loss: need num_pos >= 1, num_neg >= 1, tau > 0; got {num_pos}, {num_neg}, {tau}")
        self.bank_kind = bank
        self.dim = int(dim)
        self.num_pos, self.num_neg = int(num_pos), int(num_neg)
        self.tau, self.weight = float(tau), float(weight)
        self.branches = tuple(b for b in BRANCHES if b in branches)
        if bank == "per_sample":
            if slot_labels is None:
                raise ConfigError("loss: a per_sample bank needs slot_labels (the training set's index_labels)")
            slot_labels = torch.as_tensor(slot_labels, dtype=torch.long).flatten()
            make = lambda: PerSampleBank(slot_labels.numel(), self.dim, slot_labels, num_classes)  # noqa: E731
        else:
            if num_classes is None or queue_length is None:
                raise ConfigError("loss: a class_queue bank needs num_classes and queue_length")
            make = lambda: ClassQueueBank(int(num_classes), int(queue_length), self.dim)  # noqa: E731
        self.banks = nn.ModuleDict({b: make() for b in self.branches})
        self.register_buffer("rng", torch.tensor([int(seed), 0], dtype=torch.long))  # [seed, step]
        self._rng_seen: tuple | None = None  # (rng tensor, its version, seed, step): see _seed_step
        if scale_to_data:
            p, k = scaled_pos_neg(self.capacity_per_class(), self.num_pos, self.num_neg, scale_fraction)
            log.info("STD-CL scale_to_data: P %d -> %d, K %d -> %d", self.num_pos, p, self.num_neg, k)
            self.num_pos, self.num_neg = p, k

    def capacity_per_class(self) -> torch.Tensor:
        """``(K,)`` capacity of each class in the banks (identical for both branches)."""
        return next(iter(self.banks.values())).capacity_per_class()

    def check(self, strict: bool = False) -> FeasibilityReport:
        """Report whether ``P``/``K`` can ever be met; raise (strict) or warn loudly when never."""
        rep = check_feasibility(self.capacity_per_class(), self.num_pos, self.num_neg)
        if not rep.feasible:
            if strict:
                raise ConfigError(rep.message)
            log.warning("%s\n%s\n%s", "!" * 78, rep.message, "!" * 78)
        elif rep.never:
            log.info(rep.message)
        return rep

    def get_rng_state(self) -> torch.Tensor:
        """``[seed, step]`` of the random negatives (also in ``state_dict`` as ``rng``)."""
        return self.rng.detach().cpu().clone()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.rng.copy_(torch.as_tensor(state, dtype=torch.long))

    def _seed_step(self) -> tuple[int, int]:
        """``(seed, step)`` of ``rng``, kept on the host: the buffer is read back (a device sync) only when it
        changed outside ``forward`` (``load_state_dict``, ``set_rng_state``, ``to``: a new tensor or version)."""
        seen = self._rng_seen
        if seen is None or seen[0] is not self.rng or seen[1] != self.rng._version:
            seen = self._rng_seen = (self.rng, self.rng._version, *self.rng.tolist())
        return seen[2], seen[3]

    def forward(self, embeddings: dict[str, torch.Tensor], labels: torch.Tensor, indices: torch.Tensor) -> dict:
        """``{"loss", <branch>: float, "valid_frac_<branch>": float}`` for a batch of embeddings.

        ``embeddings[branch]`` is ``(B, D)`` unnormalised (the head's output); ``labels`` and
        ``indices`` are the batch's labels and dataset indices (the bank slots). Both branches
        run as one batched :func:`mined_infonce`.
        """
        missing = [b for b in self.branches if b not in embeddings]
        if missing:
            raise ConfigError(f"loss: no {', '.join(missing)} embeddings (the head's branches must match the loss's)")
        dev = embeddings[self.branches[0]].device
        labels, indices = labels.to(dev, torch.long), indices.to(dev, torch.long)
        seed, step = self._seed_step()
        banks = [self.banks[name] for name in self.branches]
        with torch.autocast(device_type=dev.type, enabled=False):
            z = l2_normalize(_stack([embeddings[name].float() for name in self.branches]))  # (N, B, D)
            g_emb, g_labels, g_indices = gather_for_bank(z.transpose(0, 1), labels, indices)
            for i, bank in enumerate(banks):  # overwrite BEFORE comparing; the banks hold the same slots
                bank.update(g_emb[:, i], g_labels, g_indices, check=i == 0)
            keys = branch_keys(seed, step, range(1, len(banks) + 1), indices)  # salts 1, 2: spatial, temporal
            parts, valid = mined_infonce(z, labels, [bank.entries() for bank in banks], self.num_pos, self.num_neg,
                                         self.tau, row_keys=keys)
        self.rng[1:].add_(1)
        self._rng_seen = (self.rng, self.rng._version, seed, step + 1)
        total = sum(parts[1:], parts[0])
        total = total * (total > 0)  # released: added only when positive
        stats = torch.stack([part.detach() for part in parts])
        values = torch.cat([stats, valid.float().mean(1) if valid.shape[1] else stats * 0]).tolist()  # one sync
        out: dict = {"loss": self.weight * total}
        for i, name in enumerate(self.branches):
            out[name] = values[i]
            out[f"valid_frac_{name}"] = values[len(banks) + i]
        return out

    def extra_repr(self) -> str:
        return (f"bank={self.bank_kind}, dim={self.dim}, P={self.num_pos}, K={self.num_neg}, tau={self.tau}, "
                f"weight={self.weight}, branches={self.branches}")
