"""ProtoGCN: official parity (backbone, head and prototype loss; fixtures), seeded init, sizes, layouts, STD-CL head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stdcl.data.layouts import layout_from_mapping
from stdcl.encoders import build_encoder
from stdcl.encoders.protogcn import ProtoGCN
from stdcl.errors import ConfigError
from stdcl.head import build_stdcl_model
from tests.support.parity import (GCN_MINI, UCLA_BAD_INPUTS, assert_init_stats, assert_loaded_official,
                                  assert_no_device_calls, assert_one_line_input_error, assert_parameter_count,
                                  fixture_input, fp32_fp64_parity, load_fixture, max_abs_error, seeded_official)
from tests.support.parity import one_thread  # noqa: F401  (autouse, module-scoped fixture)
from tests.support.official_weights import seeded_input

SETTINGS = ["ntu60", "ucla"]
#: parameter counts of the official RecognizerGCN (backbone + cls_head), measured with configs/ntu60_xsub/j.py
OFFICIAL_PARAMS = {"ntu60": 4_344_860, "ucla": 4_249_980}


def fixture(name: str) -> dict:
    return load_fixture(f"protogcn_{name}")


def build(fx: dict, seed: int = 0, **options) -> ProtoGCN:
    """The encoder of a fixture's setting after seeding NumPy (the random graph) and torch."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    return build_encoder("protogcn", fx["num_class"], layout=fx["layout"], num_person=fx["num_person"],
                         window=fx["input_shape"][2], **options)


def official(fx: dict, prefix: str = "") -> ProtoGCN:
    return seeded_official("protogcn", fx["state_dict_shapes"], fx["weight_seed"], prefix,
                           num_classes=fx["num_class"], layout=fx["layout"], num_person=fx["num_person"],
                           window=fx["input_shape"][2])


@pytest.mark.parametrize("name", SETTINGS)
def test_state_dict_and_parameter_count_match_official(name: str) -> None:
    fx = fixture(name)
    model = build(fx)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(fx["state_dict_shapes"].items())
    assert_parameter_count(model, f"protogcn {name}", fx["param_count"], OFFICIAL_PARAMS[name])


@pytest.mark.parametrize("name", SETTINGS)
def test_seeded_build_draws_the_official_init(name: str) -> None:
    """``np.random.seed(0)`` (graph) + ``torch.manual_seed(0)``: every tensor, the class memory and the
    untouched model's eval logits equal the official ones."""
    fx = fixture(name)
    model = build(fx).eval()
    assert list(model.state_dict()) == list(fx["init_sum_abssum"])
    assert_init_stats(model, fx["init_sum_abssum"], "abs", rel=1e-6)
    mem = model.cls_head.csc_loss.avg_f.double()
    assert [mem.sum().item(), mem.abs().sum().item()] == pytest.approx(fx["init_avg_f_sum_abssum"], rel=1e-9)
    with torch.no_grad():
        err = max_abs_error(model(fixture_input(fx)), fx["init_logits_fp32"])
    assert err < 1e-4, err
    a = model.backbone.gcn[0].gcn.A
    assert a.shape == (8, fx["input_shape"][3], fx["input_shape"][3])
    assert all(torch.equal(b.gcn.A, a) for b in model.backbone.gcn)  # every block starts from the same graph


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_parity(name: str, prefix: str) -> None:
    """Seeded weights and BN statistics: logits (max ~4), the one-clip test-mode probabilities and the
    reconstructed relation map equal the official ones (fp32 < 1e-4, fp64 < 1e-9 absolute)."""
    fx = fixture(name)
    model = official(fx, prefix)
    assert_loaded_official(model, fx["state_dict_shapes"])
    x = fixture_input(fx)
    with torch.no_grad():
        feats = model.features(x)
        probs = torch.softmax(model.classify(feats), 1)
    assert feats.map.shape == (x.shape[0], x.shape[4], *model.feature_shape())
    rel = feats.extra
    r = fp32_fp64_parity(model, x, fx)
    with torch.no_grad():
        rel64 = model.features(x.double()).extra
    rel_scale = torch.tensor(fx["relation_fp64"]).abs().max().item()
    print(f"protogcn {name}{' (module.)' if prefix else ''}: max |logits - official| fp32 {r.err32:.2e}, "
          f"fp64 {r.err64:.2e} (scale {r.scale:.2f}); relation fp32 {max_abs_error(rel, fx['relation_fp32']):.2e}")
    assert r.y32.shape == (x.shape[0], fx["num_class"]) and 1.0 < r.scale < 30.0
    assert r.err32 < 1e-4 and r.err64 < 1e-9
    assert max_abs_error(probs, fx["test_probs_fp32"]) < 1e-5
    assert max_abs_error(rel, fx["relation_fp32"]) < 1e-4 * max(1.0, rel_scale)
    assert max_abs_error(rel64, fx["relation_fp64"]) < 1e-9 * max(1.0, rel_scale)


@pytest.mark.parametrize("name", SETTINGS)
def test_official_parity_training_mode(name: str) -> None:
    fx = fixture(name)
    model = official(fx).train()
    with torch.no_grad():
        err = max_abs_error(model(fixture_input(fx)), fx["logits_train_fp32"])
    assert err < 1e-4, err
    assert int(model.backbone.bn.num_batches_tracked) == 1


@pytest.mark.parametrize("name", SETTINGS)
def test_prototype_loss_equals_official(name: str) -> None:
    """``CE + auxiliary_loss`` equals the official ``BaseHead.loss`` (CE + 0.2 * csc) over two steps
    from a seeded class memory, and the memory moves as officially."""
    fx = fixture(name)
    p = fx["proto_loss"]
    model = official(fx)
    model.cls_head.csc_loss.avg_f = seeded_input((256, fx["num_class"]), p["memory_seed"])
    assert model.proto_loss_weight == p["weight"]
    x = fixture_input(fx)
    for labels, ref in zip(p["labels"], p["loss_cls"]):
        y = torch.tensor(labels)
        with torch.no_grad():
            feats = model.features(x)
            logits = model.classify(feats)
            aux = model.auxiliary_loss(feats, logits, y, update=True)
        total = F.cross_entropy(logits, y) + aux["loss"]
        assert total.item() == pytest.approx(ref, rel=1e-5, abs=1e-5)
        assert aux["loss"].item() == pytest.approx(p["weight"] * aux["proto"].item())
    mem = model.cls_head.csc_loss.avg_f.double()
    assert [mem.sum().item(), mem.abs().sum().item()] == pytest.approx(p["memory_after_sum_abssum"], rel=1e-5)


def test_auxiliary_loss_follows_the_mode_and_weight() -> None:
    torch.manual_seed(0)
    model = build_encoder("protogcn", 4, layout="ucla20", num_person=1, window=16).eval()
    x, y = torch.randn(2, 3, 16, 20, 1), torch.tensor([0, 1])
    feats = model.features(x)
    before = model.cls_head.csc_loss.avg_f.clone()
    model.auxiliary_loss(feats, model.classify(feats), y)  # eval mode: the memory stays
    assert torch.equal(model.cls_head.csc_loss.avg_f, before)
    off = build_encoder("protogcn", 4, layout="ucla20", num_person=1, window=16, proto_loss_weight=0)
    assert off.auxiliary_loss(feats, model.classify(feats), y) is None
    with pytest.raises(ConfigError, match="extra is None"):
        model.auxiliary_loss(feats._replace(extra=None), model.classify(feats), y)
    with pytest.raises(ConfigError, match="unknown option.*num_prototypes"):
        build_encoder("protogcn", 4, layout="ucla20", num_person=1, num_prototypes=10)
    with pytest.raises(ConfigError, match="proto_loss_weight"):
        build_encoder("protogcn", 4, layout="ucla20", num_person=1, proto_loss_weight=-1)


@pytest.mark.parametrize("window, t_out", [(64, 16), (100, 25), (52, 13), (20, 5), (1, 1), (7, 2)])
def test_feature_shape_equals_the_map(window: int, t_out: int) -> None:
    torch.manual_seed(0)
    model = build_encoder("protogcn", 10, layout="ucla20", num_person=1, window=window).eval()
    with torch.no_grad():
        f = model.features(torch.randn(1, 3, window, 20, 1))
    assert model.feature_shape() == (384, t_out, 20) == tuple(f.map.shape[2:]) and f.extra.shape == (1, 400)
    with pytest.raises(ConfigError, match="window must be >= 1"):
        model.feature_shape(0)


@pytest.mark.parametrize("shape, needle", UCLA_BAD_INPUTS)
def test_bad_inputs_are_one_line_errors(shape: tuple[int, ...], needle: str) -> None:
    model = build_encoder("protogcn", 10, layout="ucla20", num_person=1, window=52)
    assert_one_line_input_error(model, shape, needle)


def test_no_device_calls() -> None:
    assert_no_device_calls("protogcn.py", "protogcn_blocks.py")


def test_stdcl_head_and_prototype_loss_together() -> None:
    """The STD-CL head wraps ProtoGCN unchanged; CE + STD-CL + prototype loss reach the encoder and cl_fc."""
    torch.manual_seed(0)
    enc = build_encoder("protogcn", 4, layout="ucla20", num_person=1, window=16)
    slot_labels = torch.arange(8) % 4
    model = build_stdcl_model(enc, 16, {"dim": 32}, {"num_pos": 2, "num_neg": 6}, slot_labels=slot_labels)
    model.train()
    x, y, idx = torch.randn(4, 3, 16, 20, 1), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])
    out = model(x, y, idx)
    feats = enc.features(x)  # what an engine hook computes alongside (same batch, same weights)
    aux = enc.auxiliary_loss(feats, enc.classify(feats), y)
    total = F.cross_entropy(out["logits"], y) + out["contrastive"]["loss"] + aux["loss"]
    total.backward()
    assert torch.isfinite(total)
    assert enc.cls_head.csc_loss.cl_fc.weight.grad.abs().sum() > 0
    # alpha = beta = 0 at init, so the graph fed to the prototypes is 0 and only their memory gets a gradient
    assert enc.backbone.prn.memory_matrix.weight.grad.abs().sum() > 0 and enc.backbone.post.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.head.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, y, idx)["logits"], enc(x))


def test_custom_layouts_build_their_own_graph() -> None:
    """A 6-joint 2-D layout and a 30-joint one: V x V graphs, a V*V-wide cl_fc, add_coeff of max(25, V)."""
    np.random.seed(3)
    torch.manual_seed(0)
    mini = build_encoder("protogcn", 4, layout=GCN_MINI, in_channels=2, num_person=1, window=20).eval()
    assert mini.backbone.gcn[0].gcn.A.shape == (8, 6, 6) and mini.backbone.data_bn.num_features == 12
    assert mini.cls_head.csc_loss.cl_fc.in_features == 36 and mini.backbone.gcn[3].tcn.add_coeff.shape == (25,)
    with torch.no_grad():
        f = mini.features(torch.randn(2, 2, 20, 6, 1))
    assert f.map.shape == (2, 1, *mini.feature_shape()) == (2, 1, 384, 5, 6) and f.extra.shape == (2, 36)
    assert torch.isfinite(mini.classify(f)).all()
    joints = [f"j{i}" for i in range(30)]
    big = layout_from_mapping({"name": "chain30", "joints": joints, "center": "j0",
                               "edges": [[joints[i + 1], joints[i]] for i in range(29)]})
    model = build_encoder("protogcn", 3, layout=big, num_person=2, window=8).eval()
    assert model.backbone.gcn[1].tcn.add_coeff.shape == (30,)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 30, 2)).shape == (1, 3)


def test_joint_relations_are_the_applied_topologies() -> None:
    """At init (alpha = beta = 0) each block applies its graph A: the map is A's subset mean, receiver by
    sender; with learned terms on, the padded (all-zero) second person is left out of the average."""
    np.random.seed(0)
    torch.manual_seed(0)
    model = build_encoder("protogcn", 5, window=16).train()
    x = torch.randn(2, 3, 16, 25, 2)
    x[1, ..., 1] = 0  # sample 1 has one actor
    before = model.backbone.gcn[2].gcn.bn.running_mean.clone()
    rel = model.joint_relations(x)
    assert model.training and torch.equal(model.backbone.gcn[2].gcn.bn.running_mean, before)
    assert len(rel) == 10 and all(r.shape == (25, 25) and torch.isfinite(r).all() for r in rel)
    torch.testing.assert_close(rel[0], model.backbone.gcn[0].gcn.A.mean(0).t())
    with torch.no_grad():
        for b in model.backbone.gcn:
            b.gcn.alpha.fill_(0.5)
            b.gcn.beta.fill_(0.5)
    rel = model.joint_relations(x)
    model.eval()
    with torch.no_grad():
        per = model.backbone.gcn[0].gcn.topology(model.backbone.embed(x))[1].mean(dim=(1, 2))  # (N*M, V, V)
    torch.testing.assert_close(rel[0], per[[0, 1, 2]].mean(0).t())
    assert not torch.allclose(rel[0], per.mean(0).t())
