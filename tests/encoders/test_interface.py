"""The interface every registered encoder shares (the STD-CL head relies on it), the registry's descriptions,
checkpoints and import-official. Parametrised over ``available()``: a new encoder is tested here unedited."""

import pytest
import torch

from stdcl.checkpoint import load_encoder, save_encoder
from stdcl.cli import main
from stdcl.data.layouts import layout_from_mapping
from stdcl.encoders import available, build_encoder
from stdcl.encoders.registry import register_encoder, spec, specs
from stdcl.errors import ConfigError
from stdcl.train.config import load_config
from stdcl.train.estimate import expected_seconds
from tests.support.paths import TESTS

ENCODERS = available()

MINI = layout_from_mapping({
    "name": "mini8", "joints": ["pelvis", "spine", "neck", "head", "l_hand", "r_hand", "l_foot", "r_foot"],
    "edges": [["spine", "pelvis"], ["neck", "spine"], ["head", "neck"], ["l_hand", "neck"], ["r_hand", "neck"],
              ["l_foot", "pelvis"], ["r_foot", "pelvis"]],
    "center": "pelvis", "groups": [0, 0, 0, 0, 1, 1, 2, 2]})


def test_registry_discovers_every_encoder_module():
    assert {"hcn", "agcn", "ctrgcn", "hyperformer"} <= set(ENCODERS) and ENCODERS == sorted(ENCODERS)
    assert [s.name for s in specs()] == ENCODERS
    with pytest.raises(ConfigError, match="unknown encoder 'stgcn'; available: " + ", ".join(ENCODERS)):
        build_encoder("stgcn", 10)


@pytest.mark.parametrize("name", ENCODERS)
def test_description_feeds_recipe_estimate_and_cli(name, capsys):
    s = spec(name)
    assert s.factory.name == name and s.title and "/" in s.source and s.cpu_cost > 0
    assert s.paper_gflops is None or s.paper_gflops > 0
    cfg = load_config("synthetic", encoder=name)  # the recipe file exists and resolves
    assert cfg["model"]["encoder"] == name
    # the estimate scales the registered cost: twice the window, twice the time (start-up aside)
    a, b = (expected_seconds(name, 1000, 1, "cpu", w) - expected_seconds(name, 0, 1, "cpu", w) for w in (32, 64))
    assert a == pytest.approx(1000 * s.cpu_cost) and b == pytest.approx(2 * a)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "{" + ",".join(ENCODERS) + "}" in capsys.readouterr().out.replace("\n", "").replace(" ", "")


def test_registration_is_checked():
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_encoder("Bad-Name", title="x", source="a/b", cpu_cost=1.0)
    with pytest.raises(ValueError, match="cpu_cost must be > 0"):
        register_encoder("fine", title="x", source="a/b", cpu_cost=0.0)
    with pytest.raises(ValueError, match="registered twice"):
        register_encoder("hcn", title="x", source="a/b", cpu_cost=1.0)(type("Other", (torch.nn.Module,), {}))


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("layout, persons, window, classes", [("ntu25", 2, 64, 60), ("ucla20", 1, 52, 10),
                                                             (MINI, 1, 32, 4)])
def test_features_classify_and_feature_shape(name, layout, persons, window, classes):
    torch.manual_seed(0)
    model = build_encoder(name, classes, layout=layout, num_person=persons, window=window).eval()
    v = 25 if layout == "ntu25" else 20 if layout == "ucla20" else 8
    x = torch.randn(2, 3, window, v, persons)
    with torch.no_grad():
        feats = model.features(x)
        logits = model.classify(feats)
        direct = model(x)
    c, t, vv = model.feature_shape(window)
    assert feats.map.shape == (2, persons, c, t, vv)
    assert logits.shape == (2, classes)
    torch.testing.assert_close(logits, direct, rtol=0, atol=0)
    # timm-style head access: the classifier's input and the final linear layer give the logits
    pre = model.pre_logits(feats)
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == classes
    assert pre.shape == (2, model.classifier.in_features)
    torch.testing.assert_close(model.classifier(pre), logits, rtol=0, atol=0)
    rel = model.joint_relations(x)
    if not spec(name).joint_relations:
        assert rel is None
    else:  # an encoder that relates joints keeps them in its map
        assert vv == v and rel and all(r.shape == (v, v) for r in rel)


@pytest.mark.parametrize("name", ENCODERS)
def test_bad_inputs_are_one_line_errors(name):
    model = build_encoder(name, 60)
    for shape, what in [((2, 3, 64, 25), "rank 5"), ((2, 2, 64, 25, 2), "C=3"), ((2, 3, 64, 20, 2), "V=25"),
                        ((2, 3, 64, 25, 1), "M=2")]:
        with pytest.raises(ConfigError) as e:
            model(torch.zeros(shape))
        assert what in str(e.value) and str(shape).replace(" ", "") in str(e.value).replace(" ", "")


@pytest.mark.parametrize("name", ENCODERS)
def test_checkpoint_and_import_official_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = build_encoder(name, 10, layout="ucla20", num_person=1, window=20).eval()
    x = torch.randn(2, 3, 20, 20, 1)
    with torch.no_grad():
        ref = model(x)
    save_encoder(tmp_path / "m.safetensors", model, class_names=list("abcdefghij"))
    loaded, meta = load_encoder(tmp_path / "m.safetensors")
    assert meta["class_names"][0] == "a" and meta["encoder"]["name"] == name
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=0, atol=0)
    # an "official" checkpoint: DataParallel prefix, wrapped in {"state_dict": ...}
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "o.pt")
    rc = main(["import-official", "--encoder", name, "--weights", str(tmp_path / "o.pt"), "--out",
               str(tmp_path / "i.safetensors"), "--num-classes", "10", "--layout", "ucla20", "--num-person", "1",
               "--window", "20"])
    assert rc == 0
    imported, meta = load_encoder(tmp_path / "i.safetensors")
    assert meta["class_names"][0] == "pick up with one hand"
    with torch.no_grad():
        torch.testing.assert_close(imported(x), ref, rtol=0, atol=0)


def test_import_official_wrong_encoder_or_classes(tmp_path, capsys):
    agcn = build_encoder("ctrgcn", 60)
    torch.save(agcn.state_dict(), tmp_path / "c.pt")
    assert main(["import-official", "--encoder", "agcn", "--weights", str(tmp_path / "c.pt"),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"stdcl: error: {tmp_path / 'c.pt'}: agcn (official weights): state dict does not fit")
    assert "\n" not in err
    assert main(["import-official", "--encoder", "ctrgcn", "--weights", str(tmp_path / "c.pt"), "--num-classes",
                 "120", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "'fc.weight' has shape (60, 256), expected (120, 256)" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_import_official_refuses_pickled_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    assert main(["import-official", "--encoder", "ctrgcn", "--weights", str(tmp_path / "evil.pt"),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr()
    assert "evil.pt: holds Python objects, not only tensors (print); refusing to unpickle" in err.err
    assert "pwned" not in err.out


@pytest.mark.parametrize("name", ENCODERS)
def test_every_encoder_has_official_parity_fixtures_and_tests(name):
    """Registering an encoder obliges it to parity with its official code: recorded outputs of the
    official model (``tests/fixtures/encoders/<name>_*.json``, documented in the README there) and a
    test module that checks them."""
    from pathlib import Path

    tests = TESTS
    fixtures = sorted((tests / "fixtures" / "encoders").glob(f"{name}_*.json"))
    assert fixtures, f"no parity fixtures for {name}"
    assert f"## {spec(name).title.split(' (')[0]}" in (tests / "fixtures" / "encoders" / "README.md").read_text() \
        or f"`{fixtures[0].name}`" in (tests / "fixtures" / "encoders" / "README.md").read_text()
    modules = [p for p in tests.rglob(f"test_*{name}*.py")]
    assert modules and any(f.name in p.read_text() or f.stem in p.read_text() or name in p.read_text()
                           for p in modules for f in fixtures)
