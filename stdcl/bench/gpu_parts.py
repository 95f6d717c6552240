"""Parts 1-4 of ``stdcl bench gpu``: environment, loss, AMP and train-step figures (in-process)."""

from __future__ import annotations

import copy
import platform
import time
from typing import Any

import torch
import torch.nn.functional as F

from stdcl.bench.gpu_context import Context, deterministic
from stdcl.logs import progress

#: Loss part sizes: the issue's NTU-sized figure (bank 40,000 x 256, batch 64, P=128, K=512) and a tiny one.
LOSS_SIZES = {"full": dict(bank=40_000, dim=256, batch=64, classes=60, P=128, K=512, repeats=3),
              "tiny": dict(bank=2_000, dim=32, batch=8, classes=10, P=8, K=32, repeats=1)}
#: Device vs CPU on the same embeddings and banks, both float32 (TF32 off, torch's default).
LOSS_TOL = 1e-5
#: AMP part: NTU-sized input (3, T, 25, 2), banks pre-filled so the contrastive term is active at step 1.
AMP_SIZES = {"full": dict(classes=60, window=64, batch=16, steps=30, P=128, K=512, per_class=160, dim=256),
             "tiny": dict(classes=10, window=16, batch=4, steps=3, P=4, K=16, per_class=8, dim=32)}
#: A fine-tuning-sized rate (SGD, Nesterov momentum 0.9): on fresh random batches every step, the
#: recipe's 0.1 makes the trajectory chaotic, so any rounding difference would be amplified to O(1).
AMP_LR = 0.005
#: Tolerances of the AMP runs against fp32 from the same seed, weights and batches, with deterministic
#: kernels and dropout off (CUDA's fused dropout draws its masks differently per dtype, so an fp16 and an
#: fp32 run would otherwise train on different masks from step 1: measured 3.6 % on HCN's first loss).
#: - ``forward``: |loss_amp - loss_fp32| / loss_fp32 at step 1 (same weights, same batch): autocast
#:   rounding alone (fp16: 11-bit, bf16: 8-bit mantissa, accumulated through a deep network).
#: - ``final``: the mean loss of the last :data:`AMP_TAIL` steps against fp32's: training under AMP
#:   reaches what fp32 reaches. Step-by-step agreement is not asked for: on fresh random batches a
#:   30-step trajectory amplifies any rounding difference (two fp32 runs differing only in cuDNN's
#:   accumulation order already part after ~5 steps; measured on the H200, results/gpu/). A wrong scale, a
#:   skipped unscale or a cast bug gives O(1) differences in both figures.
#: The GradScaler's skipped steps (fp16 overflow while its scale calibrates down from 2**16) are
#: compared with an fp32 run that skips the same steps. Overflows after :data:`AMP_WARMUP` steps are
#: reported (the scaler handles them by skipping the step and halving its scale).
AMP_TOL = {"float16": {"forward": 0.01, "final": 0.05}, "bfloat16": {"forward": 0.03, "final": 0.05}}
AMP_TAIL = 10
#: GradScaler steps at the start where an overflow (the scale calibrating down from 2**16) is expected.
AMP_WARMUP = 5
#: Train-step part sizes (``stdcl bench train-step``'s defaults, and a tiny one).
STEP_SIZES = {"full": dict(batch=16, window=64, repeats=10, warmup=3, bank=40_000, P=128, K=512),
              "tiny": dict(batch=4, window=16, repeats=1, warmup=0, bank=600, P=4, K=16)}
#: Encoders of the AMP and train-step parts with --tiny (CPU fp16 convolutions take seconds per step, so
#: AMP runs HCN alone; the train step adds a BatchNorm encoder); without --tiny every registered encoder runs.
TINY_ENCODERS = {"amp": ("hcn",), "train_step": ("hcn", "agcn")}
STEP_GOAL = 1.05


def _size(ctx: Context, table: dict[str, dict]) -> dict:
    return dict(table["tiny" if ctx.tiny else "full"])


def _encoders(ctx: Context, part: str) -> list[str]:
    from stdcl.encoders import available

    names = available()
    return [n for n in names if n in TINY_ENCODERS[part]] if ctx.tiny else names


# -- 1. environment ------------------------------------------------------------------------------
def environment(ctx: Context, res: dict[str, Any]) -> None:
    """Versions, the GPU, its memory and bf16 support."""
    import numpy

    import stdcl

    res.update(python=platform.python_version(), torch=torch.__version__, numpy=numpy.__version__,
               stdcl=stdcl.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               cpu_threads=torch.get_num_threads(), machine=platform.machine(), device=str(ctx.device),
               tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    if ctx.cuda:
        p = torch.cuda.get_device_properties(ctx.device)
        res.update(gpu=p.name, gpu_count=torch.cuda.device_count(), memory_gib=round(p.total_memory / 2**30, 2),
                   capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                   bf16=torch.cuda.is_bf16_supported(), nccl=_nccl_version(),
                   driver_free_gib=round(torch.cuda.mem_get_info(ctx.device)[0] / 2**30, 2))
    else:
        res.update(gpu=None, gpu_count=0, memory_gib=None, bf16=None, nccl=None)
    res["headline"] = (f"{res['gpu'] or 'CPU'}, torch {res['torch']}, CUDA {res['cuda']}, cuDNN {res['cudnn']}, "
                       f"bf16 {res['bf16']}")


def _nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 - a build without NCCL
        return None
    return ".".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


# -- 2. loss ---------------------------------------------------------------------------------------
def _filled_loss(s: dict, seed: int = 0):
    """An :class:`STDCLLoss` with every bank slot filled by random unit vectors, and a batch for it."""
    from stdcl.head.loss import STDCLLoss

    g = torch.Generator().manual_seed(seed)
    slot_labels = torch.randperm(s["bank"], generator=g) % s["classes"]
    loss = STDCLLoss(dim=s["dim"], num_pos=s["P"], num_neg=s["K"], slot_labels=slot_labels,
                     num_classes=s["classes"], seed=seed)
    with torch.no_grad():
        for bank in loss.banks.values():
            bank.feats.copy_(F.normalize(torch.randn(bank.feats.shape, generator=g), dim=1))
            bank.filled.fill_(True)
    idx = torch.randperm(s["bank"], generator=g)[: s["batch"]]
    emb = {b: torch.randn(s["batch"], s["dim"], generator=g) for b in loss.branches}
    return loss, emb, slot_labels[idx], idx


def _loss_on(loss, emb: dict, labels: torch.Tensor, idx: torch.Tensor, dev: torch.device):
    loss = copy.deepcopy(loss).to(dev)
    e = {k: v.detach().to(dev).requires_grad_(True) for k, v in emb.items()}  # leaves on ``dev``
    out = loss(e, labels.to(dev), idx.to(dev))
    out["loss"].backward()
    return (float(out["loss"].detach()), {k: v.grad.detach().cpu() for k, v in e.items()},
            {k: b.feats.detach().cpu() for k, b in loss.banks.items()},
            {k: out[f"valid_frac_{k}"] for k in loss.branches})


def loss_check(ctx: Context, res: dict[str, Any]) -> None:
    """The STD-CL loss on the device equals its CPU value; the batched loss vs the released loop."""
    from stdcl.bench.loss import bench_loss

    s = _size(ctx, LOSS_SIZES)
    res["sizes"] = s
    loss, emb, labels, idx = _filled_loss(s)
    v_cpu, g_cpu, b_cpu, valid = _loss_on(loss, emb, labels, idx, torch.device("cpu"))
    ctx.sync()
    v_dev, g_dev, b_dev, _ = _loss_on(loss, emb, labels, idx, ctx.device)
    grad_diff = max(float((g_cpu[k] - g_dev[k]).abs().max()) for k in g_cpu)
    bank_diff = max(float((b_cpu[k] - b_dev[k]).abs().max()) for k in b_cpu)
    res["device_vs_cpu"] = {"loss_cpu": v_cpu, "loss_device": v_dev, "abs_diff": abs(v_cpu - v_dev),
                            "max_grad_diff": grad_diff, "max_bank_diff": bank_diff, "tolerance": LOSS_TOL,
                            "valid_frac": valid, "equal": abs(v_cpu - v_dev) <= LOSS_TOL and grad_diff <= LOSS_TOL
                            and bank_diff <= LOSS_TOL}
    ctx.save()
    ctx.check_time("the batched-vs-loop timing")
    row = bench_loss(bank_size=s["bank"], dim=s["dim"], batch=s["batch"], num_classes=s["classes"],
                     repeats=s["repeats"], num_pos=s["P"], num_neg=s["K"], device=str(ctx.device))
    row["goal_speedup"] = 50.0 if ctx.cuda else None
    res["batched_vs_loop"] = row
    res["checks"] = {"device_equals_cpu": res["device_vs_cpu"]["equal"],
                     "batched_equals_loop": row["max_loss_diff"] <= 1e-4 and row["max_grad_diff"] <= 1e-4,
                     "speedup_goal": None if not ctx.cuda else row["speedup"] >= 50.0}
    res["headline"] = (f"device-CPU |diff| {abs(v_cpu - v_dev):.1e}; batched {1e3 * row['batched_s']:.2f} ms vs "
                       f"loop {1e3 * row['loop_s']:.1f} ms ({row['speedup']:.1f}x)")


# -- 3. AMP ----------------------------------------------------------------------------------------
def _amp_model(name: str, s: dict):
    from stdcl.encoders import build_encoder
    from stdcl.head.model import build_stdcl_model

    torch.manual_seed(0)
    slot_labels = torch.arange(s["classes"]).repeat_interleave(s["per_class"])
    enc = build_encoder(name, num_classes=s["classes"], window=s["window"])
    for m in enc.modules():  # see AMP_TOL: the same (no) dropout mask in every precision
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    model = build_stdcl_model(enc, s["window"], {"reduction": 8, "dim": s["dim"]},
                              {"num_pos": s["P"], "num_neg": s["K"]}, slot_labels=slot_labels,
                              num_classes=s["classes"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bank in model.loss.banks.values():
            bank.feats.copy_(F.normalize(torch.randn(bank.feats.shape, generator=g), dim=1))
            bank.filled.fill_(True)
    batches = []
    for _ in range(s["steps"]):
        i = torch.randint(0, slot_labels.numel(), (s["batch"],), generator=g)
        y = slot_labels[i]
        # a class-dependent offset: a learnable signal, so the losses fall as in real training
        x = torch.randn(s["batch"], 3, s["window"], 25, 2, generator=g) + 0.5 * (y.view(-1, 1, 1, 1, 1) % 3 - 1)
        batches.append((x, y, i))
    return model, batches


def _train(model, batches, dtype: torch.dtype | None, ctx: Context, skip: frozenset[int] = frozenset()) -> dict:
    """STD-CL steps under autocast ``dtype`` (None: fp32), GradScaler for fp16, as the engine steps;
    ``skip``: steps whose optimiser step is left out (what the GradScaler does on an overflow)."""
    dev = ctx.device
    model = copy.deepcopy(model).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=AMP_LR, momentum=0.9, nesterov=True, weight_decay=4e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(1)  # the same dropout masks in every precision
    losses, overflow_steps, scales = [], [], []
    ctx.sync()
    t0 = time.perf_counter()
    for step, (x, y, i) in enumerate(batches):
        x, y, i = x.to(dev), y.to(dev), i.to(dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, labels=y, indices=i)
        loss = F.cross_entropy(out["logits"].float(), y) + out["contrastive"]["loss"]
        scaler.scale(loss).backward()
        before = scaler.get_scale() if scaler.is_enabled() else None
        if step not in skip:
            scaler.step(opt)
        scaler.update()
        if before is not None:
            scales.append(scaler.get_scale())
            if scaler.get_scale() < before:
                overflow_steps.append(step)
        losses.append(float(loss.detach()))
    ctx.sync()
    seconds = time.perf_counter() - t0
    params = torch.cat([p.detach().float().cpu().flatten() for p in model.parameters()])
    peak = torch.cuda.max_memory_allocated(dev) if ctx.cuda else None
    return {"losses": losses, "params": params, "overflow_steps": overflow_steps, "final_scale": scales[-1]
            if scales else None, "seconds": seconds, "peak_memory_mib": None if peak is None else peak / 2**20}


def _compare(r: dict, ref: dict, theta0: torch.Tensor, key: str) -> dict[str, Any]:
    moved = float((ref["params"] - theta0).norm())
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(r["losses"], ref["losses"])]
    tail = [sum(x["losses"][-AMP_TAIL:]) / len(x["losses"][-AMP_TAIL:]) for x in (r, ref)]
    e = {"forward_rel_diff": rel[0], "final_rel_diff": abs(tail[0] - tail[1]) / max(abs(tail[1]), 1e-12),
         "max_rel_loss_diff": max(rel), "update_norm_fp32": moved,
         "param_diff_rel_update": float((r["params"] - ref["params"]).norm()) / max(moved, 1e-12),
         "param_diff_rel_norm": float((r["params"] - ref["params"]).norm() / ref["params"].norm()),
         "overflows_after_warmup": sum(1 for st in r["overflow_steps"] if st >= AMP_WARMUP)}
    tol = AMP_TOL[key]
    e["within_tolerance"] = e["forward_rel_diff"] <= tol["forward"] and e["final_rel_diff"] <= tol["final"]
    return e


def _amp_encoder(name: str, s: dict, ctx: Context) -> dict[str, Any]:
    model, batches = _amp_model(name, s)
    theta0 = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    with deterministic():
        repeat = _train(model, batches, None, ctx)  # the noise floor: fp32 again (0 when kernels are deterministic)
        runs = {"float32": _train(model, batches, None, ctx),
                "float16": _train(model, batches, torch.float16, ctx),
                "bfloat16": _train(model, batches, torch.bfloat16, ctx)}
    skipped = frozenset(runs["float16"]["overflow_steps"])
    # fp16's reference: fp32 leaving out the optimiser steps the GradScaler skipped
    with deterministic():
        ref16 = _train(model, batches, None, ctx, skip=skipped) if skipped else runs["float32"]
    row: dict[str, Any] = {}
    for key, r in runs.items():
        row[key] = {k: v for k, v in r.items() if k != "params"} | {"s_per_step": r["seconds"] / len(batches)}
    row["float16"] |= _compare(runs["float16"], ref16, theta0, "float16") | {
        "reference": "float32 skipping steps " + str(sorted(skipped)) if skipped else "float32"}
    row["bfloat16"] |= _compare(runs["bfloat16"], runs["float32"], theta0, "bfloat16") | {"reference": "float32"}
    row["loss_fell"] = runs["float32"]["losses"][-1] < runs["float32"]["losses"][0]
    row["float32_repeat_max_rel_loss_diff"] = max(abs(a - b) / max(abs(b), 1e-12)
                                                  for a, b in zip(repeat["losses"], runs["float32"]["losses"]))
    return row


def amp_check(ctx: Context, res: dict[str, Any]) -> None:
    """fp32, fp16 (GradScaler) and bf16 training of every encoder from one seed: agreement, overflows, memory."""
    s = _size(ctx, AMP_SIZES)
    res.update(sizes=s, lr=AMP_LR, tolerances=AMP_TOL, tail_steps=AMP_TAIL, warmup_steps=AMP_WARMUP,
               dropout="off", deterministic=True, encoders={}, errors={})
    for name in progress(_encoders(ctx, "amp"), "amp", unit="encoder"):
        ctx.check_time(f"encoder {name}")
        try:
            res["encoders"][name] = _amp_encoder(name, s, ctx)
        except Exception as e:  # noqa: BLE001 - one encoder's failure must not hide the others' figures
            res["errors"][name] = f"{type(e).__name__}: {e}".splitlines()[0]
        ctx.save()
    rows = res["encoders"].values()
    ok = [r[k]["within_tolerance"] for r in rows for k in AMP_TOL]
    res["checks"] = {"all_within_tolerance": bool(ok) and all(ok), "no_overflow_after_warmup": all(
        r["float16"]["overflows_after_warmup"] == 0 for r in rows)}
    worst = {(k, f): max((r[k][f"{f}_rel_diff"] for r in rows), default=float("nan"))
             for k in AMP_TOL for f in ("forward", "final")}
    res["headline"] = (f"{len(res['encoders'])} encoders; worst forward / final-loss rel diff fp16 "
                       f"{worst['float16', 'forward']:.1e} / {worst['float16', 'final']:.1e}, bf16 "
                       f"{worst['bfloat16', 'forward']:.1e} / {worst['bfloat16', 'final']:.1e}; "
                       f"within tolerance: {res['checks']['all_within_tolerance']}")
    if res["errors"]:
        raise RuntimeError(f"AMP failed for {', '.join(res['errors'])}: {next(iter(res['errors'].values()))}")


# -- 4. train step ---------------------------------------------------------------------------------
def train_step_check(ctx: Context, res: dict[str, Any]) -> None:
    """``stdcl bench train-step`` per encoder, fp32 and AMP: STD-CL / plain step time and samples/s."""
    from stdcl.train.bench import bench_train_step

    s = _size(ctx, STEP_SIZES)
    res.update(sizes=s, goal_ratio=STEP_GOAL, encoders={})
    for name in progress(_encoders(ctx, "train_step"), "train-step", unit="encoder"):
        row = {}
        for amp in (False, True):
            ctx.check_time(f"encoder {name} (amp={amp})")
            r = bench_train_step(name, batch=s["batch"], window=s["window"], repeats=s["repeats"],
                                 warmup=s["warmup"], bank_size=s["bank"], device=str(ctx.device), amp=amp,
                                 num_pos=s["P"], num_neg=s["K"])
            r["ratio"] = r["stdcl_s"] / r["baseline_s"]
            r["samples_per_s_stdcl"] = s["batch"] / r["stdcl_s"]
            r["samples_per_s_baseline"] = s["batch"] / r["baseline_s"]
            r["amp_dtype"] = None if not amp else ("float16" if ctx.cuda else "bfloat16")
            row["amp" if amp else "fp32"] = r
            res["encoders"][name] = row
            ctx.save()
    ctx.shared["train_step"] = res["encoders"]
    ratios = {n: round(r["fp32"]["ratio"], 3) for n, r in res["encoders"].items()}
    res["checks"] = {"ratio_goal": None if not ctx.cuda else all(
        r[k]["ratio"] <= STEP_GOAL for r in res["encoders"].values() for k in ("fp32", "amp"))}
    res["headline"] = f"STD-CL / plain step (fp32): {ratios}"


__all__ = ["AMP_SIZES", "AMP_TOL", "LOSS_SIZES", "LOSS_TOL", "STEP_SIZES", "amp_check", "environment",
           "loss_check", "train_step_check"]
