"""Random negatives for the STD-CL loss: counter-based hashing and sampling without replacement.

A row's draws are a pure function of its int64 key (splitmix64 of the key and a counter), so
an anchor draws the same bank columns whichever rank or batch position it has, on CPU and CUDA
alike. The hashing runs in place on one ``(rows, m)`` tensor; the hashed counters and the small
constants it needs are built once per device (:func:`const`) instead of being copied each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685  # splitmix64, int64
_U64 = 0xFFFFFFFFFFFFFFFF

_CONSTS: dict[tuple, torch.Tensor] = {}


def const(device: torch.device, key: tuple, make: Callable[[torch.device], torch.Tensor]) -> torch.Tensor:
    """The constant ``make(device)``, built once per ``(device, key)`` (outside autograd and inference mode)."""
    t = _CONSTS.get((device, *key))
    if t is None:
        with torch.inference_mode(False), torch.no_grad():
            t = _CONSTS[(device, *key)] = make(device)
    return t


def scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached 0-dim tensor on ``device`` (``torch.where`` with a python number would build one per call)."""
    return const(device, ("scalar", dtype, repr(value)), lambda d: torch.full((), value, dtype=dtype, device=d))


def arange(n: int, device: torch.device) -> torch.Tensor:
    """``arange(n)`` as a view of a cached, grown-on-demand int64 range."""
    t = _CONSTS.get((device, "arange"))
    if t is None or t.numel() < n:
        with torch.inference_mode(False), torch.no_grad():
            size = max(n, 2 * (t.numel() if t is not None else 256))
            t = _CONSTS[(device, "arange")] = torch.arange(size, device=device)
    return t[:n]


def _lsr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return torch.bitwise_right_shift(x, n).bitwise_and_((1 << (64 - n)) - 1)


def _mix_(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on an int64 tensor, in place (multiplication wraps modulo 2**64)."""
    x.add_(_GOLDEN)
    x.bitwise_xor_(_lsr(x, 30)).mul_(_MIX1)
    x.bitwise_xor_(_lsr(x, 27)).mul_(_MIX2)
    return x.bitwise_xor_(_lsr(x, 31))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def _base(seed: int, step: int, salt: int) -> int:
    """The int64 key of (seed, step, branch salt), on the host."""
    x = 0
    for v in (seed, step, salt):
        x = _splitmix64(x ^ (int(v) & _U64))
    return x - (1 << 64) if x >= 1 << 63 else x


def anchor_keys(seed: int, step: int, salt: int, indices: torch.Tensor) -> torch.Tensor:
    """Per-anchor random keys from (seed, step, branch salt, the anchor's dataset index)."""
    return _mix_(indices.to(torch.long) ^ _base(seed, step, salt))


def branch_keys(seed: int, step: int, salts: Sequence[int], indices: torch.Tensor) -> torch.Tensor:
    """``(len(salts), B)``: :func:`anchor_keys` of every branch salt, hashed in one pass."""
    indices = indices.to(torch.long)
    keys = indices.new_empty((len(salts), indices.numel()))
    for row, salt in zip(keys, salts):
        torch.bitwise_xor(indices, _base(seed, step, salt), out=row)
    return _mix_(keys)


def _hashed_counters(start: int, n: int, device: torch.device) -> torch.Tensor:
    return const(device, ("counters", start, n), lambda d: _mix_(torch.arange(start, start + n, device=d)))


def _uniform_bits(keys: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """``(R, n)`` non-negative 53-bit integers, a pure function of (row key, counter) for ``keys (R, 1)`` and the
    counters ``start .. start + n - 1``: ``splitmix64(key ^ splitmix64(counter)) >> 11``."""
    x = _mix_(torch.bitwise_xor(keys, _hashed_counters(start, n, keys.device)))
    return x.bitwise_right_shift_(11).bitwise_and_((1 << 53) - 1)


def _candidates(k: int) -> int:
    """Candidates drawn per row: enough for ``k`` survivors when most of the row is negative."""
    return k + k // 4 + 64


def first_draws(neg: torch.Tensor, num_neg: int, generator: torch.Generator | None = None,
                row_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequential part of :func:`draw_random_negatives`: ``(out (B, K), short (B,) bool)``.

    ``short`` marks rows where fewer than ``K`` distinct negatives survived; their columns are
    still to be replaced by :func:`fill_short`. Never synchronises with the device.
    """
    b, s = neg.shape
    k = int(num_neg)
    m = _candidates(k)
    if row_keys is not None:
        cand = _uniform_bits(row_keys.to(neg.device, torch.long).view(b, 1), 0, m).remainder_(s)
    else:
        dev = generator.device if generator is not None else neg.device
        cand = torch.randint(0, s, (b, m), generator=generator, device=dev).to(neg.device)
    srt, pos = cand.sort(dim=1, stable=True)  # equal columns stay in draw order
    ok = neg.gather(1, srt)
    ok[:, 1:].bitwise_and_(srt[:, 1:] != srt[:, :-1])  # a column's later draws are repeats
    first, keep = torch.where(ok, pos, scalar(m, torch.long, neg.device)).topk(k, dim=1, largest=False)
    return srt.gather(1, keep), first[:, -1] == m  # survivors in draw order; short: a k-th one is missing


def fill_short(out: torch.Tensor, short: torch.Tensor, neg: torch.Tensor, generator: torch.Generator | None = None,
               row_keys: torch.Tensor | None = None) -> None:
    """Replace, in place, the ``short`` rows of ``out`` by the ``K`` largest of uniform keys over the row's negatives."""
    b, s = neg.shape
    k = out.shape[1]
    m = _candidates(k)
    rows = short.nonzero().view(-1)
    if row_keys is not None:
        u = _uniform_bits(row_keys.to(neg.device, torch.long).view(b, 1)[rows], m, s).double()
    else:
        dev = generator.device if generator is not None else neg.device
        u = torch.rand((rows.numel(), s), generator=generator, device=dev).to(neg.device)
    out[rows] = torch.where(neg[rows], u, scalar(-1.0, u.dtype, u.device)).topk(k, dim=1).indices


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
    out, short = first_draws(neg, num_neg, generator, row_keys)
    if bool(short.any()):
        fill_short(out, short, neg, generator, row_keys)
    return out
