"""Memory banks and the hard-mined InfoNCE: the batched loss against a per-anchor loop, resume, feasibility."""

import copy
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from stdcl.errors import ConfigError
from stdcl.head import (ClassQueueBank, PerSampleBank, STDCLLoss, check_feasibility, draw_random_negatives,
                        gather_for_bank, hard_mined_infonce, l2_normalize, scaled_pos_neg)

#: NW-UCLA training samples per class (views 1 and 2; 1020 in all, largest 124).
UCLA_COUNTS = [102, 102, 96, 124, 101, 102, 99, 99, 98, 97]


def reference_loss(anchors, labels, bank, bank_labels, filled, P, K, tau, random_neg):
    """The released ContrastLoss, anchor by anchor (random negatives given as bank columns)."""
    sims = anchors @ bank.t()
    rows, valid = [], []
    for i in range(anchors.shape[0]):
        pos_cols = [j for j in range(bank.shape[0]) if filled[j] and bank_labels[j] == labels[i]]
        neg_cols = [j for j in range(bank.shape[0]) if filled[j] and bank_labels[j] != labels[i]]
        if len(pos_cols) < P or len(neg_cols) < K:
            valid.append(False)
            continue
        valid.append(True)
        pos = sims[i, pos_cols].sort()[0][:P]  # the P lowest
        neg_hard = sims[i, neg_cols].sort(descending=True)[0][:K]  # the K highest
        neg_rand = sims[i, random_neg[i]]
        for negs in (neg_hard, neg_rand):
            rows.append(torch.cat([pos.view(P, 1), negs.view(1, K).expand(P, K)], 1))
    if not rows:
        return torch.zeros(1, dtype=anchors.dtype), torch.tensor(valid)
    logits = torch.cat(rows) / tau
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)), torch.tensor(valid)


def _random_problem(seed, S=240, B=12, C=4, D=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    bank_labels = torch.randint(0, C, (S,), generator=g)
    filled = torch.rand(S, generator=g) < 0.3 + 0.7 * torch.rand(1, generator=g)
    filled[torch.nonzero(bank_labels == C - 1).flatten()[5:]] = False  # a sparse class: at most 5 entries
    bank = l2_normalize(torch.randn(S, D, generator=g, dtype=dtype))
    labels = torch.randint(0, C, (B,), generator=g)
    labels[:3] = C - 1  # anchors of the sparse class are skipped
    anchors = l2_normalize(torch.randn(B, D, generator=g, dtype=dtype))
    return anchors, labels, bank, bank_labels, filled, g


@pytest.mark.parametrize("seed", range(6))
def test_batched_loss_equals_the_per_anchor_loop(seed):
    anchors, labels, bank, bank_labels, filled, g = _random_problem(seed)
    P, K, tau = 8, 30, 0.8
    neg = (labels[:, None] != bank_labels[None]) & filled[None]
    rneg = draw_random_negatives(neg, K, g)
    a1 = anchors.clone().requires_grad_(True)
    a2 = anchors.clone().requires_grad_(True)
    loss, valid = hard_mined_infonce(a1, labels, bank, bank_labels, filled, P, K, tau, random_neg=rneg)
    ref, ref_valid = reference_loss(a2, labels, bank, bank_labels, filled, P, K, tau, rneg)
    assert torch.equal(valid, ref_valid)
    assert valid.any() and not valid.all()  # valid and skipped anchors mixed
    torch.testing.assert_close(loss, ref.reshape(()), rtol=0, atol=1e-6)
    loss.backward()
    ref.sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=0, atol=1e-6)
    assert a1.grad[~valid].abs().max() == 0 if (~valid).any() else True


def test_float32_agrees_too():
    anchors, labels, bank, bank_labels, filled, g = _random_problem(11, dtype=torch.float32)
    rneg = draw_random_negatives((labels[:, None] != bank_labels[None]) & filled[None], 20, g)
    loss, _ = hard_mined_infonce(anchors, labels, bank, bank_labels, filled, 5, 20, 0.5, random_neg=rneg)
    ref, _ = reference_loss(anchors, labels, bank, bank_labels, filled, 5, 20, 0.5, rneg)
    torch.testing.assert_close(loss, ref.reshape(()), rtol=0, atol=1e-5)


def test_random_negatives_are_distinct_filled_negatives_and_uniform():
    g = torch.Generator().manual_seed(0)
    neg = torch.rand(3, 50, generator=g) < 0.5
    neg[2] = False
    neg[2, :10] = True
    picks = torch.stack([draw_random_negatives(neg, 8, g) for _ in range(2000)])  # (R, 3, 8)
    for r in range(2):
        assert all(neg[r, picks[i, r]].all() and len(set(picks[i, r].tolist())) == 8 for i in range(50))
    counts = torch.bincount(picks[:, 2].flatten(), minlength=50)[:10].float()
    assert torch.allclose(counts / counts.sum(), torch.full((10,), 0.1), atol=0.01)  # 8 of 10, uniform


def test_generator_draws_are_reproducible():
    anchors, labels, bank, bank_labels, filled, _ = _random_problem(3)
    run = lambda s: hard_mined_infonce(anchors, labels, bank, bank_labels, filled, 4, 10,  # noqa: E731
                                       generator=torch.Generator().manual_seed(s))[0]
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_no_valid_anchor_gives_zero_with_grad():
    anchors, labels, bank, bank_labels, filled, _ = _random_problem(0)
    a = anchors.clone().requires_grad_(True)
    for p, k in [(10_000, 5), (5, 10_000), (200, 5)]:
        loss, valid = hard_mined_infonce(a, labels, bank, bank_labels, filled, p, k)
        assert loss.item() == 0 and loss.requires_grad and loss.dim() == 0 and not valid.any()
        loss.backward()
        assert a.grad.abs().max() == 0


def test_bank_gets_no_gradient():
    anchors, labels, bank, bank_labels, filled, _ = _random_problem(1)
    bank = bank.clone().requires_grad_(True)
    a = anchors.clone().requires_grad_(True)
    loss, valid = hard_mined_infonce(a, labels, bank, bank_labels, filled, 4, 10)
    assert valid.any()
    loss.backward()
    assert bank.grad is None and a.grad.abs().max() > 0
    module = STDCLLoss(slot_labels=torch.arange(8) % 2, dim=4, num_pos=1, num_neg=1)
    assert all(not b.requires_grad for b in module.buffers()) and not list(module.parameters())


# -- banks ------------------------------------------------------------------------------------
def test_per_sample_bank_overwrites_slots():
    bank = PerSampleBank(6, 3, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert bank.capacity_per_class().tolist() == [2, 2, 2]
    e = l2_normalize(torch.randn(3, 3))
    bank.update(e, torch.tensor([1, 0, 1]), torch.tensor([4, 0, 4]))  # duplicate index: the later one wins
    feats, labels, filled = bank.entries()
    assert filled.tolist() == [True, False, False, False, True, False]
    assert torch.equal(feats[0], e[1]) and torch.equal(feats[4], e[2])
    assert set(bank.state_dict()) == {"feats", "filled", "labels"}
    with pytest.raises(ConfigError, match="slot labels"):
        bank.update(e[:1], torch.tensor([2]), torch.tensor([0]))
    with pytest.raises(ConfigError, match="out of range"):
        bank.update(e[:1], torch.tensor([0]), torch.tensor([6]))


def test_class_queue_is_a_fifo_per_class():
    q = ClassQueueBank(num_classes=3, length=4, dim=2)
    assert q.capacity_per_class().tolist() == [4, 4, 4]
    feats, labels, filled = q.entries()
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    vec = lambda i: torch.tensor([[float(i), 0.0]])  # noqa: E731

    def push(items):  # (value, label) in batch order
        q.update(torch.cat([vec(v) for v, _ in items]), torch.tensor([lab for _, lab in items]),
                 torch.zeros(len(items), dtype=torch.long))

    push([(1, 0), (2, 1), (3, 0)])
    push([(4, 0), (5, 0), (6, 0)])  # class 0 wraps: 6 replaces the oldest (1)
    assert q.feats[:4, 0].tolist() == [6, 3, 4, 5] and q.ptr.tolist() == [1, 1, 0]
    assert q.filled.tolist() == [True] * 4 + [True, False, False, False] + [False] * 4
    push([(v, 2) for v in range(10, 16)])  # 6 items into a ring of 4: the latest 4 stay
    assert sorted(q.feats[8:, 0].tolist()) == [12, 13, 14, 15] and q.ptr[2] == 2
    assert q.feats[8 + 1, 0] == 15  # written in FIFO order: 15 is the newest, just before ptr
    with pytest.raises(ConfigError, match="label out of range"):
        push([(1, 3)])


def test_gather_for_bank_without_distributed_is_identity():
    e = torch.randn(4, 3, requires_grad=True)
    lab, idx = torch.arange(4), torch.arange(4)
    g_e, g_l, g_i = gather_for_bank(e, lab, idx)
    assert torch.equal(g_e, e) and not g_e.requires_grad and g_l is lab and g_i is idx


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    b = 3 if rank == 0 else 2  # an uneven last batch
    e = torch.full((b, 2), float(rank)) + torch.arange(b).view(-1, 1)
    lab = torch.full((b,), rank)
    idx = torch.arange(b) + 10 * rank
    torch.save(gather_for_bank(e, lab, idx), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_gather_for_bank_across_two_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for a, b in zip(r0, r1):
        assert torch.equal(a, b)
    e, lab, idx = r0
    assert idx.tolist() == [0, 1, 2, 10, 11] and lab.tolist() == [0, 0, 0, 1, 1]
    assert e[:, 0].tolist() == [0, 1, 2, 1, 2]


# -- STDCLLoss ----------------------------------------------------------------------------------
def test_overwrite_before_compare_counts_the_anchor_itself():
    # class 0 owns exactly P = 3 slots: its anchors are valid in the very batch that first fills them
    slot_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    loss_mod = STDCLLoss(slot_labels=slot_labels, dim=4, num_pos=3, num_neg=3, branches=("spatial",), weight=1.0)
    torch.manual_seed(0)
    emb = torch.randn(6, 4, requires_grad=True)
    out = loss_mod({"spatial": emb}, slot_labels, torch.arange(6))
    assert out["valid_frac_spatial"] == 1.0 and out["loss"].item() > 0
    z = l2_normalize(emb.detach())
    torch.testing.assert_close(loss_mod.banks["spatial"].feats, z)
    # every class has exactly P positives (its anchor's own slot among them) and K negatives
    ref, _ = reference_loss(z, slot_labels, z, slot_labels, torch.ones(6, dtype=torch.bool), 3, 3, 0.8,
                            [torch.nonzero(slot_labels != y).flatten() for y in slot_labels])
    torch.testing.assert_close(out["loss"].detach(), ref.reshape(()), rtol=0, atol=1e-6)
    assert out["spatial"] == pytest.approx(ref.item(), abs=1e-6)


def test_first_batch_of_a_run_is_skipped_until_the_bank_fills():
    slot_labels = torch.arange(40) % 2
    loss_mod = STDCLLoss(slot_labels=slot_labels, dim=4, num_pos=10, num_neg=10)
    emb = {k: torch.randn(8, 4, requires_grad=True) for k in ("spatial", "temporal")}
    out = loss_mod(emb, slot_labels[:8], torch.arange(8))
    assert out["loss"].item() == 0 and out["loss"].requires_grad
    assert out["valid_frac_spatial"] == 0 and out["temporal"] == 0
    out["loss"].backward()


def _batches(n, size=8, slots=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        idx = torch.randperm(slots, generator=g)[:size]
        yield {k: torch.randn(size, 16, generator=g) for k in ("spatial", "temporal")}, idx


def test_state_dict_round_trip_resumes_exactly():
    slot_labels = torch.arange(64) % 4
    kw = dict(slot_labels=slot_labels, dim=16, num_pos=3, num_neg=6, seed=7)
    a = STDCLLoss(**kw)
    batches = list(_batches(12))
    for emb, idx in batches[:8]:
        a(emb, slot_labels[idx], idx)
    state = copy.deepcopy(a.state_dict())
    assert {"rng", "banks.spatial.feats", "banks.temporal.filled"} <= set(state)
    first = [a(emb, slot_labels[idx], idx) for emb, idx in batches[8:]]
    b = STDCLLoss(**{**kw, "seed": 123})
    b.load_state_dict(state)
    second = [b(emb, slot_labels[idx], idx) for emb, idx in batches[8:]]
    assert all(x["loss"].item() > 0 for x in first)
    for x, y in zip(first, second):
        assert torch.equal(x["loss"], y["loss"]) and x["spatial"] == y["spatial"]
    # get/set_rng_state: same bank, same step -> same random negatives; another step -> others
    c = STDCLLoss(**kw)
    c.load_state_dict(state)
    c.set_rng_state(torch.tensor([7, 99]))
    assert c.get_rng_state().tolist() == [7, 99]
    other = c(*batches[8][:1], slot_labels[batches[8][1]], batches[8][1])
    assert not torch.equal(other["loss"], first[0]["loss"])


def test_class_queue_loss_and_options():
    loss_mod = STDCLLoss(bank="class_queue", num_classes=3, queue_length=5, dim=16, num_pos=4, num_neg=8,
                         branches=("temporal",), weight=2.0)
    assert set(loss_mod.banks) == {"temporal"}
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        lab = torch.randint(0, 3, (6,), generator=g)
        out = loss_mod({"temporal": torch.randn(6, 16, generator=g, requires_grad=True)}, lab, torch.arange(6))
    assert set(out) == {"loss", "temporal", "valid_frac_temporal"}
    assert out["loss"].item() == pytest.approx(2.0 * out["temporal"], rel=1e-6)
    with pytest.raises(ConfigError, match="spatial"):
        STDCLLoss(bank="class_queue", num_classes=3, queue_length=5, dim=16)({"temporal": torch.randn(2, 16)},
                                                                             torch.zeros(2), torch.zeros(2))
    with pytest.raises(ConfigError, match="queue_length"):
        STDCLLoss(bank="class_queue", num_classes=3)
    with pytest.raises(ConfigError, match="slot_labels"):
        STDCLLoss()
    with pytest.raises(ConfigError, match="unknown bank"):
        STDCLLoss(bank="fifo")


def test_loss_ignores_autocast_and_returns_float32():
    slot_labels = torch.arange(16) % 2
    loss_mod = STDCLLoss(slot_labels=slot_labels, dim=8, num_pos=2, num_neg=2)
    emb = {k: torch.randn(16, 8, dtype=torch.bfloat16, requires_grad=True) for k in ("spatial", "temporal")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss_mod(emb, slot_labels, torch.arange(16))
    assert out["loss"].dtype == torch.float32 and out["loss"].item() > 0
    out["loss"].backward()
    assert emb["spatial"].grad is not None


# -- feasibility ----------------------------------------------------------------------------------
def _ucla_slot_labels(repeat):
    return torch.cat([torch.full((c,), k) for k, c in enumerate(UCLA_COUNTS)]).repeat(repeat)


def test_ucla_with_one_slot_per_sample_is_infeasible(caplog):
    cap = torch.tensor(UCLA_COUNTS)
    rep = check_feasibility(cap, 128, 512)
    assert sum(UCLA_COUNTS) == 1020 and max(UCLA_COUNTS) == 124
    assert not rep.feasible and not any(rep.can_contribute) and rep.never == list(range(10))
    assert "ZERO" in rep.message and "repeat" in rep.message and "\n" not in rep.message
    loss_mod = STDCLLoss(slot_labels=_ucla_slot_labels(1), num_classes=10)
    with pytest.raises(ConfigError, match="NO class"):
        loss_mod.check(strict=True)
    with caplog.at_level(logging.WARNING, logger="stdcl"):
        loss_mod.check(strict=False)
    assert any(r.levelno == logging.WARNING and "NO class" in r.getMessage() for r in caplog.records)


def test_ucla_repeated_five_times_is_feasible():
    rep = check_feasibility(torch.tensor(UCLA_COUNTS) * 5, 128, 512)
    assert rep.feasible and all(rep.can_contribute) and rep.never == []
    assert rep.capacity == [5 * c for c in UCLA_COUNTS] and rep.max_negatives[3] == 5100 - 620
    STDCLLoss(slot_labels=_ucla_slot_labels(5), num_classes=10).check(strict=True)


def test_some_classes_never_contribute(caplog):
    rep = check_feasibility(torch.tensor([200, 50, 300, 0]), 100, 200)
    assert rep.feasible and rep.can_contribute == [True, False, True, False] and rep.never == [1]
    loss_mod = STDCLLoss(bank="class_queue", num_classes=3, queue_length=50, num_pos=60, num_neg=10)
    assert not loss_mod.check().feasible
    slot_labels = torch.cat([torch.zeros(200), torch.ones(50), torch.full((300,), 2)]).long()
    with caplog.at_level(logging.INFO, logger="stdcl"):
        STDCLLoss(slot_labels=slot_labels, num_pos=100, num_neg=200).check(strict=True)
    assert any(r.levelno == logging.INFO and "[1]" in r.getMessage() for r in caplog.records)


def test_scaled_pos_neg():
    assert scaled_pos_neg(torch.tensor(UCLA_COUNTS), 128, 512) == (48, 448)  # 0.5 * 96, 0.5 * (1020 - 124)
    assert scaled_pos_neg(torch.tensor(UCLA_COUNTS) * 5, 128, 512) == (128, 512)
    assert scaled_pos_neg(torch.tensor([1, 1]), 128, 512) == (1, 1)
    assert scaled_pos_neg(torch.tensor([10, 0, 30]), 128, 512, fraction=1.0) == (10, 10)
    p, k = scaled_pos_neg(torch.tensor(UCLA_COUNTS), 128, 512)
    assert check_feasibility(torch.tensor(UCLA_COUNTS), p, k).never == []
    assert check_feasibility(torch.tensor(UCLA_COUNTS), 128, 512).suggested == (48, 448)
    loss_mod = STDCLLoss(slot_labels=_ucla_slot_labels(1), num_classes=10, scale_to_data=True)
    assert (loss_mod.num_pos, loss_mod.num_neg) == (48, 448) and loss_mod.check(strict=True).feasible


def test_small_data_advice_recommends_the_measured_setting():
    from stdcl.head.loss import SMALL_DATA_SETTING, small_data_advice

    natops = torch.full((6,), 30)  # 30 per class, one slot per sample
    rep = check_feasibility(natops, 128, 512)
    assert not rep.feasible and SMALL_DATA_SETTING in rep.message and "(-> P=15, K=75)" in rep.message
    advice = small_data_advice(natops, 128, epochs=40, start_epoch=0, scale_to_data=False)
    assert "scale_to_data=true stdcl.loss.start_epoch=10 stdcl.loss.ramp_epochs=10" in advice
    assert "smallest class holds 30" in advice
    assert small_data_advice(natops, 128, epochs=40, start_epoch=10, scale_to_data=True) is None  # already so
    assert small_data_advice(natops, 128, epochs=40, start_epoch=0, scale_to_data=True) is not None  # no late start
    assert small_data_advice(torch.tensor(UCLA_COUNTS) * 5, 128, 8, 0, False) is None  # NW-UCLA x5: not small
    assert small_data_advice(natops, 16, 40, 0, False) is None  # P that fits
