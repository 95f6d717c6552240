"""The STD-CL decoupling head: shapes on every encoder's map, init, persons, exact decomposition."""

import math

import pytest
import torch
from torch import nn

from stdcl.encoders import available, build_encoder
from stdcl.encoders.registry import spec
from stdcl.errors import ConfigError
from stdcl.head import DecouplingHead


def _encoder(name, layout, persons, window):
    return build_encoder(name, 60 if layout == "ntu25" else 10, layout=layout, num_person=persons, window=window)


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("layout, persons, window, v", [("ntu25", 2, 64, 25), ("ucla20", 1, 52, 20)])
def test_shapes_on_every_encoder_map(name, layout, persons, window, v):
    torch.manual_seed(0)
    enc = _encoder(name, layout, persons, window).eval()
    c, t, vv = enc.feature_shape(window)
    with torch.no_grad():
        fmap = enc.features(torch.randn(2, 3, window, v, persons)).map
    assert tuple(fmap.shape) == (2, persons, c, t, vv)  # feature_shape tells the head what it gets
    if name == "hcn":  # conv2 outputs of both streams; joints kept on the last axis
        assert (c, t, vv) == (2 * window, window, v)
    elif spec(name).joint_relations:  # graph encoders keep the joints and downsample time 4x
        assert (t, vv) == (math.ceil(window / 4), v)
    head = DecouplingHead((c, t, vv))
    assert head.reduced == c // 8
    assert head.spatial.project.in_features == vv * (c // 8)
    assert head.temporal.project.in_features == t * (c // 8)
    out = head(fmap)
    assert set(out) == {"spatial", "temporal"}
    assert all(o.shape == (2, 256) for o in out.values())


def test_head_on_real_features():
    enc = _encoder("hcn", "ucla20", 1, 32)
    x = torch.randn(2, 3, 32, 20, 1)
    head = DecouplingHead(enc.feature_shape(32), dim=64)
    with torch.no_grad():
        out = head(enc.features(x).map)
    assert out["spatial"].shape == out["temporal"].shape == (2, 64)


def test_kaiming_fan_out_init_and_zero_bias():
    torch.manual_seed(0)
    head = DecouplingHead((256, 16, 25), reduction=8, dim=256)
    for br in (head.spatial, head.temporal):
        assert br.reduce.weight.shape == (32, 256, 1)
        # fan_out of a 1x1 conv (32, 256, 1) is 32; of a linear (256, in) it is 256
        assert br.reduce.weight.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.05)
        assert br.project.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.02)
        assert br.reduce.weight.mean().abs().item() < 0.02
        assert torch.count_nonzero(br.reduce.bias) == 0 and torch.count_nonzero(br.project.bias) == 0


def test_released_init_keeps_torch_default_for_the_reductions():
    torch.manual_seed(0)
    head = DecouplingHead((256, 16, 25), init="released")
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=sqrt(5)) of a Conv1d with fan_in 256
    for br in (head.spatial, head.temporal):
        assert br.reduce.weight.abs().max().item() <= bound
        assert br.reduce.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(br.reduce.bias) > 0
        assert br.project.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.02)
        assert torch.count_nonzero(br.project.bias) == 0


def _released_std_unit(head, fmap):
    """The released ``STD_unit`` forward (persons in the batch, then ``.view(N, M, -1).mean(1)``)."""
    n, m, c, t, v = fmap.shape
    x = fmap.reshape(n * m, c, t, v)
    x_s = head.spatial.project(head.spatial.reduce(x.mean(-2)).view(n * m, -1))
    x_t = head.temporal.project(head.temporal.reduce(x.mean(-1)).view(n * m, -1))
    return x_s.view(n, m, -1).mean(1), x_t.view(n, m, -1).mean(1)


def test_matches_the_released_flatten_order_and_person_mean():
    torch.manual_seed(1)
    head = DecouplingHead((48, 6, 5), reduction=8, dim=16).double()
    for p in head.parameters():  # non-zero biases so their placement is checked too
        nn.init.normal_(p)
    fmap = torch.randn(3, 2, 48, 6, 5, dtype=torch.float64)
    out = head(fmap)
    s, t = _released_std_unit(head, fmap)
    torch.testing.assert_close(out["spatial"], s, rtol=0, atol=1e-12)
    torch.testing.assert_close(out["temporal"], t, rtol=0, atol=1e-12)


def test_mean_over_persons():
    torch.manual_seed(2)
    head = DecouplingHead((32, 8, 7), dim=24)
    fmap = torch.randn(4, 2, 32, 8, 7)
    out = head(fmap)
    p0, p1 = head(fmap[:, :1]), head(fmap[:, 1:])
    for k in out:
        torch.testing.assert_close(out[k], (p0[k] + p1[k]) / 2, rtol=1e-6, atol=1e-6)


def _randomise_scores(head):
    for br in (head.spatial, head.temporal):
        if br is not None and br.score is not None:
            nn.init.normal_(br.score.weight)
            nn.init.normal_(br.score.bias)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_contributions_are_an_exact_decomposition(pooling, dtype, atol):
    torch.manual_seed(3)
    head = DecouplingHead((64, 16, 25), dim=32, pooling=pooling).to(dtype)
    _randomise_scores(head)
    for br in (head.spatial, head.temporal):
        nn.init.normal_(br.project.bias)
    fmap = torch.randn(3, 2, 64, 16, 25, dtype=dtype) * 0.3
    out = head(fmap)
    contrib = head.contributions(fmap)
    assert contrib["spatial"][0].shape == (3, 25, 32) and contrib["temporal"][0].shape == (3, 16, 32)
    for k, (terms, bias) in contrib.items():
        assert bias.shape == (32,)
        torch.testing.assert_close(terms.sum(1) + bias, out[k], rtol=0, atol=atol)


def test_attention_weights():
    torch.manual_seed(4)
    fmap = torch.randn(2, 2, 40, 10, 20)
    assert DecouplingHead((40, 10, 20)).attention_weights(fmap) is None
    mean = DecouplingHead((40, 10, 20), dim=16)
    att = DecouplingHead((40, 10, 20), dim=16, pooling="attention")
    missing, unexpected = att.load_state_dict(mean.state_dict(), strict=False)
    assert not unexpected and all(".score." in k for k in missing)
    w = att.attention_weights(fmap)
    assert w["spatial"].shape == (2, 2, 20) and w["temporal"].shape == (2, 2, 10)
    # zero-initialised scores: uniform weights, identical to the mean-pooled head
    torch.testing.assert_close(w["spatial"], torch.full_like(w["spatial"], 1 / 20))
    for k in ("spatial", "temporal"):
        torch.testing.assert_close(att(fmap)[k], mean(fmap)[k], rtol=1e-5, atol=1e-6)
    _randomise_scores(att)
    w = att.attention_weights(fmap)
    for k in w:
        torch.testing.assert_close(w[k].sum(-1), torch.ones(2, 2))
        assert (w[k] > 0).all() and w[k].std() > 0
    assert not torch.allclose(att(fmap)["spatial"], mean(fmap)["spatial"])


@pytest.mark.parametrize("branches", [("spatial",), ("temporal",), ("temporal", "spatial")])
def test_branch_subsets(branches):
    head = DecouplingHead((32, 8, 5), dim=8, branches=branches)
    out = head(torch.randn(2, 1, 32, 8, 5))
    assert set(out) == set(branches)
    assert set(head.contributions(torch.randn(2, 1, 32, 8, 5))) == set(branches)
    names = {n.split(".")[0] for n, _ in head.named_parameters()}
    assert names == set(branches)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="branches"):
        DecouplingHead((32, 8, 5), branches=("spatial", "joint"))
    with pytest.raises(ConfigError, match="branches"):
        DecouplingHead((32, 8, 5), branches=())
    with pytest.raises(ConfigError, match="pooling"):
        DecouplingHead((32, 8, 5), pooling="max")
    with pytest.raises(ConfigError, match="init"):
        DecouplingHead((32, 8, 5), init="xavier")
    with pytest.raises(ConfigError, match="reduced"):
        DecouplingHead((4, 8, 5), reduction=8)
    head = DecouplingHead((32, 8, 5))
    with pytest.raises(ConfigError, match=r"\(N, M, 32, 8, 5\)"):
        head(torch.randn(2, 1, 32, 8, 6))


def test_rounding_of_c_over_r_is_floor_as_released():
    head = DecouplingHead((30, 4, 3), reduction=8)
    assert head.reduced == 3  # 30 // 8
    assert head(torch.randn(1, 1, 30, 4, 3))["spatial"].shape == (1, 256)
