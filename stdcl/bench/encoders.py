"""``stdcl bench encoders``: per-sample forward / forward+backward time, parameters and FLOPs."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from stdcl.encoders import available, build_encoder
from stdcl.encoders.registry import spec


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_encoders(names: list[str] | None = None, batch: int = 16, window: int = 64, repeats: int = 3,
                   device: str | None = None, amp: bool = False) -> list[dict]:
    """Time each encoder on NTU-sized input (3, window, 25, 2); returns and prints one row each."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    print(f"device {device}, batch {batch}, input (3, {window}, 25, 2), best of {repeats}, amp={amp}")
    print(f"{'encoder':<12}{'params':>11}{'GFLOPs/sample':>15}{'paper':>8}{'fwd ms/sample':>15}{'fwd+bwd ms/sample':>19}")
    for name in names or available():
        model = build_encoder(name, num_classes=60, window=window).to(device)
        x = torch.randn(batch, 3, window, 25, 2, device=device)
        params = sum(p.numel() for p in model.parameters())
        model.eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(x[:1])
        gflops = fc.get_total_flops() / 2 / 1e9  # multiply-accumulates, as papers count
        dtype = torch.bfloat16 if device == "cpu" else torch.float16
        ctx = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=dtype)) if amp else \
            (lambda: torch.autocast(device_type=device.split(":")[0], enabled=False))

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def fwd():
            with torch.no_grad(), ctx():
                model(x)
            sync()

        def fwd_bwd():
            model.zero_grad(set_to_none=True)
            with ctx():
                loss = model(x).float().logsumexp(1).mean()
            loss.backward()
            sync()

        t_f = _time(fwd, repeats) / batch * 1e3
        model.train()
        t_fb = _time(fwd_bwd, repeats) / batch * 1e3
        paper = spec(name).paper_gflops  # the paper's FLOPs per NTU sample (encoders.md), None if not stated
        row = {"encoder": name, "params": params, "gflops": gflops, "paper_gflops": paper,
               "forward_ms": t_f, "forward_backward_ms": t_fb, "device": device}
        rows.append(row)
        print(f"{name:<12}{params:>11,}{gflops:>15.2f}{(f'{paper:.2f}' if paper else '-'):>8}{t_f:>15.2f}{t_fb:>19.2f}")
    return rows
