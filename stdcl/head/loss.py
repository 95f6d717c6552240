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
is an embedding-bag over the ``P + 2K`` picked bank rows. It never synchronises with the device.

:class:`STDCLLoss` owns the spatial and temporal banks: it L2-normalises each branch's
embeddings, gathers them across ranks, overwrites the bank *before* comparing (an anchor's own
slot counts among its positives) and returns ``weight * (L_spa + L_tem)``, added only when
positive (released: ``CE + (L_s + L_t) / 2``).

Random negatives in :class:`STDCLLoss` are a pure function of (seed, step, branch, the anchor's
dataset index), by counter-based hashing: an anchor draws the same negatives whichever rank
or batch position it has (so data-parallel training equals one process), on CPU and CUDA
alike, and the whole state is the buffer ``rng`` = ``[seed, step]`` (exact resume).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from stdcl.errors import ConfigError
from stdcl.head.banks import ClassQueueBank, PerSampleBank, gather_for_bank

log = logging.getLogger(__name__)

BANKS = ("per_sample", "class_queue")
_INF = float("inf")  # masked-out similarities never win a top-k


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise ``x / ||x||`` (the eps only guards all-zero rows)."""
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


class _MinedSims(torch.autograd.Function):
    """``sims.gather(1, idx)`` of precomputed ``sims = anchors @ bank.T`` with the gradient to ``anchors``
    only: ``grad[b] = sum_j g[b, j] * bank[idx[b, j]]`` (an embedding-bag), never a dense ``(B, S)`` pass."""

    @staticmethod
    def forward(ctx, anchors: torch.Tensor, bank: torch.Tensor, sims: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(bank, idx)
        return sims.gather(1, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        bank, idx = ctx.saved_tensors
        g = F.embedding_bag(idx, bank, per_sample_weights=grad.to(bank.dtype).contiguous(), mode="sum")
        return g, None, None, None


def draw_random_negatives(neg: torch.Tensor, num_neg: int, generator: torch.Generator | None = None,
                          row_keys: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, K)`` columns: per row, ``K`` of the ``True`` entries of ``neg (B, S)`` uniformly without replacement.

    Sequential sampling (the distribution of the released ``random.sample``): draw uniform
    columns with replacement, reject non-negatives and repeats, keep the first ``K`` survivors
    in draw order. That touches ``O(K)`` entries per row instead of ``S``; rows where too few
    candidates survive (small or mostly-positive banks) fall back to the ``K`` largest of
    uniform keys over the row's negatives. Rows with fewer than ``K`` negatives get arbitrary
    extra columns (such anchors are skipped by the loss anyway).

    Randomness: ``row_keys`` ``(B,)`` int64 makes each row a pure function of its key
    (counter-based hashing: the same anchor draws the same columns whichever batch or rank it
    is in); otherwise ``generator`` (or the global generator) is used.
    """
    b, s = neg.shape
    k = int(num_neg)
    m = k + k // 4 + 64  # candidates per row: enough when most of the row is negative
    if row_keys is not None:
        keys = row_keys.to(neg.device, torch.long).view(b, 1)
        cand = _uniform_bits(keys, torch.arange(m, device=neg.device)) % s
    else:
        dev = generator.device if generator is not None else neg.device
        cand = torch.randint(0, s, (b, m), generator=generator, device=dev).to(neg.device)
    ok = neg.gather(1, cand)
    order = cand.sort(dim=1, stable=True)
    repeat = torch.zeros_like(ok)
    repeat[:, 1:] = order.values[:, 1:] == order.values[:, :-1]
    ok &= ~torch.zeros_like(ok).scatter(1, order.indices, repeat)  # later occurrences of a column
    rank = torch.arange(m, 0, -1, device=neg.device).expand(b, m)  # earlier draws first
    keep = torch.where(ok, rank, 0).topk(k, dim=1).indices
    out = cand.gather(1, keep)
    short = ok.sum(1) < k
    if bool(short.any()):
        rows = short.nonzero().view(-1)
        if row_keys is not None:
            u = _uniform_bits(keys[rows], torch.arange(m, m + s, device=neg.device)).double()
        else:
            u = torch.rand((rows.numel(), s), generator=generator, device=dev).to(neg.device)
        out[rows] = torch.where(neg[rows], u, -1.0).topk(k, dim=1).indices
    return out


_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685  # splitmix64, int64


def _lsr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    x = x + _GOLDEN
    x = (x ^ _lsr(x, 30)) * _MIX1
    x = (x ^ _lsr(x, 27)) * _MIX2
    return x ^ _lsr(x, 31)


def _uniform_bits(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Non-negative 53-bit integers, a pure function of (row key, counter): ``(B, 1) x (m,) -> (B, m)``."""
    return _lsr(_mix(keys ^ _mix(counters.view(1, -1))), 11)


def anchor_keys(seed: int, step: int, salt: int, indices: torch.Tensor) -> torch.Tensor:
    """Per-anchor random keys from (seed, step, branch salt, the anchor's dataset index)."""
    x = 0
    for v in (seed, step, salt):
        x = _splitmix64(x ^ (int(v) & 0xFFFFFFFFFFFFFFFF))
    base = x - (1 << 64) if x >= 1 << 63 else x
    return _mix(indices.to(torch.long) ^ base)


def _lowest_positives(sd: torch.Tensor, labels: torch.Tensor, bank_labels: torch.Tensor, filled: torch.Tensor,
                      p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``P`` lowest similarities among each anchor's filled same-class bank entries and their columns.

    Reads only the anchor's own class's columns (bank entries grouped by label with one stable
    sort) instead of masking whole ``(B, S)`` rows: a positive is ~1/C of the bank. Missing
    positives come back as ``+inf``, as from a masked top-k.
    """
    s = sd.shape[1]
    key = torch.where(filled, bank_labels.to(torch.long), torch.iinfo(torch.long).min)
    order = key.argsort(stable=True)
    ordered = key[order]
    start = torch.searchsorted(ordered, labels.to(torch.long))
    count = torch.searchsorted(ordered, labels.to(torch.long), right=True) - start
    width = max(int(count.max()) if count.numel() else 0, p)
    offs = torch.arange(width, device=sd.device).view(1, -1)
    cols = order[(start.view(-1, 1) + offs).clamp_max(s - 1)]
    vals = torch.where(offs < count.view(-1, 1), sd.gather(1, cols), _INF)
    lo, j = vals.topk(p, dim=1, largest=False)
    return lo, cols.gather(1, j)


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
            replacement (the ``K`` with the largest of ``B x S`` uniform keys drawn from
            ``generator``, or from the global generator when None).

    A zero loss (still attached to ``anchors``' graph) is returned when no anchor is valid.
    """
    p, k = int(num_pos), int(num_neg)
    if p < 1 or k < 1 or not tau > 0:
        raise ConfigError(f"contrastive loss: need num_pos >= 1, num_neg >= 1 and tau > 0, got {p}, {k}, {tau}")
    b, s = anchors.shape[0], bank_feats.shape[0]
    if p > s or k > s or b == 0:
        return (anchors * 0).sum(), torch.zeros(b, dtype=torch.bool, device=anchors.device)
    bank = bank_feats.detach().to(anchors.dtype)
    with torch.no_grad():  # mining picks indices only; the gradient goes through _MinedSims
        sd = anchors.detach() @ bank.t()  # (B, S)
        labels = labels.to(sd.device).view(-1, 1)
        bank_labels = bank_labels.to(sd.device).view(1, -1)
        filled = bank_filled.to(sd.device).view(1, -1).bool()
        neg = (labels != bank_labels) & filled
        lo, pos_idx = _lowest_positives(sd, labels.view(-1), bank_labels.view(-1), filled.view(-1), p)
        hi, hard_idx = torch.where(neg, sd, -_INF).topk(k, dim=1)  # the K highest negatives
        valid = (lo != _INF).all(1) & (hi != -_INF).all(1)  # >= P positives and >= K negatives filled
        if random_neg is None:
            random_neg = draw_random_negatives(neg, k, generator, row_keys)
        idx = torch.cat([pos_idx, hard_idx, random_neg.to(sd.device, torch.long)], dim=1)
    sel = _MinedSims.apply(anchors, bank, sd, idx) / tau
    sp, hard, rnd = sel[:, :p], sel[:, p:p + k], sel[:, p + k:]
    lse_h = torch.logsumexp(hard, dim=1, keepdim=True)
    lse_r = torch.logsumexp(rnd, dim=1, keepdim=True)
    per_anchor = F.softplus(lse_h - sp).sum(1) + F.softplus(lse_r - sp).sum(1)  # sum of the 2P row CEs
    per_anchor = torch.where(valid, per_anchor, per_anchor * 0)
    rows = (2 * p) * valid.sum().to(per_anchor.dtype)
    return per_anchor.sum() / rows.clamp_min(1), valid


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


# -- random negatives ----------------------------------------------------------------------------
def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


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

    def forward(self, embeddings: dict[str, torch.Tensor], labels: torch.Tensor, indices: torch.Tensor) -> dict:
        """``{"loss", <branch>: float, "valid_frac_<branch>": float}`` for a batch of embeddings.

        ``embeddings[branch]`` is ``(B, D)`` unnormalised (the head's output); ``labels`` and
        ``indices`` are the batch's labels and dataset indices (the bank slots).
        """
        missing = [b for b in self.branches if b not in embeddings]
        if missing:
            raise ConfigError(f"loss: no {', '.join(missing)} embeddings (the head's branches must match the loss's)")
        dev = embeddings[self.branches[0]].device
        labels, indices = labels.to(dev, torch.long), indices.to(dev, torch.long)
        seed, step = self.rng.tolist()
        total, stats = None, []
        with torch.autocast(device_type=dev.type, enabled=False):
            for salt, name in enumerate(self.branches, start=1):
                z = l2_normalize(embeddings[name].float())
                bank = self.banks[name]
                bank.update(*gather_for_bank(z, labels, indices))  # overwrite BEFORE comparing
                feats, blabels, filled = bank.entries()
                part, valid = hard_mined_infonce(z, labels, feats, blabels, filled, self.num_pos, self.num_neg,
                                                 self.tau, row_keys=anchor_keys(seed, step, salt, indices))
                total = part if total is None else total + part
                stats += [part.detach(), valid.float().mean() if valid.numel() else part.detach() * 0]
        self.rng[1] += 1
        total = torch.where(total > 0, total, total * 0)  # released: added only when positive
        values = torch.stack(stats).tolist()  # one device sync for all the logged numbers
        out: dict = {"loss": self.weight * total}
        for i, name in enumerate(self.branches):
            out[name] = values[2 * i]
            out[f"valid_frac_{name}"] = values[2 * i + 1]
        return out

    def extra_repr(self) -> str:
        return (f"bank={self.bank_kind}, dim={self.dim}, P={self.num_pos}, K={self.num_neg}, tau={self.tau}, "
                f"weight={self.weight}, branches={self.branches}")
