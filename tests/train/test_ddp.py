"""Data-parallel training: 2 CPU processes (gloo) vs one process with the same global batch.

Each rank trains on half of every global batch of 8 (DistributedSampler-style shards); the
banks are updated from all ranks' embeddings, labels and indices, so they must be identical on
both ranks (checked exactly) and hold the same slots as the single-process run.

Tolerances versus the single-process run:
- contrastive weight 0 (cross-entropy only, banks still updated): the gradients agree to float
  rounding (~1e-8 after one step: the convolutions run on batches of 4 instead of 8), but HCN's
  element-wise max over persons has near-ties (the absent second person's map is a constant,
  a still joint's motion is ~0), which such rounding can flip, moving a discrete part of the
  gradient: after 3 steps the weights agree to ~5e-5 (checked at 2e-4);
- contrastive loss active: the per-rank loss is rescaled so its DDP average is the global
  batch's mean over valid anchors, and each anchor's random negatives are a pure function of
  (seed, step, branch, its dataset index), so both runs mine the same pairs: the same bound
  (2e-4) holds.
HCN (no BatchNorm) keeps the test fast; the synchronised BatchNorm used for the other encoders
(``train.sync_bn``, :class:`GlooSyncBatchNorm` on CPU) is checked on the same two ranks against
a BatchNorm over the whole batch.
"""

from __future__ import annotations

import copy
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tests.support.training import tiny_config

WORLD = 2


def _configs() -> dict[str, dict]:
    common = ["train.max_steps=3", "train.sync_bn=true", "optim.name=sgd", "optim.lr=0.05",
              "schedule.warmup_epochs=0", "data.transform={p_interval: [0.9], random_rot: false}",
              "model.options={dropout: 0.0}", "train.test_during_training=false"]
    return {"ce": tiny_config(*common, "stdcl.loss.weight=0.0"), "stdcl": tiny_config(*common)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, cfgs: dict, out: str) -> None:
    import torch.distributed as dist

    from stdcl.train.distributed import convert_sync_batchnorm
    from stdcl.train.engine import Trainer

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for name, cfg in cfgs.items():
            tr = Trainer(cfg, os.path.join(out, f"ddp-{name}"))
            tr.run()
            save_file({k: v.contiguous() for k, v in tr.model.state_dict().items()},
                      os.path.join(out, f"{name}-rank{rank}.safetensors"))
        # synchronised BatchNorm on half batches == BatchNorm on the whole batch
        torch.manual_seed(0)
        x, r = torch.randn(8, 6, 5, 3) * 3 + 1, torch.randn(8, 4, 5, 3)
        ref = torch.nn.Sequential(torch.nn.Conv2d(6, 4, 1), torch.nn.BatchNorm2d(4))
        sync = convert_sync_batchnorm(copy.deepcopy(ref), torch.device("cpu"))
        (ref(x) * r).pow(2).sum().backward()
        mine = slice(rank * 4, (rank + 1) * 4)
        (sync(x[mine]) * r[mine]).pow(2).sum().backward()
        for p in sync.parameters():
            dist.all_reduce(p.grad)
        save_file({"grad_w": sync[0].weight.grad.contiguous(), "ref_grad_w": ref[0].weight.grad.contiguous(),
                   "grad_g": sync[1].weight.grad.contiguous(), "ref_grad_g": ref[1].weight.grad.contiguous(),
                   "rm": sync[1].running_mean.clone(), "ref_rm": ref[1].running_mean.clone(),
                   "rv": sync[1].running_var.clone(), "ref_rv": ref[1].running_var.clone()},
                  os.path.join(out, f"bn-rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    from stdcl.train.engine import Trainer

    cfgs = _configs()
    mp.spawn(_worker, args=(_free_port(), cfgs, str(tmp_path)), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    for name, cfg in cfgs.items():
        tr = Trainer(cfg, tmp_path / f"single-{name}")
        tr.run()
        single = tr.model.state_dict()
        r0 = load_file(str(tmp_path / f"{name}-rank0.safetensors"))
        r1 = load_file(str(tmp_path / f"{name}-rank1.safetensors"))
        # every rank holds the same bank and the same weights
        banks = [k for k in r0 if ".banks." in k]
        assert banks and all(torch.equal(r0[k], r1[k]) for k in r0)
        # the bank slots filled are those of the single-process run (same global batches)
        for k in banks:
            if k.endswith(("filled", "labels")):
                assert torch.equal(r0[k], single[k]), k
        assert int(r0["loss.banks.spatial.filled"].sum()) == 3 * 8
        tol = 2e-4
        diffs = {k: (r0[k].float() - single[k].float()).abs().max().item() for k in r0 if r0[k].is_floating_point()}
        worst = max(diffs, key=diffs.get)
        print(f"{name}: largest difference vs one process {diffs[worst]:.2e} ({worst})")
        assert diffs[worst] <= tol, f"{name}: {worst} differs by {diffs[worst]:.3g} (> {tol})"
    # rank 0 wrote the run directory
    assert (tmp_path / "ddp-stdcl" / "last.safetensors").is_file()
    assert not (tmp_path / "ddp-stdcl" / "rank1").exists()
    # and the same probes as one process: the same subset and steps, equal at step 0, close after 3 steps
    from stdcl.train.probes import read_probes

    a, b = read_probes(tmp_path / "ddp-stdcl"), read_probes(tmp_path / "single-stdcl")
    assert [x.step for x in a.snapshots] == [x.step for x in b.snapshots] == [0, 3] and a.names == b.names
    for k in a.spaces:
        assert np.array_equal(a.snapshots[0].spaces[k], b.snapshots[0].spaces[k]), k
        np.testing.assert_allclose(a.snapshots[1].spaces[k], b.snapshots[1].spaces[k], atol=1e-2, err_msg=k)
    for r in range(WORLD):
        bn = load_file(str(tmp_path / f"bn-rank{r}.safetensors"))
        for k in ("grad_w", "grad_g", "rm", "rv"):
            torch.testing.assert_close(bn[k], bn[f"ref_{k}"], rtol=1e-5, atol=1e-6)


def _encoder(name: str, sync: bool) -> torch.nn.Module:
    from stdcl.encoders import build_encoder
    from stdcl.train.distributed import convert_sync_batchnorm

    torch.manual_seed(0)
    model = build_encoder(name, 13, window=8).double().train()
    return convert_sync_batchnorm(model, torch.device("cpu")) if sync else model


def _encoder_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 8, 25, 2, generator=g, dtype=torch.float64), torch.randint(0, 13, (4,), generator=g)


def _twice(bn: torch.nn.Module, conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One BatchNorm module applied twice in one forward (two sets of statistics, paired all-reduces)."""
    return bn(torch.relu(bn(conv(x))) * 2.0 + 1.0)


def _encoder_worker(rank: int, port: int, names: list[str], out: str) -> None:
    import torch.distributed as dist

    from stdcl.train.distributed import convert_sync_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        x, y = _encoder_batch()
        mine = slice(rank * 2, (rank + 1) * 2)
        grads = {}
        for name in names:
            model = _encoder(name, sync=True)
            torch.nn.functional.cross_entropy(model(x[mine]), y[mine]).backward()
            for k, p in model.named_parameters():
                dist.all_reduce(p.grad)
                grads[f"{name}.{k}"] = p.grad / WORLD
        torch.manual_seed(0)
        conv, bn = torch.nn.Conv2d(3, 5, 1).double(), torch.nn.BatchNorm2d(5).double()
        sbn = convert_sync_batchnorm(bn, torch.device("cpu"))
        _twice(sbn, conv, x[mine, :, :, :, 0]).pow(3).sum().backward()
        for k, p in (("conv", conv.weight), ("bn", sbn.weight)):
            dist.all_reduce(p.grad)
            grads[f"twice.{k}"] = p.grad
        save_file({k: v.contiguous() for k, v in grads.items()}, os.path.join(out, f"enc-rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sync_batchnorm_gcn_gradients_match_whole_batch(tmp_path):
    """2s-AGCN and CTR-GCN with synchronised BN on two half batches == plain BN on the whole batch.

    Run in float64: in float32 the BN statistics' different summation order (per-rank sums plus
    an all-reduce vs one pass) moves activations by ~1e-7, enough to flip a few ReLU / max-pool
    near-ties (pre-activations within ~1e-6 of zero), each flip moving parameter gradients by up
    to ~1e-3 relative (~1e-2 after CTR-GCN's max-pool branches). That is rounding, not a
    synchronisation error: in float64 the gradients agree to ~1e-12.
    """
    names = ["agcn", "ctrgcn"]
    mp.spawn(_encoder_worker, args=(_free_port(), names, str(tmp_path)), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    x, y = _encoder_batch()
    r0 = load_file(str(tmp_path / "enc-rank0.safetensors"))
    r1 = load_file(str(tmp_path / "enc-rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for name in names:
        model = _encoder(name, sync=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        params = dict(model.named_parameters())
        assert len(params) > 50 and all(f"{name}.{k}" in r0 for k in params)
        for k, p in params.items():
            assert torch.equal(r0[f"{name}.{k}"], r1[f"{name}.{k}"]), k
            torch.testing.assert_close(r0[f"{name}.{k}"], p.grad, rtol=1e-5, atol=1e-9, msg=f"{name}.{k}")
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 5, 1).double(), torch.nn.BatchNorm2d(5).double()
    _twice(bn, conv, x[:, :, :, :, 0]).pow(3).sum().backward()
    torch.testing.assert_close(r0["twice.conv"], conv.weight.grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(r0["twice.bn"], bn.weight.grad, rtol=1e-5, atol=1e-9)
