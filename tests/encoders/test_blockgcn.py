"""BlockGCN encoder: official parity (fixtures), seeded init, sizes, topology features, layouts, errors, STD-CL head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stdcl.data.graph import hop_distance
from stdcl.data.layouts import get_layout
from stdcl.encoders import available, build_encoder
from stdcl.encoders.blockgcn import BlockGCN, blockgcn_hops
from stdcl.encoders.blockgcn_blocks import mst_edges, persistence_deaths, topology_distances
from stdcl.encoders.official import from_official
from stdcl.encoders.registry import spec
from stdcl.errors import ConfigError
from stdcl.head import build_stdcl_model
from tests.support.parity import (GCN_MINI, UCLA_BAD_INPUTS, assert_init_stats, assert_loaded_official,
                                  assert_no_device_calls, assert_one_line_input_error, assert_parameter_count,
                                  fixture_input, fp32_fp64_parity, load_fixture, max_abs_error, seeded_official)
from tests.support.parity import one_thread  # noqa: F401  (autouse, module-scoped fixture)
from tests.support.official_weights import seeded_state_dict

SETTINGS = ["ntu60", "ucla"]
#: parameter counts of the official model (ZhouYuxuanYX/BlockGCN Model), measured with its configs
OFFICIAL_PARAMS = {"ntu60": 1_372_780, "ucla": 1_297_370}


def fixture(name: str) -> dict:
    return load_fixture(f"blockgcn_{name}")


def build(fx: dict, **options) -> BlockGCN:
    a = fx["model_args"]
    return build_encoder("blockgcn", a["num_class"], layout=fx["layout"], num_person=a["num_person"],
                         window=fx["input_shape"][2], **options)


def official_model(fx: dict, prefix: str = "") -> BlockGCN:
    a = fx["model_args"]
    return seeded_official("blockgcn", fx["state_dict_shapes"], fx["weight_seed"], prefix, num_classes=a["num_class"],
                           layout=fx["layout"], num_person=a["num_person"], window=fx["input_shape"][2])


def degenerate_input(fx: dict) -> torch.Tensor:
    """Sample 1 has joints 3 and 4 at the same place: a zero-length bar, which giotto-ph drops."""
    x = fixture_input(fx)
    x[1, :, :, 4] = x[1, :, :, 3]
    return x


def test_registered_with_its_description() -> None:
    s = spec("blockgcn")
    assert "blockgcn" in available() and s.factory is BlockGCN and s.source == "ZhouYuxuanYX/BlockGCN"
    assert s.joint_relations and not s.official_conversion and s.recipe == "encoder/blockgcn"


@pytest.mark.parametrize("name", SETTINGS)
def test_state_dict_and_parameter_count_match_official(name: str) -> None:
    fx = fixture(name)
    model = build(fx)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(fx["state_dict_shapes"].items())
    assert_parameter_count(model, f"blockgcn {name}", fx["num_parameters"], OFFICIAL_PARAMS[name])


@pytest.mark.parametrize("name", SETTINGS)
def test_seeded_init_matches_official(name: str) -> None:
    """Same construction order and init rules: torch.manual_seed(0) draws exactly the official init."""
    fx = fixture(name)
    torch.manual_seed(fx["init_seed"])
    model = build(fx).eval()
    assert_init_stats(model, fx["init_sum_abssum"], "abs", rel=1e-9)
    with torch.no_grad():
        y = model(fixture_input(fx))
    ref = torch.tensor(fx["init_logits_fp32"])
    assert max_abs_error(y, ref) < 1e-4 * ref.abs().max().item()


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_parity_fp32_fp64(name: str, prefix: str) -> None:
    """Seeded official weights and BN statistics: fp64 logits agree to < 1e-4 absolute, fp32 to 1e-4 of the
    logit scale (the seeded statistics drive the logits to ~1e5, where one fp32 ulp is ~8e-3)."""
    fx = fixture(name)
    model = official_model(fx, prefix)
    assert_loaded_official(model, fx["state_dict_shapes"])
    r = fp32_fp64_parity(model, fixture_input(fx), fx)
    print(f"blockgcn {name}{' (module.)' if prefix else ''}: max |logits - official| fp64 {r.err64:.2e}, "
          f"fp32 {r.err32:.2e} (logit scale {r.scale:.0f})")
    assert r.y32.dtype == torch.float32 and r.y32.shape == (2, fx["model_args"]["num_class"])
    assert r.err64 < 1e-4 and r.err32 < 1e-4 * r.scale


@pytest.mark.parametrize("name", SETTINGS)
def test_official_parity_zero_length_bar_and_train_mode(name: str) -> None:
    """A dropped zero-length bar (official NaN padding counts 1), and batch-statistics BatchNorm."""
    fx = fixture(name)
    model = official_model(fx)
    x = degenerate_input(fx)
    with torch.no_grad():
        deaths, valid = persistence_deaths(topology_distances(x))
        assert valid.sum(1).tolist() == [x.shape[3] - 1, x.shape[3] - 2]
        y32 = model(x)
        y64 = model.double()(x.double())
        ref64 = torch.tensor(fx["logits_degenerate_fp64"], dtype=torch.float64)
        assert max_abs_error(y64, ref64) < 1e-4
        assert max_abs_error(y32, fx["logits_degenerate_fp32"]) < 1e-4 * ref64.abs().max().item()
        assert max_abs_error(y64, fx["logits_fp64"]) > 1.0  # the dropped bar matters
        train = official_model(fx).train()
        y = train(fixture_input(fx))
    ref = torch.tensor(fx["logits_train_fp32"])
    err = max_abs_error(y, ref)
    print(f"blockgcn {name} train mode: max |logits - official| {err:.2e} (max |logit| {ref.abs().max():.2f})")
    assert err < 1e-4 * ref.abs().max().item()
    assert int(train.t3.bn.num_batches_tracked) == 1


@pytest.mark.parametrize("name", SETTINGS)
def test_topology_vector_and_hops_match_official(name: str) -> None:
    fx = fixture(name)
    model = official_model(fx)
    with torch.no_grad():
        a = model.topo(fixture_input(fx))
    ref = torch.tensor(fx["topo_fp32"])
    assert a.shape == (2, 64) and max_abs_error(a, ref) < 1e-5 * ref.abs().max().item()
    hops = blockgcn_hops(get_layout(fx["layout"]))
    assert np.array_equal(hops, np.array(fx["hops"])) and torch.equal(model.l7.gcn1.hops, torch.as_tensor(hops))
    # NTU: the official graph hangs hand tip and thumb off the hand (the ntu25 layout chains them)
    assert np.array_equal(hop_distance(fx["layout"]), hops) == (name == "ucla")


def test_minimum_spanning_tree_and_degenerate_batches() -> None:
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
    dist = torch.cdist(pts, pts).numpy()
    src, dst = mst_edges(dist)
    from scipy.sparse.csgraph import minimum_spanning_tree
    for b in range(4):
        ref = np.sort(minimum_spanning_tree(dist[b]).data)
        assert np.allclose(np.sort(dist[b][src[b], dst[b]]), ref)
        assert len({frozenset(e) for e in zip(src[b], dst[b])}) == 8  # a tree: 8 distinct edges
    model = build_encoder("blockgcn", 5, layout="ucla20", num_person=1, window=8).eval()
    with torch.no_grad():  # every joint at one place (official: NaN): no bars, finite output
        assert model.topo(torch.ones(2, 3, 8, 20, 1)).abs().max() == 0
        assert torch.isfinite(model(torch.ones(2, 3, 8, 20, 1))).all()


def test_pairing_option() -> None:
    """``official`` tiles the topology over persons (row r gets sample r mod N); ``sample`` pairs each
    person with its own sample; both agree for a batch of one."""
    torch.manual_seed(0)
    off = build_encoder("blockgcn", 6, window=12).eval()
    own = build_encoder("blockgcn", 6, window=12, pairing="sample").eval()
    own.load_state_dict(off.state_dict())
    x = torch.randn(2, 3, 12, 25, 2)
    with torch.no_grad():
        assert torch.equal(off(x[:1]), own(x[:1]))
        assert (off(x) - own(x)).abs().max() > 1e-4
        a = off.topo(x)
        t_off, t_own = off.t0(a, 2, "official"), off.t0(a, 2, "sample")
    assert torch.equal(t_off[[0, 2]], t_own[[0, 1]]) and torch.equal(t_off[[1, 3]], t_own[[2, 3]])


@pytest.mark.parametrize("window, t_out", [(64, 16), (52, 13), (20, 5), (7, 2), (1, 1)])
def test_feature_shape_equals_the_map(window: int, t_out: int) -> None:
    torch.manual_seed(0)
    model = build_encoder("blockgcn", 10, layout="ucla20", num_person=1, window=window).eval()
    assert model.feature_shape() == (256, t_out, 20) == model.feature_shape(window)
    if window <= 20:
        with torch.no_grad():
            f = model.features(torch.randn(2, 3, window, 20, 1))
        assert f.map.shape == (2, 1, *model.feature_shape()) and f.extra.shape == (2, 64)


def test_custom_layout_builds_its_own_graph() -> None:
    torch.manual_seed(0)
    model = build_encoder("blockgcn", 4, layout=GCN_MINI, in_channels=2, num_person=1, window=10)
    hops = hop_distance(GCN_MINI)
    assert torch.equal(model.l1.gcn1.hops, torch.as_tensor(hops, dtype=torch.long))
    assert model.l1.gcn1.rpe.shape == (3, 8, int(hops.max()) + 1) and model.l1.gcn1.fc1.shape == (3, 8, 6, 6)
    assert model.data_bn.num_features == 128 * 6 and model.pos_embedding.shape == (1, 6, 128)
    x = torch.randn(3, 2, 10, 6, 1, requires_grad=True)
    out = model.train()(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert model.topo.pl.centres.grad.abs().sum() > 0 and model.t0.mlp.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()


def test_joint_relations_at_init_are_the_identity() -> None:
    torch.manual_seed(0)
    model = build_encoder("blockgcn", 10, layout="ucla20", num_person=1, window=8)
    rel = model.joint_relations(torch.randn(1, 3, 8, 20, 1))
    assert len(rel) == 10 and all(r.shape == (20, 20) for r in rel)
    torch.testing.assert_close(rel[4], torch.eye(20) / (1 + 1e-4))  # fc1 = I, rpe = 0


def test_stdcl_head_wraps_blockgcn() -> None:
    torch.manual_seed(0)
    enc = build_encoder("blockgcn", 4, layout="ucla20", num_person=1, window=16)
    slot_labels = torch.arange(8) % 4
    model = build_stdcl_model(enc, 16, {"dim": 32}, {"num_pos": 2, "num_neg": 6}, slot_labels=slot_labels)
    x = torch.randn(8, 3, 16, 20, 1)
    model.eval()
    with torch.no_grad():
        out = model(x, slot_labels, torch.arange(8))
        assert torch.equal(out["logits"], model.encoder(x))
    model.train()
    out = model(x, slot_labels, torch.arange(8))
    c = out["contrastive"]
    assert c["valid_frac_spatial"] == 1.0 and c["loss"].item() > 0
    c["loss"].backward()
    assert model.encoder.l10.gcn1.fc1.grad.abs().sum() > 0


def test_bad_input_and_options_are_one_line_config_errors() -> None:
    model = build_encoder("blockgcn", 10, layout="ucla20", num_person=1, window=52)
    for shape, what in UCLA_BAD_INPUTS:
        assert_one_line_input_error(model, shape, what)
    with pytest.raises(ConfigError, match="unknown option"):
        build_encoder("blockgcn", 10, layout="ucla20", num_person=1, alpha=True)
    with pytest.raises(ConfigError, match="pairing must be one of"):
        build_encoder("blockgcn", 10, layout="ucla20", num_person=1, pairing="person")
    with pytest.raises(ConfigError, match="drop_out"):
        build_encoder("blockgcn", 10, layout="ucla20", num_person=1, drop_out=1.5)
    ntu = fixture("ntu60")
    with pytest.raises(ConfigError) as e:  # an NTU checkpoint loaded as NW-UCLA
        from_official("blockgcn", seeded_state_dict(ntu["state_dict_shapes"]), 10, "ucla20", num_person=1)
    assert "pos_embedding" in str(e.value) and "(1, 20, 128)" in str(e.value) and "\n" not in str(e.value)
    assert_no_device_calls("blockgcn.py", "blockgcn_blocks.py")
