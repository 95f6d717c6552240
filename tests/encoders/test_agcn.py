"""2s-AGCN (single stream): official parity (fixtures), seeded init, sizes, maps, relations, errors, bf16, compile.

The checks CTR-GCN shares (parity, parameter count, feature maps, errors, bf16, compile) are
``GraphEncoderSuite`` in ``tests/support/parity.py``; this file holds what is 2s-AGCN's own.
"""

from __future__ import annotations

import torch

from tests.support.parity import (GcnCase, GraphEncoderSuite, assert_absent_actor_left_out, assert_mini_model_runs,
                                  gcn_mini_model, gcn_relations)
from tests.support.parity import one_thread  # noqa: F401  (autouse, module-scoped fixture)

# parameter counts measured on the official lshiwjx/2s-AGCN Model (see tests/fixtures/encoders/README.md)
CASE = GcnCase("agcn", other="ctrgcn", official_params={"ntu60": 3_469_510, "ucla": 3_449_730})


class TestAGCN(GraphEncoderSuite):
    case = CASE


def test_seeded_init_matches_official() -> None:
    """Same construction and init order: ``torch.manual_seed(0)`` draws the official initial weights."""
    model = CASE.seeded_init()
    g = model.l1.gcn1
    assert torch.all(g.PA == 1e-6) and torch.all(g.bn.weight == 1e-6) and torch.all(model.data_bn.weight == 1)
    err, _ = CASE.init_logit_error(model)
    print(f"agcn official init (seed 0): max |logits - official| fp32 {err:.2e}")
    assert err < 1e-4


def test_custom_layout_2d_input_uses_its_graph() -> None:
    model, a = gcn_mini_model("agcn")
    assert all(torch.equal(b.gcn1.A, a) for b in model.blocks) and "l1.gcn1.A" not in model.state_dict()
    assert_mini_model_runs(model)


def test_joint_relations_are_the_adaptive_adjacency() -> None:
    model, x, rel = gcn_relations("agcn")
    # R[u, v] = mean_k (A + B + C_k)[v, u]; C_k's columns are softmaxes, so rows of R sum to
    # 1 + the column sums of mean_k (A_k + B_k)
    g = model.l1.gcn1
    expect = 1 + (g.A + g.PA).mean(0).sum(0)
    torch.testing.assert_close(rel[0].sum(1), expect.detach(), rtol=1e-5, atol=1e-5)
    # the batch average leaves out the absent actor: three present persons of four
    assert_absent_actor_left_out(model, x, rel)
