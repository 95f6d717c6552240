"""Data-parallel helpers: torchrun set-up (NCCL on GPU, gloo on CPU) and synchronised BatchNorm.

Launch: ``torchrun --nproc_per_node 4 -m stdcl train ...`` (or ``--nnodes/--node_rank`` /
``--rdzv_endpoint`` for several machines). Every rank trains on its shard of each global
batch (``train.batch_size`` is the global batch); the STD-CL banks are updated from the
embeddings, labels and indices of all ranks (``gather_for_bank``) so every rank holds the
same bank; only rank 0 writes files.

``torch.nn.SyncBatchNorm`` runs on GPUs only; on CPU (gloo) :class:`GlooSyncBatchNorm`
computes the same statistics with differentiable all-reduces (two passes: mean, then
centred variance), with BatchNorm's parameter and buffer names.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device | None = None) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); a no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = device is not None and device.type == "cuda"
    if use_nccl:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_nccl else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local, True)


def cleanup_distributed(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """``obj`` of rank 0 on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, as DDP's buffer broadcast does."""
    if not info.enabled:
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=0)


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are over all ranks' batches (works with gloo/CPU).

    Statistics are float32 (float64 for float64 inputs). Gradients equal a BatchNorm over the
    whole batch exactly up to rounding; in float32 that rounding can flip ReLU / max-pool
    near-ties downstream, so deep GCNs' gradients may differ by ~1e-3 relative (in float64 they
    agree to ~1e-12, see ``tests/train/test_ddp.py``). Each call is synchronised on its own, so a
    module may be applied several times per forward as long as every rank makes the same calls.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # the autograd all_reduce is "deprecated" in favour of a private API
            warnings.simplefilter("ignore", FutureWarning)
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable (sum)

        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()  # statistics in (at least) float32
        count = torch.tensor([x.numel() // c], dtype=xf.dtype, device=x.device)
        total = all_reduce(torch.cat([xf.sum(dims), count]))
        n = total[c]
        mean = total[:c] / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(float(n) - 1, 1.0)), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks (names and values kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out
