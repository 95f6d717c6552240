"""What one STD-CL loss step dispatches (issue 14): few aten ops, no per-call constants, exact batching.

On a GPU every small op is a kernel launch from the CPU and every tensor built from a python
number a host-to-device copy; the loss's fixed cost per step was that overhead (1,185 aten
calls for one forward + backward of both branches at the size below). These tests pin the
op count, that a warm step builds no constant tensors, that batching the two branches moves
no bit, and the counter-based draws themselves (values of the released implementation).
"""

import collections
import copy

import torch
from torch.profiler import ProfilerActivity, profile

from stdcl.head import STDCLLoss, draw_random_negatives, hard_mined_infonce, l2_normalize, sampling
from stdcl.head.loss import mined_infonce
from stdcl.head.sampling import anchor_keys, branch_keys

#: aten calls (as the CPU profiler lists them, nested ones included) of one forward + backward at
#: :func:`_filled`'s size: measured 674 (both branches) and 482 (one), 1,185 and 620 before; ~10 % headroom.
MAX_ATEN_OPS = {2: 740, 1: 530}
#: Tensors built from python numbers (a host-to-device copy or fill each, on a GPU).
FACTORIES = ("aten::scalar_tensor", "aten::lift_fresh", "aten::full", "aten::arange", "aten::tensor", "aten::zeros",
             "aten::ones")


def _filled(branches=("spatial", "temporal"), batch=16):
    g = torch.Generator().manual_seed(0)
    slot_labels = torch.arange(400) % 4
    loss = STDCLLoss(slot_labels=slot_labels, dim=32, num_pos=8, num_neg=32, branches=branches)
    with torch.no_grad():
        for bank in loss.banks.values():
            bank.feats.copy_(l2_normalize(torch.randn(bank.feats.shape, generator=g)))
            bank.filled.fill_(True)
    idx = torch.randperm(400, generator=g)[:batch]
    emb = {b: torch.randn(batch, 32, generator=g) for b in loss.branches}
    return loss, emb, slot_labels[idx], idx


def _step(loss, emb, labels, idx, backward=True):
    out = loss({k: v.clone().requires_grad_(True) for k, v in emb.items()}, labels, idx)
    if backward:
        out["loss"].backward()
    return out


def _profiled(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e for e in prof.events() if e.name.startswith("aten::")]


def _top_level(events):
    """Events not nested in another aten op (what the loss's own code calls, not an op's internals)."""
    def nested(e):
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("aten::"):
                return True
            p = p.cpu_parent
        return False
    return [e for e in events if not nested(e)]


def test_a_loss_step_dispatches_few_aten_ops():
    for branches in (("spatial", "temporal"), ("temporal",)):
        loss, emb, labels, idx = _filled(branches)
        _step(loss, emb, labels, idx), _step(loss, emb, labels, idx)
        events = _profiled(lambda args=(loss, emb, labels, idx): _step(*args))
        counts = collections.Counter(e.name for e in events)
        assert len(events) <= MAX_ATEN_OPS[len(branches)], counts.most_common(15)
        assert counts["aten::item"] == counts["aten::_local_scalar_dense"] == 0  # host reads batched into tolist


def test_a_warm_step_builds_no_constant_tensors():
    loss, emb, labels, idx = _filled()
    _step(loss, emb, labels, idx)
    cached = len(sampling._CONSTS)
    forward = _profiled(lambda: _step(loss, emb, labels, idx, backward=False))
    made = collections.Counter(e.name for e in _top_level(forward) if e.name in FACTORIES)
    assert not made, made
    assert sum(e.name in ("aten::scalar_tensor", "aten::lift_fresh") for e in forward) == 0  # nor inside an op
    both = _profiled(lambda: _step(loss, emb, labels, idx))  # backward: only F.normalize's clamp_min formula
    made = collections.Counter(e.name for e in _top_level(both) if e.name in FACTORIES)
    assert made <= collections.Counter({"aten::scalar_tensor": 1}), made
    assert len(sampling._CONSTS) == cached  # nothing new cached on later steps


def _same(a, b):
    return torch.equal(a, b) and (not a.is_floating_point() or torch.equal(a.signbit(), b.signbit()))


def test_both_branches_batched_equal_two_single_branch_calls_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    S, B, D, P, K = 500, 24, 32, 6, 40
    bank_labels = torch.randint(0, 5, (S,), generator=g)
    filled = torch.rand(S, generator=g) < 0.8
    filled[torch.nonzero(bank_labels == 4).flatten()[P - 1:]] = False  # class 4 holds P - 1: its anchors skip
    banks = [(l2_normalize(torch.randn(S, D, generator=g)), bank_labels, filled) for _ in range(2)]
    labels = torch.randint(0, 5, (B,), generator=g)
    labels[:3] = 4
    emb = torch.randn(2, B, D, generator=g)
    keys = branch_keys(7, 11, [1, 2], torch.arange(B) * 3)
    stacked = emb.clone().requires_grad_(True)
    losses, valid = mined_infonce(l2_normalize(stacked), labels, banks, P, K, 0.7, row_keys=keys)
    (losses[0] + losses[1]).backward()
    leaves = [emb[i].clone().requires_grad_(True) for i in range(2)]
    singles = [hard_mined_infonce(l2_normalize(leaf), labels, *banks[i], P, K, 0.7, row_keys=keys[i])
               for i, leaf in enumerate(leaves)]
    (singles[0][0] + singles[1][0]).backward()
    assert valid.any() and not valid.all()  # valid and skipped anchors mixed
    for i in range(2):
        assert _same(losses[i].detach(), singles[i][0].detach()) and torch.equal(valid[i], singles[i][1])
        assert _same(stacked.grad[i], leaves[i].grad)


def test_counter_based_draws_match_the_released_values():
    """Integer-only hashing: the same keys and columns on any machine as the implementation of issue 11."""
    idx = torch.tensor([0, 1, 7, 123456789])
    assert anchor_keys(3, 5, 2, idx).tolist() == [3140601574336345602, -2424500576550950917,
                                                   -7785435789472024597, -7552336203068208575]
    assert anchor_keys(-1, 2**40, 1, idx).tolist() == [3338771624848811780, 8818039491636821563,
                                                       -3136767104745375683, 1560258881167154985]
    assert torch.equal(branch_keys(3, 5, [1, 2], idx), torch.stack([anchor_keys(3, 5, s, idx) for s in (1, 2)]))
    neg = torch.zeros(2, 400, dtype=torch.bool)
    neg[0] = torch.arange(400) % 4 != 0
    neg[1, torch.arange(12) * 31] = True  # 12 negatives in 400: too few survive the draws, the fallback runs
    assert draw_random_negatives(neg, 10, row_keys=torch.tensor([11, -5])).tolist() == [
        [297, 106, 309, 285, 394, 330, 79, 310, 83, 114], [217, 341, 186, 279, 62, 248, 93, 310, 124, 0]]


def test_rng_changed_outside_forward_is_read_back():
    """``(seed, step)`` is mirrored on the host; writes to ``rng`` outside forward must still take effect."""
    loss, emb, labels, idx = _filled(batch=8)
    _step(loss, emb, labels, idx)

    def next_loss(m):
        return _step(copy.deepcopy(m), emb, labels, idx)["loss"]

    def fresh(state):
        m = copy.deepcopy(loss)
        m.rng = torch.tensor(state)  # a new tensor: nothing mirrored for it yet
        return next_loss(m)

    def in_place(m):
        with torch.no_grad():
            m.rng[1] = 40

    for change in (lambda m: m.set_rng_state(torch.tensor([0, 40])), in_place,
                   lambda m: m.load_state_dict({**m.state_dict(), "rng": torch.tensor([0, 40])})):
        m = copy.deepcopy(loss)
        _step(m, emb, labels, idx)  # mirrors step 2
        change(m)
        assert m._seed_step() == (0, 40) and torch.equal(next_loss(m), fresh([0, 40]))
    m = copy.deepcopy(loss)
    with torch.inference_mode():
        m.load_state_dict({**m.state_dict(), "rng": torch.tensor([0, 41])})
    assert m._seed_step() == (0, 41)
