"""CTR-GCN: official parity (fixtures), seeded init, sizes, maps, relations, errors, bf16, compile.

The checks 2s-AGCN shares (parity, parameter count, feature maps, errors, bf16, compile) are
``GraphEncoderSuite`` in ``tests/support/parity.py``; this file holds what is CTR-GCN's own.
"""

from __future__ import annotations

import torch

from stdcl.data.graph import spatial_adjacency
from stdcl.encoders import build_encoder
from tests.support.parity import (GcnCase, GraphEncoderSuite, assert_absent_actor_left_out, assert_mini_model_runs,
                                  gcn_mini_model, gcn_relations)
from tests.support.parity import one_thread  # noqa: F401  (autouse, module-scoped fixture)

# parameter counts measured on the official Uason-Chen/CTR-GCN Model (see tests/fixtures/encoders/README.md)
CASE = GcnCase("ctrgcn", other="agcn", official_params={"ntu60": 1_446_672, "ucla": 1_426_892})


class TestCTRGCN(GraphEncoderSuite):
    case = CASE


def test_seeded_init_matches_official() -> None:
    """Same construction and init order: ``torch.manual_seed(0)`` draws the official initial weights."""
    model = CASE.seeded_init()
    g = model.l1.gcn1
    assert torch.equal(g.PA, torch.from_numpy(spatial_adjacency("ntu25")).float())
    assert g.alpha.item() == 0 and torch.all(g.bn.weight == 1e-6) and torch.all(model.data_bn.weight == 1)
    assert not torch.all(model.l1.tcn1.branches[0][1].weight == 1)  # the TCN's BN weights ~ N(1, 0.02)
    err, scale = CASE.init_logit_error(model)
    # the untrained official init also yields logits of ~3e3 in eval mode (unit running stats)
    print(f"ctrgcn official init (seed 0): max |logits - official| fp32 {err:.2e} (scale {scale:.0f})")
    assert err < 1e-4 * max(1.0, scale)


def test_custom_layout_2d_input_uses_its_graph() -> None:
    model, a = gcn_mini_model("ctrgcn")
    assert all(torch.equal(b.gcn1.PA, a) for b in model.blocks)
    assert model.l1.gcn1.convs[0].rel_channels == 8  # official in_channels // 8 would be 0
    assert_mini_model_runs(model)


def test_non_adaptive_graph_is_a_fixed_buffer() -> None:
    torch.manual_seed(0)
    model = build_encoder("ctrgcn", 10, layout="ucla20", num_person=1, window=16, adaptive=False).eval()
    sd = model.state_dict()
    assert not any(k.endswith(".PA") for k in sd) and len(sd) == len(CASE.fx["settings"]["ucla"]["state_dict"]) - 10
    assert torch.equal(model.l4.gcn1.A, torch.from_numpy(spatial_adjacency("ucla20")).float())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 20, 1)).shape == (1, 10)


def test_joint_relations_are_the_refined_topology() -> None:
    model, x, rel = gcn_relations("ctrgcn")
    # at init alpha = 0, so every layer's map is mean_k A_k, in the model's own R[u, v] orientation
    mean_a = torch.from_numpy(spatial_adjacency("ntu25")).float().mean(0)
    for r in rel:
        torch.testing.assert_close(r, mean_a)
    with torch.no_grad():
        for b in model.blocks:
            b.gcn1.alpha.fill_(0.5)
    rel = model.joint_relations(x)
    assert not torch.allclose(rel[0], mean_a)
    # the batch average leaves out the absent actor: three present persons of four
    assert_absent_actor_left_out(model, x, rel)
