"""HCN encoder: official parity (fixtures), seeded init, sizes, the STD-CL map, errors, autocast, compile."""

from __future__ import annotations

import pytest
import torch

from stdcl.data.layouts import layout_from_mapping
from stdcl.encoders import build_encoder
from stdcl.encoders.base import Features
from stdcl.encoders.official import from_official
from stdcl.errors import ConfigError
from tests.support.parity import (assert_init_stats, assert_loaded_official, assert_no_device_calls,
                                  assert_one_line_input_error, assert_parameter_count, fixture_input, load_fixture,
                                  max_abs_error, seeded_official)
from tests.support.official_weights import seeded_state_dict

SETTINGS = ["ntu60_w64", "ntu60_w32", "ucla10_w52"]


def fixture(name: str) -> dict:
    return load_fixture(f"hcn_{name}")


def official_model(fx: dict, prefix: str = ""):
    return seeded_official("hcn", fx["state_dict_shapes"], fx["weight_seed"], prefix, num_classes=fx["num_classes"],
                           layout=fx["layout"], num_person=fx["num_person"], window=fx["window"])


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_parity(name: str, prefix: str) -> None:
    fx = fixture(name)
    model = official_model(fx, prefix)
    assert_loaded_official(model, fx["state_dict_shapes"])
    x = fixture_input(fx)
    with torch.no_grad():
        logits = model(x)
    err = max_abs_error(logits, fx["logits"])
    print(f"hcn {name}{' (module.)' if prefix else ''}: max |logits - official| = {err:.2e}")
    assert logits.shape == (fx["input_shape"][0], fx["num_classes"]) and err < 1e-4


@pytest.mark.parametrize("name", SETTINGS)
def test_seeded_init_matches_reference(name: str) -> None:
    """Same construction order and Glorot-uniform draws: torch.manual_seed(0) gives the reference's init."""
    fx = fixture(name)
    torch.manual_seed(fx["init_seed"])
    model = build_encoder("hcn", num_classes=fx["num_classes"], layout=fx["layout"],
                          num_person=fx["num_person"], window=fx["window"])
    assert_init_stats(model, fx["init_sum_abssum"], "abs", rel=1e-6)
    for k, v in model.named_parameters():
        if k.endswith(".bias"):
            assert not v.any(), k


@pytest.mark.parametrize("name,layout,window,classes,persons,count", [
    ("ntu60_w32", "ntu25", 32, 60, 2, 1_062_652),
    ("ntu60_w64", "ntu25", 64, 60, 2, 2_647_868),
    ("ucla10_w52", "ucla20", 52, 10, 1, 1_697_202),
])
def test_parameter_counts(name: str, layout: str, window: int, classes: int, persons: int, count: int) -> None:
    model = build_encoder("hcn", num_classes=classes, layout=layout, num_person=persons, window=window)
    assert_parameter_count(model, f"hcn {layout} window {window}, {classes} classes", count,
                           fixture(name)["param_count"])


@pytest.mark.parametrize("layout,persons,window", [("ntu25", 2, 64), ("ucla20", 1, 52)])
def test_map_shape_and_gradients(layout: str, persons: int, window: int) -> None:
    torch.manual_seed(0)
    model = build_encoder("hcn", num_classes=7, layout=layout, num_person=persons, window=window)
    v = model.layout.num_joints
    x = torch.randn(2, 3, window, v, persons)
    feats = model.features(x)
    assert model.feature_shape(window) == model.feature_shape() == (2 * window, window, v)
    assert feats.map.shape == (2, persons, *model.feature_shape(window)) and feats.extra is None
    # the STD-CL head pools over T' (per joint) and V' (per frame); a loss on those reaches conv1 of both streams
    spatial, temporal = feats.map.mean(dim=3), feats.map.mean(dim=4)
    (spatial.square().mean() + temporal.square().mean()).backward(retain_graph=True)
    for name in ("conv1.0.weight", "conv1m.0.weight", "conv2.weight", "conv2m.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # ... and the classification path depends on exactly this map
    feats.map.retain_grad()
    model.classify(feats).sum().backward()
    assert feats.map.grad is not None and feats.map.grad.abs().sum() > 0


def test_classify_of_features_is_forward_and_custom_layout() -> None:
    joints = [f"j{i}" for i in range(17)]
    lay = layout_from_mapping({"name": "coco17", "joints": joints, "edges": [[i, 0] for i in range(1, 17)],
                               "center": 0})
    torch.manual_seed(0)
    model = build_encoder("hcn", num_classes=5, layout=lay, num_person=3, window=40).eval()
    x = torch.randn(2, 3, 40, 17, 3)
    with torch.no_grad():
        f = model.features(x)
        assert f.map.shape == (2, 3, 80, 40, 17)
        assert torch.equal(model.classify(f), model(x))
    assert model.conv3[0].in_channels == 17 and model.fc7[0].in_features == 256 * 2 * 2


def test_person_max_matches_duplicated_person() -> None:
    """One person == the same person twice (max(a, a) = a), how the NW-UCLA fixture was produced."""
    torch.manual_seed(0)
    one = build_encoder("hcn", num_classes=10, layout="ucla20", num_person=1, window=52).eval()
    two = build_encoder("hcn", num_classes=10, layout="ucla20", num_person=2, window=52).eval()
    two.load_state_dict(one.state_dict())
    x = torch.randn(2, 3, 52, 20, 1)
    with torch.no_grad():
        assert torch.allclose(one(x), two(x.repeat(1, 1, 1, 1, 2)), atol=1e-6)


@pytest.mark.parametrize("shape,needle", [
    ((2, 3, 64, 25), "rank 5"),
    ((2, 2, 64, 25, 2), "C=3"),
    ((2, 3, 64, 20, 2), "V=25"),
    ((2, 3, 64, 25, 1), "M=2"),
    ((2, 3, 60, 25, 2), "T=64"),
])
def test_bad_input_one_line_error(shape: tuple, needle: str) -> None:
    model = build_encoder("hcn", num_classes=60, window=64)
    assert_one_line_input_error(model, shape, needle)


def test_bad_config_one_line_errors() -> None:
    for kwargs, needle in [(dict(window=12), "window"), (dict(window=64, widht=3), "widht")]:
        with pytest.raises(ConfigError, match=needle) as e:
            build_encoder("hcn", num_classes=60, **kwargs)
        assert "\n" not in str(e.value)
    model = build_encoder("hcn", num_classes=60, window=64)
    with pytest.raises(ConfigError, match="window=64"):
        model.feature_shape(32)
    with pytest.raises(ConfigError, match="classify expects"):
        model.classify(Features(torch.zeros(2, 2, 64, 64, 25)))


def test_wrong_state_dict_one_line_error() -> None:
    fx = fixture("ntu60_w64")
    sd = seeded_state_dict(fx["state_dict_shapes"], 0)
    cases = [
        (sd, dict(num_classes=120, window=64), "fc8.weight"),                       # other class count
        (sd, dict(num_classes=60, window=32), "conv2.weight"),                      # other window
        (seeded_state_dict(fixture("ucla10_w52")["state_dict_shapes"]),
         dict(num_classes=60, window=64), "conv2.weight"),                          # other dataset
        ({"data_bn.weight": torch.ones(150), "l1.gcn1.PA": torch.zeros(3, 25, 25), "fc.weight": torch.zeros(60, 256)},
         dict(num_classes=60, window=64), "missing keys"),                           # another encoder
    ]
    for state, kwargs, needle in cases:
        with pytest.raises(ConfigError) as e:
            from_official("hcn", state, **kwargs)
        assert "\n" not in str(e.value) and needle in str(e.value), str(e.value)


def test_train_mode_dropout_and_eval_determinism() -> None:
    torch.manual_seed(0)
    model = build_encoder("hcn", num_classes=60, window=32)
    x = torch.randn(2, 3, 32, 25, 2)
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_autocast_bf16_close_to_fp32() -> None:
    fx = fixture("ntu60_w64")
    model = official_model(fx)
    x = fixture_input(fx)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    err = (low.float() - ref).abs().max().item()
    print(f"hcn bf16 autocast: max |diff| = {err:.3f} (fp32 logits up to {ref.abs().max().item():.2f})")
    assert err < 0.05 * ref.abs().max().item() + 0.02


def test_compiles_without_graph_breaks() -> None:
    torch.manual_seed(0)
    model = build_encoder("hcn", num_classes=10, layout="ucla20", num_person=1, window=16).eval()
    x = torch.randn(2, 3, 16, 20, 1)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)


def test_no_device_calls_in_source() -> None:
    assert_no_device_calls("hcn.py", needles=(".cuda(", "device="))
