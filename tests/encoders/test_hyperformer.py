"""Hyperformer encoder: official parity (fixtures), seeded init, sizes, graph/groups, errors, autocast, compile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stdcl.checkpoint import load_encoder, save_encoder
from stdcl.data.graph import hop_distance
from stdcl.data.layouts import get_layout, layout_from_mapping
from stdcl.encoders import build_encoder
from stdcl.encoders.hyperformer import UCLA_BONE_GROUPS, Hyperformer, hyperformer_edges, hyperformer_hops
from stdcl.encoders.hyperformer_blocks import HyperBlock, _bn_train, _max_pool_t3, group_ids
from stdcl.encoders.official import from_official
from stdcl.errors import ConfigError
from tests.support.parity import (UCLA_BAD_INPUTS, assert_init_stats, assert_loaded_official,
                                  assert_one_line_input_error, assert_parameter_count, fixture_input, load_fixture,
                                  max_abs_error, seeded_official)
from tests.support.parity import one_thread  # noqa: F401  (autouse, module-scoped fixture)
from tests.support.official_weights import seeded_state_dict

SETTINGS = ["ntu60", "ucla"]
#: parameter counts of the official model (ZhouYuxuanYX/Hyperformer Model), measured with its configs
OFFICIAL_PARAMS = {"ntu60": 2_729_194, "ucla": 2_695_754}

MINI = layout_from_mapping({
    "name": "mini8", "joints": ["pelvis", "spine", "neck", "head", "l_hand", "r_hand", "l_foot", "r_foot"],
    "edges": [["spine", "pelvis"], ["neck", "spine"], ["head", "neck"], ["l_hand", "neck"], ["r_hand", "neck"],
              ["l_foot", "pelvis"], ["r_foot", "pelvis"]],
    "center": "pelvis", "groups": [3, 3, 3, 3, 7, 7, 9, 9]})  # non-contiguous ids on purpose


def fixture(name: str) -> dict:
    return load_fixture(f"hyperformer_{name}")


def official_model(fx: dict, prefix: str = "") -> Hyperformer:
    a = fx["model_args"]
    return seeded_official("hyperformer", fx["state_dict_shapes"], fx["weight_seed"], prefix,
                           num_classes=a["num_class"], layout=fx["layout"], num_person=a["num_person"],
                           window=fx["input_shape"][2])


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_parity(name: str, prefix: str) -> None:
    fx = fixture(name)
    model = official_model(fx, prefix)
    assert_loaded_official(model, fx["state_dict_shapes"])
    x = fixture_input(fx)
    with torch.no_grad():
        feats = model.features(x)
        logits = model.classify(feats)
    assert feats.map.shape == (x.shape[0], x.shape[4], *model.feature_shape())
    err = max_abs_error(logits, fx["logits_eval"])
    print(f"hyperformer {name}{' (module.)' if prefix else ''}: max |logits - official| = {err:.2e}")
    assert logits.shape == (fx["input_shape"][0], fx["model_args"]["num_class"]) and err < 1e-4


@pytest.mark.parametrize("name", SETTINGS)
def test_official_parity_training_mode(name: str) -> None:
    """Batch-statistics BatchNorm (the fused multi-branch path) matches the official train-mode forward."""
    fx = fixture(name)
    model = official_model(fx).train()
    x = fixture_input(fx)
    with torch.no_grad():
        logits = model(x)
    err = max_abs_error(logits, fx["logits_train"])
    print(f"hyperformer {name} train mode: max |logits - official| = {err:.2e}")
    assert err < 1e-4
    bn = model.l3.tcn1.branches[1][1]
    assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize("name", SETTINGS)
def test_parameter_count_equals_official(name: str) -> None:
    fx = fixture(name)
    a = fx["model_args"]
    model = build_encoder("hyperformer", a["num_class"], layout=fx["layout"], num_person=a["num_person"])
    assert_parameter_count(model, f"hyperformer {name}", fx["num_parameters"], OFFICIAL_PARAMS[name])


@pytest.mark.parametrize("name", SETTINGS)
def test_seeded_init_matches_official(name: str) -> None:
    """Same construction order and init rules: torch.manual_seed(0) draws exactly the official init."""
    fx = fixture(name)
    a = fx["model_args"]
    torch.manual_seed(fx["init_seed"])
    model = build_encoder("hyperformer", a["num_class"], layout=fx["layout"], num_person=a["num_person"])
    assert_init_stats(model, fx["init_sum_abssum"], "abs", rel=1e-9)


@pytest.mark.parametrize("name", SETTINGS)
def test_hops_and_groups_match_official(name: str) -> None:
    fx = fixture(name)
    layout = get_layout(fx["layout"])
    official_hops = np.array(fx["hops"])
    assert np.array_equal(hyperformer_hops(layout), official_hops)
    assert list(layout.groups) == fx["model_args"]["joint_label"]
    model = official_model(fx)
    assert torch.equal(model.l1.vit1.attn.hops, torch.as_tensor(official_hops))
    if name == "ntu60":
        # the ntu25 layout chains hand tip -> thumb -> hand (as 2s-AGCN / CTR-GCN); Hyperformer does not
        assert not np.array_equal(hop_distance(layout), official_hops)
        assert {(21, 7), (22, 7), (23, 11), (24, 11)} <= set(hyperformer_edges(layout))
        assert np.array_equal(hyperformer_hops(layout, "layout"), hop_distance(layout))
    else:
        assert np.array_equal(hop_distance(layout), official_hops)


def test_windows_and_feature_shape() -> None:
    """Any window works (each stride-2 block maps T to ceil(T / 2)); feature_shape needs no forward."""
    torch.manual_seed(0)
    model = build_encoder("hyperformer", 60, layout="ntu25", num_person=2, window=64).eval()
    assert model.feature_shape() == (216, 16, 25)
    for window, t_out in [(64, 16), (52, 13), (20, 5), (37, 10), (1, 1)]:
        assert model.feature_shape(window) == (216, t_out, 25)
        if window > 40:  # 64 and 52 also run in the parity tests
            continue
        with torch.no_grad():
            feats = model.features(torch.randn(1, 3, window, 25, 2))
        assert feats.map.shape == (1, 2, 216, t_out, 25) and feats.map.is_contiguous()
        assert torch.isfinite(feats.map).all()


def test_custom_layout_groups_and_disconnected_joints() -> None:
    torch.manual_seed(0)
    model = build_encoder("hyperformer", 4, layout=MINI, num_person=1, window=16).eval()
    assert model.joint_groups.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert model.l1.vit1.attn.rpe.shape == (int(hop_distance(MINI).max()) + 1, 216)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 8, 1)).shape == (2, 4)
    # a layout whose joints are not all connected is refused before any encoder is built
    with pytest.raises(ConfigError, match="the bone tree is not connected: 'c', 'd' has no parent"):
        layout_from_mapping({"name": "apart", "joints": list("abcd"), "edges": [["b", "a"]], "center": "a",
                             "groups": [0, 0, 1, 1]})


def test_groups_option_and_layout_graph_option() -> None:
    fx = fixture("ucla")
    sd = seeded_state_dict(fx["state_dict_shapes"], fx["weight_seed"])
    x = fixture_input(fx)
    bone = from_official("hyperformer", sd, 10, "ucla20", num_person=1, window=52, groups=UCLA_BONE_GROUPS)
    assert bone.joint_groups.tolist() == list(bone.options["groups"]) == list(UCLA_BONE_GROUPS)
    with torch.no_grad():
        assert (bone(x) - torch.tensor(fx["logits_eval"])).abs().max() > 1e-3  # the groups matter
    # graph="layout" on ntu25: 13 hop buckets, so official NTU weights no longer fit (one-line error)
    ntu = fixture("ntu60")
    with pytest.raises(ConfigError) as e:
        from_official("hyperformer", seeded_state_dict(ntu["state_dict_shapes"]), 60, graph="layout")
    assert "rpe" in str(e.value) and "(12, 216)" in str(e.value) and "\n" not in str(e.value)


def test_bad_input_is_one_line_config_error() -> None:
    model = build_encoder("hyperformer", 10, layout="ucla20", num_person=1, window=52)
    for shape, what in UCLA_BAD_INPUTS:
        assert_one_line_input_error(model, shape, what)


def test_foreign_state_dicts_are_one_line_errors() -> None:
    fx = fixture("ntu60")
    sd = seeded_state_dict(fx["state_dict_shapes"])
    with pytest.raises(ConfigError) as e:  # another class count
        from_official("hyperformer", sd, num_classes=120)
    assert "fc.weight" in str(e.value) and "(60, 216)" in str(e.value) and "(120, 216)" in str(e.value)
    assert "\n" not in str(e.value)
    ctr = build_encoder("ctrgcn", 60).state_dict()  # another encoder
    with pytest.raises(ConfigError) as e:
        from_official("hyperformer", ctr, num_classes=60)
    assert "missing keys" in str(e.value) and "unexpected keys" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:  # an NW-UCLA checkpoint loaded as NTU
        from_official("hyperformer", seeded_state_dict(fixture("ucla")["state_dict_shapes"]), num_classes=10)
    assert "data_bn" in str(e.value) and "\n" not in str(e.value)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        build_encoder("hyperformer", 10, layout="ucla20", num_person=1, heads=9)
    with pytest.raises(ConfigError, match="graph must be one of"):
        build_encoder("hyperformer", 10, layout="ucla20", num_person=1, graph="pyskl")
    with pytest.raises(ConfigError, match="3 group ids"):
        build_encoder("hyperformer", 10, layout="ucla20", num_person=1, groups=[0, 1, 2])
    assert group_ids(get_layout("ucla20")).tolist() == list(get_layout("ucla20").groups)


def test_joint_relations() -> None:
    torch.manual_seed(0)
    model = build_encoder("hyperformer", 10, layout="ucla20", num_person=1, window=20).train()
    with torch.no_grad():
        for b in model.blocks:
            b.vit1.attn.alpha.fill_(0.7)
    before = model.l2.tcn1.branches[0][1].running_mean.clone()
    x = torch.randn(2, 3, 20, 20, 1)
    eff = model.joint_relations(x)
    att = model.joint_relations(x, kind="attention")
    assert model.training and torch.equal(before, model.l2.tcn1.branches[0][1].running_mean)
    assert len(eff) == len(att) == 10 and all(r.shape == (20, 20) for r in eff + att)
    torch.testing.assert_close(att[3].sum(1), torch.ones(20))
    outer = model.l4.vit1.attn.outer.mean(0)
    torch.testing.assert_close(eff[3], 0.7 * att[3] + outer, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="kind"):
        model.joint_relations(x, kind="softmax")


def test_fused_batchnorm_equals_per_branch() -> None:
    torch.manual_seed(0)
    bns = [torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(5)]
    ref = [torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(5)]
    for a, b in zip(bns, ref):
        b.load_state_dict(a.state_dict())
    x = torch.randn(4, 8, 6, 5)
    y = _bn_train(x, bns)
    torch.testing.assert_close(y, torch.cat([ref[0](x[:, :3]), ref[1](x[:, 3:])], 1))
    for a, b in zip(bns, ref):
        for k, v in b.state_dict().items():
            torch.testing.assert_close(a.state_dict()[k], v)


def test_inference_max_pool_equals_kernel() -> None:
    for t in (1, 2, 5, 13):
        for s in (1, 2):
            x = torch.randn(2, 6, t, 4).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                assert torch.equal(_max_pool_t3(x, s), torch.nn.functional.max_pool2d(x, (3, 1), (s, 1), (1, 0)))


def test_autocast_bf16_close_to_fp32() -> None:
    fx = fixture("ucla")
    model = official_model(fx)
    x = fixture_input(fx)
    ref = torch.tensor(fx["logits_eval"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    print(f"hyperformer ucla bf16 autocast: max |diff| / max |logit| = {rel:.3f}")
    assert rel < 0.03
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("train", [False, True])
def test_block_compiles_without_graph_breaks(train: bool) -> None:
    torch.manual_seed(0)
    hops, groups = hyperformer_hops(MINI), group_ids(MINI)
    block = HyperBlock(216, 216, 9, hops, groups, stride=2).train(train)
    x = torch.randn(2, 216, 9, 8).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    with torch.no_grad():
        ref = block(x)
        out = compiled(x)
    assert out.shape == (2, 216, 5, 8)
    if not train:
        torch.testing.assert_close(out, ref)


def test_checkpoint_keeps_options(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_encoder("hyperformer", 10, layout="ucla20", num_person=1, window=20,
                          groups=UCLA_BONE_GROUPS, drop_out=0.2).eval()
    x = torch.randn(1, 3, 20, 20, 1)
    save_encoder(tmp_path / "h.safetensors", model)
    loaded, _ = load_encoder(tmp_path / "h.safetensors")
    assert json.loads(json.dumps(loaded.options)) == json.loads(json.dumps(model.options))
    assert loaded.joint_groups.tolist() == list(UCLA_BONE_GROUPS) and loaded.drop_out.p == 0.2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
