"""The training-time model: logits untouched, exportable encoder, contrastive gradient reaches the encoder."""

import pytest
import torch

from stdcl.encoders import build_encoder
from stdcl.errors import ConfigError
from stdcl.head import DecouplingHead, STDCLLoss, STDCLModel, build_stdcl_model

ENCODERS = ["hcn", "ctrgcn"]  # a CNN and a GCN; every encoder's map shape is covered in test_head.py
WINDOW = 16


def _encoder(name, seed=0):
    torch.manual_seed(seed)
    return build_encoder(name, 4, layout="ucla20", num_person=1, window=WINDOW)


def _model(name, **loss_options):
    enc = _encoder(name)
    slot_labels = torch.arange(8) % 4
    opts = {"num_pos": 2, "num_neg": 6, **loss_options}
    return build_stdcl_model(enc, WINDOW, {"dim": 32}, opts, slot_labels=slot_labels), slot_labels


@pytest.mark.parametrize("name", ENCODERS)
def test_logits_are_the_encoders_bit_for_bit(name):
    model, _ = _model(name)
    model.eval()
    x = torch.randn(3, 3, WINDOW, 20, 1)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
        direct = model.encoder(x)
    assert torch.equal(out["logits"], direct)
    assert set(out["embeddings"]) == {"spatial", "temporal"}
    assert "contrastive" not in out and not model.loss.banks["spatial"].filled.any()  # eval never fills the bank
    model.train()
    out = model(x, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert set(out["contrastive"]) == {"loss", "spatial", "temporal", "valid_frac_spatial", "valid_frac_temporal"}
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"logits"}  # no labels: inference path only


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_state_dict_names_are_the_baselines(name):
    model, _ = _model(name)
    baseline = _encoder(name, seed=1)
    assert list(model.encoder.state_dict()) == list(baseline.state_dict())
    assert type(model.encoder) is type(baseline)
    enc_keys = {k for k in model.state_dict() if k.startswith("encoder.")}
    assert enc_keys == {f"encoder.{k}" for k in baseline.state_dict()}
    assert baseline.load_state_dict(model.encoder.state_dict()) is not None  # strict load


@pytest.mark.parametrize("name", ENCODERS)
def test_contrastive_loss_backward_reaches_the_encoder(name):
    model, slot_labels = _model(name)
    model.train()
    x = torch.randn(8, 3, WINDOW, 20, 1)
    out = model(x, slot_labels, torch.arange(8))  # the batch fills every slot before comparing
    c = out["contrastive"]
    assert c["valid_frac_spatial"] == 1.0 and c["loss"].item() > 0
    c["loss"].backward()
    grads = {n: p.grad for n, p in model.encoder.named_parameters()}
    reached = [n for n, g in grads.items() if g is not None and g.abs().max() > 0]
    assert reached, "no encoder parameter received a contrastive gradient"
    assert all(p.grad is not None for p in model.head.parameters())
    if name == "hcn":
        assert {n.split(".")[0] for n in reached} >= {"conv1", "conv2", "conv1m", "conv2m"}


def test_baseline_and_head_only():
    enc = _encoder("hcn")
    base = build_stdcl_model(enc, WINDOW, None, {"num_pos": 2})
    assert base.head is None and base.loss is None
    assert build_stdcl_model(enc, WINDOW, {"enabled": False}, None).head is None
    x = torch.randn(2, 3, WINDOW, 20, 1)
    out = base(x, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert set(out) == {"logits"}
    head_only = build_stdcl_model(enc, WINDOW, {"branches": ["temporal"], "pooling": "attention"}, None)
    out = head_only(x, torch.tensor([0, 1]))
    assert set(out) == {"logits", "embeddings"} and set(out["embeddings"]) == {"temporal"}
    assert head_only.head.feature_shape == enc.feature_shape(WINDOW)


def test_options_are_checked():
    enc = _encoder("hcn")
    with pytest.raises(ConfigError, match="unknown rduction"):
        build_stdcl_model(enc, WINDOW, {"rduction": 4}, None)
    with pytest.raises(ConfigError, match="unknown nm_pos"):
        build_stdcl_model(enc, WINDOW, {}, {"nm_pos": 4}, slot_labels=torch.arange(8) % 4)
    with pytest.raises(ConfigError, match="NO class"):  # 2 slots per class can never give 128 positives
        build_stdcl_model(enc, WINDOW, {}, {"strict": True}, slot_labels=torch.arange(8) % 4)
    model = build_stdcl_model(enc, WINDOW, {"dim": 16}, {"bank": "class_queue", "queue_length": 8, "num_pos": 4,
                                                         "num_neg": 8})
    assert model.loss.banks["spatial"].num_classes == 4 and model.loss.dim == 16
    head = DecouplingHead(enc.feature_shape(WINDOW), branches=("spatial",))
    with pytest.raises(ConfigError, match="branches"):
        STDCLModel(enc, head, STDCLLoss(slot_labels=torch.arange(8) % 4))
    with pytest.raises(ConfigError, match="needs the decoupling head"):
        STDCLModel(enc, None, STDCLLoss(slot_labels=torch.arange(8) % 4))


def test_an_encoders_own_term_joins_the_objective_beside_stdcl():
    """ProtoGCN's prototype loss (``Encoder.auxiliary_loss``) is added to CE + STD-CL in training mode
    only, logged as ``proto``, and its gradient reaches the prototype layers; weight 0 turns it off."""
    from stdcl.train.distributed import DistInfo
    from stdcl.train.objective import training_loss

    torch.manual_seed(0)
    enc = build_encoder("protogcn", 4, layout="ucla20", num_person=1, window=WINDOW, num_prototype=8)
    slot_labels = torch.arange(8) % 4
    model = build_stdcl_model(enc, WINDOW, {"dim": 32}, {"num_pos": 2, "num_neg": 6}, slot_labels=slot_labels)
    x, y, idx = torch.randn(8, 3, WINDOW, 20, 1), slot_labels.clone(), torch.arange(8)
    model.train()
    out = model(x, labels=y, indices=idx)
    aux = out["auxiliary"]
    assert set(aux) == {"loss", "proto"} and torch.allclose(aux["loss"].detach(), 0.2 * aux["proto"])
    total, ce, values = training_loss(out, y, {}, 0.0, DistInfo(), torch.device("cpu"))
    expect = ce + out["contrastive"]["loss"] + aux["loss"]
    torch.testing.assert_close(total, expect)
    assert values["proto"] == pytest.approx(float(aux["proto"]))
    total.backward()
    proto_layer = enc.cls_head.csc_loss.cl_fc.weight
    assert proto_layer.grad is not None and proto_layer.grad.abs().sum() > 0
    model.eval()
    assert "auxiliary" not in model(x, labels=y, indices=idx)  # evaluation adds nothing
    off = build_encoder("protogcn", 4, layout="ucla20", num_person=1, window=WINDOW, num_prototype=8,
                        proto_loss_weight=0.0)
    assert "auxiliary" not in STDCLModel(off, None, None).train()(x, labels=y)
