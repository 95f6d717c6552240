"""``stdcl bench train-step``: the STD-CL training-step overhead over the plain encoder.

In one process, interleaved (baseline, STD-CL, baseline, ...), the time of one full training
step (forward, cross-entropy [+ contrastive], backward, SGD step) of the encoder alone and of
encoder + decoupling head + loss, on NTU-sized input ``(B, 3, 64, 25, 2)``, 60 classes. The
banks are pre-filled with random unit vectors (``bank_size`` slots spread evenly over the
classes: NTU60 X-Sub has ~40k training samples) so every anchor is valid and the mining runs
at full cost. Reports the median of each and the overhead ratio (target <= 5 %).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train_step(encoder: str = "ctrgcn", batch: int = 16, window: int = 64, repeats: int = 10,
                     warmup: int = 2, bank_size: int = 40_000, num_classes: int = 60, device: str | None = None,
                     amp: bool = False, num_pos: int = 128, num_neg: int = 512) -> dict[str, Any]:
    """Median step times (s) of the baseline and the STD-CL step, and their ratio; also printed."""
    from stdcl.encoders import build_encoder
    from stdcl.head.model import build_stdcl_model

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    enc = build_encoder(encoder, num_classes=num_classes, window=window)
    per_class = max(bank_size // num_classes, 1)
    slot_labels = torch.arange(num_classes).repeat_interleave(per_class)
    base = build_stdcl_model(copy.deepcopy(enc), window, None, None).to(dev)
    full = build_stdcl_model(copy.deepcopy(enc), window, {"reduction": 8, "dim": 256},
                             {"num_pos": num_pos, "num_neg": num_neg}, slot_labels=slot_labels,
                             num_classes=num_classes).to(dev)
    with torch.no_grad():
        for bank in full.loss.banks.values():
            bank.feats.copy_(F.normalize(torch.randn_like(bank.feats), dim=1))
            bank.filled.fill_(True)
    opt = {m: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9, nesterov=True, weight_decay=4e-4)
           for m in (base, full)}
    x = torch.randn(batch, 3, window, 25, 2, device=dev)
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
    scaler = {m: torch.amp.GradScaler(dev.type, enabled=amp and dtype == torch.float16) for m in (base, full)}

    def step(model: torch.nn.Module) -> tuple[float, float]:
        idx = torch.randint(0, slot_labels.numel(), (batch,), generator=g)
        y = slot_labels[idx].to(dev)
        idx = idx.to(dev)
        _sync(dev)
        t0 = time.perf_counter()
        opt[model].zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=amp):
            out = model(x, labels=y, indices=idx)
        loss = F.cross_entropy(out["logits"].float(), y)
        valid = 1.0
        if "contrastive" in out:
            loss = loss + out["contrastive"]["loss"]
            valid = out["contrastive"].get("valid_frac_spatial", 1.0)
        scaler[model].scale(loss).backward()
        scaler[model].step(opt[model])
        scaler[model].update()
        _sync(dev)
        return time.perf_counter() - t0, valid

    base.train()
    full.train()
    for _ in range(warmup):
        step(base)
        step(full)
    tb, tf, valid = [], [], []
    for _ in range(repeats):
        tb.append(step(base)[0])
        t, v = step(full)
        tf.append(t)
        valid.append(v)
    mb, mf = statistics.median(tb), statistics.median(tf)
    head_params = sum(p.numel() for p in full.head.parameters())
    row = {"encoder": encoder, "device": str(dev), "batch": batch, "window": window, "amp": amp,
           "bank_size": int(slot_labels.numel()), "baseline_s": mb, "stdcl_s": mf, "overhead": mf / mb - 1,
           "valid_frac": statistics.mean(valid), "head_parameters": head_params, "repeats": repeats}
    print(f"{encoder} on {dev}, batch {batch}, input (3, {window}, 25, 2), {num_classes} classes, amp={amp}, "
          f"bank {row['bank_size']} slots x 2, P={num_pos} K={num_neg}, median of {repeats} interleaved steps")
    print(f"  encoder alone:           {1e3 * mb:9.1f} ms/step")
    print(f"  encoder + STD-CL head:   {1e3 * mf:9.1f} ms/step   (valid anchors {100 * row['valid_frac']:.0f}%, "
          f"head {head_params:,} parameters)")
    print(f"  overhead:                {100 * row['overhead']:+9.1f} %   (target <= 5 %)")
    return row
