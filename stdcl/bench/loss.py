"""``stdcl bench loss``: the batched hard-mined InfoNCE against the released per-anchor loop.

Both run in one process, interleaved, on the same bank, anchors and fixed random negatives;
each timing is forward + backward (what a training step pays), best of ``repeats``. What one
call dispatches is counted too (:func:`op_counts`: aten calls; on CUDA kernel launches and
host <-> device copies), for the batched loss and for a full :class:`STDCLLoss` step (both
branches, banks filled): launch overhead, not arithmetic, is what these small ops cost a GPU.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stdcl.head.loss import STDCLLoss, hard_mined_infonce, l2_normalize
from stdcl.head.sampling import draw_random_negatives


def loop_infonce(anchors: torch.Tensor, labels: torch.Tensor, bank_feats: torch.Tensor, bank_labels: torch.Tensor,
                 bank_filled: torch.Tensor, num_pos: int, num_neg: int, tau: float,
                 random_neg: torch.Tensor | None = None, py_rng: random.Random | None = None,
                 chosen: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The released ``ContrastLoss`` structure: per anchor, sort the whole masked bank row.

    Random negatives: fixed bank columns ``random_neg`` ``(B, K)``, or drawn as released with
    ``py_rng.sample(list(range(len(negatives))), K)``; ``chosen`` then receives each valid anchor's
    drawn bank columns (so the batched loss can be checked on the same draw).
    """
    n = anchors.shape[0]
    sims = anchors @ bank_feats.detach().to(anchors.dtype).t()
    same = (labels.view(n, 1) == bank_labels.view(1, -1)).float()
    filled = bank_filled.float().view(1, -1)
    pos_mask, neg_mask = same * filled, (1 - same) * filled
    rows = []
    for i in range(n):
        if pos_mask[i].sum() < num_pos or neg_mask[i].sum() < num_neg:
            continue
        pos = torch.masked_select(sims[i], pos_mask[i].bool())
        pos_hard = pos.sort(descending=False)[0][:num_pos].view(1, num_pos, 1)
        neg = torch.masked_select(sims[i], neg_mask[i].bool())
        neg_hard = neg.sort(descending=True)[0][:num_neg].view(1, 1, num_neg).expand(-1, num_pos, -1)
        if py_rng is not None:
            idx = py_rng.sample(list(range(len(neg))), k=num_neg)
            neg_rand = neg[idx].view(1, 1, num_neg).expand(-1, num_pos, -1)
            if chosen is not None:
                chosen[i] = neg_mask[i].bool().nonzero().view(-1)[torch.as_tensor(idx)]
        else:
            neg_rand = sims[i][random_neg[i]].view(1, 1, num_neg).expand(-1, num_pos, -1)
        hh = torch.cat([pos_hard, neg_hard], -1).view(num_pos, -1)
        hr = torch.cat([pos_hard, neg_rand], -1).view(num_pos, -1)
        rows.append(torch.cat([hh, hr], 0))
    if not rows:
        return torch.zeros(1, device=anchors.device)
    logits = torch.cat(rows, 0) / tau
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def op_counts(fn: Callable[[], object], device: torch.device) -> dict[str, int | None]:
    """What one call of ``fn`` dispatches: ``aten_ops`` (aten calls as the profiler lists them, nested ones
    included) and, on CUDA, ``kernels`` launched and ``htod`` / ``dtoh`` copies (None elsewhere, or when the
    profiler cannot tell)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    out: dict[str, int | None] = {"aten_ops": None, "kernels": None, "htod": None, "dtoh": None}
    try:
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            fn()
            if cuda:
                torch.cuda.synchronize(device)
        events = prof.events()
    except Exception:  # noqa: BLE001 - a profiler that cannot run here leaves the counts unknown
        return out
    out["aten_ops"] = sum(e.name.startswith("aten::") for e in events)
    if cuda:
        dev_events = [e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        out["htod"] = sum(n.startswith("Memcpy HtoD") for n in dev_events)
        out["dtoh"] = sum(n.startswith("Memcpy DtoH") for n in dev_events)
        out["kernels"] = sum(not n.startswith(("Memcpy", "Memset")) for n in dev_events)
    return out


def module_step_counts(bank_size: int, dim: int, batch: int, num_classes: int, num_pos: int, num_neg: int,
                       device: torch.device, seed: int = 0) -> dict[str, int | None]:
    """:func:`op_counts` of one :class:`STDCLLoss` forward + backward (both branches, every slot filled), after
    two warm-up steps (the constants cached per device are built then)."""
    g = torch.Generator().manual_seed(seed)
    slot_labels = torch.randperm(bank_size, generator=g) % num_classes
    loss = STDCLLoss(dim=dim, num_pos=num_pos, num_neg=num_neg, slot_labels=slot_labels, num_classes=num_classes,
                     seed=seed)
    with torch.no_grad():
        for bank in loss.banks.values():
            bank.feats.copy_(l2_normalize(torch.randn(bank.feats.shape, generator=g)))
            bank.filled.fill_(True)
    loss = loss.to(device)
    idx = torch.randperm(bank_size, generator=g)[:batch]
    emb = {b: torch.randn(batch, dim, generator=g).to(device) for b in loss.branches}
    labels, idx = slot_labels[idx].to(device), idx.to(device)

    def step() -> None:
        loss({k: v.clone().requires_grad_(True) for k, v in emb.items()}, labels, idx)["loss"].backward()

    step(), step()
    return op_counts(step, device)


def bench_loss(bank_size: int = 40000, dim: int = 256, batch: int = 64, num_classes: int = 60, repeats: int = 3,
               num_pos: int = 128, num_neg: int = 512, tau: float = 0.8, seed: int = 0,
               device: str | None = None) -> dict:
    """Time the batched loss and the per-anchor loop on one full random bank; print and return the numbers.

    ``device``: ``cpu`` (default) or ``cuda``; inputs are drawn on the CPU with ``seed`` either way.
    """
    dev = torch.device(device or "cpu")
    g = torch.Generator().manual_seed(seed)
    bank_labels = torch.randperm(bank_size, generator=g) % num_classes
    bank = l2_normalize(torch.randn(bank_size, dim, generator=g))
    filled = torch.ones(bank_size, dtype=torch.bool)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    base = l2_normalize(torch.randn(batch, dim, generator=g))
    neg = (labels.view(-1, 1) != bank_labels.view(1, -1)) & filled.view(1, -1)
    rneg = draw_random_negatives(neg, num_neg, g)
    bank_labels, bank, filled, labels, base, rneg = (t.to(dev) for t in (bank_labels, bank, filled, labels, base, rneg))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def run(fn):
        a = base.clone().requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        loss = fn(a)
        if loss.requires_grad:  # the released loop returns a constant zero when no anchor is valid
            loss.sum().backward()
        sync()
        grad = a.grad if a.grad is not None else torch.zeros_like(a)
        return time.perf_counter() - t0, float(loss.detach().sum()), grad

    valid = hard_mined_infonce(base, labels, bank, bank_labels, filled, num_pos, num_neg, tau, random_neg=rneg)[1]
    # 1) same value: the loop draws its random negatives as released; the batched loss reuses them
    chosen: dict[int, torch.Tensor] = {}
    _, vl, gl = run(lambda a: loop_infonce(a, labels, bank, bank_labels, filled, num_pos, num_neg, tau,
                                           py_rng=random.Random(seed), chosen=chosen))
    same_neg = rneg.clone()
    for i, cols in chosen.items():
        same_neg[i] = cols.to(same_neg.device)
    _, vb, gb = run(lambda a: hard_mined_infonce(a, labels, bank, bank_labels, filled, num_pos, num_neg, tau,
                                                 random_neg=same_neg)[0])
    # 2) time: each draws its own random negatives (the loop with random.sample, as released)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batched = lambda a: hard_mined_infonce(a, labels, bank, bank_labels, filled, num_pos, num_neg, tau,  # noqa: E731
                                           generator=gen)[0]
    py_rng = random.Random(seed)
    loop = lambda a: loop_infonce(a, labels, bank, bank_labels, filled, num_pos, num_neg, tau,  # noqa: E731
                                  py_rng=py_rng)
    run(batched), run(loop)  # warm-up
    ops = op_counts(lambda: run(batched), dev)
    module_ops = module_step_counts(bank_size, dim, batch, num_classes, num_pos, num_neg, dev, seed)
    t_b, t_l = [], []
    for _ in range(repeats):  # interleaved
        t_l.append(run(loop)[0])
        t_b.append(run(batched)[0])
    row = {"bank_size": bank_size, "dim": dim, "batch": batch, "num_classes": num_classes, "P": num_pos,
           "K": num_neg, "loop_s": min(t_l), "batched_s": min(t_b), "speedup": min(t_l) / min(t_b),
           "loss_loop": vl, "loss_batched": vb, "max_loss_diff": abs(vl - vb),
           "max_grad_diff": float((gl - gb).abs().max()), "threads": torch.get_num_threads(), "device": str(dev),
           "valid_anchors": int(valid.sum()), "ops": ops, "module_step_ops": module_ops}
    print(f"bank {bank_size} x {dim}, batch {batch}, {num_classes} classes, P={num_pos}, K={num_neg}, "
          f"forward+backward, best of {repeats} (interleaved), {dev}, {row['threads']} CPU threads; "
          f"{row['valid_anchors']}/{batch} anchors valid")
    print(f"  per-anchor loop (released structure, random.sample): {row['loop_s'] * 1e3:9.2f} ms")
    print(f"  batched top-k:                                      {row['batched_s'] * 1e3:9.2f} ms")
    print(f"  speed-up {row['speedup']:.1f}x; loss {vb:.6f} vs {vl:.6f} (|diff| {row['max_loss_diff']:.2e}); "
          f"max |grad diff| {row['max_grad_diff']:.2e}")
    for what, c in (("batched call", ops), ("STDCLLoss step (2 branches)", module_ops)):
        cuda = f", {c['kernels']} kernels, {c['htod']} HtoD / {c['dtoh']} DtoH copies" if c["kernels"] is not None else ""
        print(f"  one {what}: {c['aten_ops']} aten ops{cuda}")
    return row
