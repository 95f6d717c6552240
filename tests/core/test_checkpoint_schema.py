"""Checkpoint metadata is checked against a schema; weights with NaN are refused; mutations of a valid
checkpoint's JSON give a loaded encoder or the project's own one-line error, never another exception."""

import collections
import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from stdcl.checkpoint import load_encoder, meta_path, read_meta, save_encoder
from stdcl.encoders.registry import build_encoder
from stdcl.errors import DataError, StdclError
from stdcl.head.checkpoint import head_path, load_head
from stdcl.head.decoupling import DecouplingHead


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small HCN checkpoint with class names and every recorded field the trainer writes."""
    torch.manual_seed(0)
    enc = build_encoder("hcn", 3, layout="ucla20", num_person=1, window=16)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_encoder(path, enc, class_names=["a", "b", "c"], dataset="ucla", protocol="ucla", modality="joint",
                 layout="ucla20", num_classes=3, stdcl=False, head=None, epoch=2, global_step=40,
                 metrics={"test_top1": 0.5}, best=None, config={"train": {"epochs": 2}}, kind="last")
    return path


def _copy(ckpt, tmp_path, edit=None, meta=None):
    out = tmp_path / "m.safetensors"
    shutil.copy(ckpt, out)
    info = json.loads(ckpt.with_suffix(".json").read_text())
    if edit:
        edit(info)
    out.with_suffix(".json").write_text(meta if meta is not None else json.dumps(info))
    return out


def _set(path, value):
    def edit(info):
        *parents, last = path.split(".")
        d = info
        for p in parents:
            d = d[p]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


_DELETE = object()


@pytest.mark.parametrize("field, value, message", [
    ("encoder.num_classes", _DELETE, "'encoder.num_classes' is missing"),
    ("encoder.num_classes", "3", "'encoder.num_classes' must be an integer, got str"),
    ("encoder.num_classes", True, "'encoder.num_classes' must be an integer, got bool"),
    ("encoder.num_classes", 10**9, "'encoder.num_classes' = 1000000000 is outside 1..100000"),
    ("encoder.window", 0, "'encoder.window' = 0 is outside"),
    ("encoder.in_channels", 2.0, "'encoder.in_channels' must be an integer, got float"),
    ("encoder.name", "resnet", "'encoder.name' 'resnet' is not a known encoder"),
    ("encoder.name", None, "'encoder.name' must be a string, got null"),
    ("encoder", [], "'encoder' must be an object, got list"),
    ("encoder", _DELETE, "no 'encoder' object"),
    ("encoder.options", [1], "'encoder.options' must be an object"),
    ("encoder.options", {"dropout": float("nan")}, "'encoder.options.dropout' is not a finite number"),
    ("encoder.options", {"window": 3}, "repeats the constructor argument 'window'"),
    ("encoder.options", {"no_such_option": 1}, "its recorded options do not build a hcn encoder"),
    ("encoder.layout", "nope", "'encoder.layout': unknown layout 'nope'"),
    ("encoder.layout", "/etc/passwd.yaml", "is a path; a checkpoint stores its layout inline"),
    ("encoder.layout", 7, "'encoder.layout' must be a layout name or object, got int"),
    ("encoder.layout.edges", [[1, 0], [0, 1]], "'encoder.layout': layout 'ucla20'"),
    ("encoder.layout.joints", ["a", "a"], "joint name 'a' appears twice"),
    ("format", "other", "'format' is 'other', expected 'stdcl-encoder'"),
    ("class_names", ["a", "b"], "'class_names' has 2 names for 3 classes"),
    ("class_names", ["a", "b", 3], "'class_names' must be a list of strings"),
    ("num_classes", 4, "'num_classes' 4 disagrees with 'encoder.num_classes' 3"),
    ("layout", "ntu25", "'layout' 'ntu25' disagrees with the encoder's layout 'ucla20'"),
    ("modality", "rgb", "'modality' 'rgb' is not one of joint"),
    ("dataset", 5, "'dataset' must be a string, got int"),
    ("config", "x", "'config' must be an object, got str"),
    ("stdcl", "yes", "'stdcl' must be true or false"),
    ("epoch", -1, "'epoch' = -1 is outside"),
    ("head", {"head": 3}, "'head.head' (the STD-CL head's options) must be an object"),
])
def test_each_bad_field_is_one_line_naming_the_file_and_field(ckpt, tmp_path, field, value, message):
    path = _copy(ckpt, tmp_path, _set(field, value))
    with pytest.raises(DataError) as e:
        load_encoder(path)
    text = str(e.value)
    assert message in text and text.startswith(str(path.with_suffix(".json"))) and "\n" not in text


@pytest.mark.parametrize("text, message", [
    ("", "not valid checkpoint metadata"),
    ("{", "not valid checkpoint metadata"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[1, 2]", "a JSON object is expected, got list"),
    ("null", "got null"),
])
def test_unreadable_metadata(ckpt, tmp_path, text, message):
    path = _copy(ckpt, tmp_path, meta=text)
    with pytest.raises(DataError, match=message):
        read_meta(path)


def test_valid_checkpoint_loads_and_unknown_fields_are_kept(ckpt, tmp_path):
    path = _copy(ckpt, tmp_path, _set("notes", {"anything": [1, "two"]}))
    model, info = load_encoder(path)
    assert model.num_classes == 3 and info["notes"] == {"anything": [1, "two"]} and info["encoder"]["options"] == {}


def test_nan_weights_are_refused_naming_the_tensor(ckpt, tmp_path):
    path = _copy(ckpt, tmp_path)
    sd = load_file(str(path))
    key = sorted(k for k, v in sd.items() if v.is_floating_point())[0]
    sd[key] = sd[key].clone()
    sd[key].view(-1)[:2] = float("nan")
    save_file(sd, str(path))
    with pytest.raises(DataError) as e:
        load_encoder(path)
    assert f"tensor {key!r} holds 2 NaN or infinite values" in str(e.value) and str(path) in str(e.value)


def test_bad_head_options_name_the_metadata(ckpt, tmp_path):
    enc, _ = load_encoder(ckpt)
    path = _copy(ckpt, tmp_path, _set("stdcl", True))
    save_file({k: v.contiguous() for k, v in DecouplingHead(enc.feature_shape(16)).state_dict().items()},
              str(head_path(path)))
    meta = json.loads(path.with_suffix(".json").read_text()) | {"head": {"head": {"no_such": 1}}}
    with pytest.raises(DataError, match="do not build the STD-CL head") as e:
        load_head(path, enc, meta)
    assert str(path.with_suffix(".json")) in str(e.value)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70), st.floats(allow_nan=True, width=32),
                     st.text(max_size=4), st.sampled_from(["hcn", "agcn", "ucla20", "ntu25", "joint"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                       max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list) and len(obj) < 30:
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_metadata_mutations_give_an_encoder_or_our_error(ckpt, tmp_path, data):
    info = json.loads(ckpt.with_suffix(".json").read_text())
    mutated = copy.deepcopy(info)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(mutated) if p]
        where = data.draw(st.sampled_from(paths))
        parent = mutated
        for k in where[:-1]:
            parent = parent[k]
        action = data.draw(st.sampled_from(["delete", "replace", "nest"]))
        if action == "delete":
            del parent[where[-1]]
        elif action == "replace":
            parent[where[-1]] = data.draw(_values)
        else:
            parent[where[-1]] = [parent[where[-1]]]
    text = json.dumps(mutated)
    if data.draw(st.booleans()):  # truncate or flip a byte of the text
        cut = data.draw(st.integers(0, len(text)))
        text = text[:cut] + (data.draw(st.text(max_size=2)) if data.draw(st.booleans()) else "")
    path = tmp_path / "fuzz.safetensors"
    shutil.copy(ckpt, path)
    path.with_suffix(".json").write_text(text)
    try:
        model, meta = load_encoder(path)
    except StdclError as e:
        assert "\n" not in str(e)
        return
    x = torch.zeros(1, model.in_channels, model.window, model.layout.num_joints, model.num_person)
    assert model(x).shape == (1, model.num_classes)


def test_foreign_pt_files(tmp_path):
    from stdcl.encoders.official import from_official, load_official_file

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    mixed = tmp_path / "mixed.pt"
    torch.save({"a": torch.zeros(2), "b": [1, 2]}, mixed)
    cut = tmp_path / "cut.pt"
    torch.save({"a": torch.zeros(100)}, cut)
    cut.write_bytes(cut.read_bytes()[:50])
    text = tmp_path / "text.pt"
    text.write_text('{"a": 1}')
    legacy_cut = tmp_path / "legacy_cut.pt"
    torch.save({"a": torch.zeros(100)}, legacy_cut, _use_new_zipfile_serialization=False)
    legacy_cut.write_bytes(legacy_cut.read_bytes()[:30])
    code = tmp_path / "code.pt"
    torch.save({"a": torch.zeros(2), "f": collections.OrderedDict, "g": Path("x")}, code)
    for path, message in [(empty, "is empty (0 bytes)"), (folder, "is a folder"), (mixed, "state dict of tensors"),
                          (cut, "a damaged or truncated PyTorch checkpoint"), (tmp_path / "none.pt", "no such file"),
                          (text, "not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)"),
                          (legacy_cut, "not a weights-only PyTorch checkpoint"),
                          (code, "holds Python objects, not only tensors (")]:
        with pytest.raises(DataError) as e:
            load_official_file(path)
        assert str(e.value).startswith(str(path)) and message in str(e.value) and "\n" not in str(e.value)
    sd = build_encoder("hcn", 3, layout="ucla20", num_person=1, window=16).state_dict()
    sd = {k: v.clone() for k, v in sd.items()}
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key].view(-1)[0] = float("inf")
    with pytest.raises(DataError, match=f"tensor '{key}' holds 1 NaN or infinite"):
        from_official("hcn", sd, 3, layout="ucla20", num_person=1, window=16)


@pytest.mark.parametrize("damage, message", [
    ("nan", "holds 2 NaN or infinite values"),
    ("meta", "'encoder.window' must be an integer, got str"),
    ("cut", "not a readable safetensors file"),
])
def test_cli_commands_reading_a_checkpoint_print_one_line(ckpt, tmp_path, capsys, damage, message):
    from stdcl.cli import main

    path = _copy(ckpt, tmp_path, _set("encoder.window", "16") if damage == "meta" else None)
    if damage == "nan":
        sd = load_file(str(path))
        key = sorted(k for k, v in sd.items() if v.is_floating_point())[0]
        sd[key].view(-1)[:2] = float("nan")
        save_file(sd, str(path))
    elif damage == "cut":
        path.write_bytes(path.read_bytes()[:100])
    out = tmp_path / "out.safetensors"
    assert main(["export", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stdcl: error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_files_of_an_interrupted_save_are_refused(tmp_path):
    """Weights, metadata and head are written one after the other; a save interrupted between them
    leaves files of two saves, which loading refuses in one line instead of mixing them."""
    from stdcl.checkpoint import load_encoder, save_encoder
    from stdcl.head import DecouplingHead
    from stdcl.head.checkpoint import head_path, load_head, save_head

    torch.manual_seed(0)
    enc = build_encoder("hcn", 4, layout="ucla20", num_person=1, window=32)
    head = DecouplingHead(enc.feature_shape(32))
    path = tmp_path / "m.safetensors"
    save_encoder(path, enc, stdcl=True, head={"head": {}})
    save_head(path, head)
    first_json = meta_path(path).read_text()
    model, meta = load_encoder(path)
    assert load_head(path, model, meta) is not None
    # the second save got as far as its weights: new weights, the first save's metadata
    torch.manual_seed(1)
    save_encoder(path, build_encoder("hcn", 4, layout="ucla20", num_person=1, window=32), stdcl=True,
                 head={"head": {}})
    second_json = meta_path(path).read_text()
    meta_path(path).write_text(first_json)
    with pytest.raises(DataError) as e:
        load_encoder(path)
    assert str(e.value).startswith(f"{path}: belongs to another save than m.json") and "\n" not in str(e.value)
    # ... or as far as its metadata: the first save's head is left beside the second's encoder
    meta_path(path).write_text(second_json)
    model, meta = load_encoder(path)
    with pytest.raises(DataError, match=f"^{head_path(path)}: belongs to another save than m.json"):
        load_head(path, model, meta)
    save_head(path, head)  # the save completes: everything loads
    assert load_head(path, model, meta) is not None
    # checkpoints from before save ids (no id in the metadata) load as they did
    old = json.loads(second_json)
    del old["save_id"]
    meta_path(path).write_text(json.dumps(old))
    model, meta = load_encoder(path)
    assert load_head(path, model, meta) is not None
