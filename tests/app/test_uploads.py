"""app.uploads: size limits, safe names, session folders, stored checkpoint uploads and official imports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.models import load_model
from app import uploads as up
from stdcl.data.classes import UCLA_CLASSES, ntu_classes, numbered_classes
from stdcl.encoders import build_encoder
from stdcl.errors import DataError
from stdcl.weights import official_class_names
from tests.support.app import bundled_model, module_env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory, ("cache", "uploads"))


def test_size_limit_and_names(tmp_path, env):
    up.check_upload_size("ok.npy", up.MAX_UPLOAD_BYTES)
    with pytest.raises(DataError, match=r"^big\.pt: 201 MB is over the 200 MB upload limit$"):
        up.check_upload_size("big.pt", up.MAX_UPLOAD_BYTES + 2**20)
    assert up.safe_name("../../etc/pass wd.npy") == "pass_wd.npy"
    assert up.safe_name("C:\\x\\y.skeleton") == "y.skeleton"
    p = up.save_upload(tmp_path, "../a b.npy", b"123")
    assert p == tmp_path / "a_b.npy" and p.read_bytes() == b"123"
    folder = up.session_upload_dir("abc/../x")
    assert folder.is_dir() and folder.parent == Path(__import__("os").environ["STDCL_UPLOADS"])


def test_stale_session_uploads_are_pruned(tmp_path, monkeypatch):
    import os
    monkeypatch.setenv("STDCL_UPLOADS", str(tmp_path))
    old, recent = tmp_path / "old", tmp_path / "recent"
    for d, age in ((old, 4 * 86400), (recent, 3600)):
        (d / "sequences").mkdir(parents=True)
        (d / "sequences" / "a.npy").write_bytes(b"x")
        os.utime(d, (os.path.getatime(d) - age, os.path.getmtime(d) - age))
    mine = up.session_upload_dir("mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "recent"]
    monkeypatch.setenv("STDCL_UPLOADS_TTL_S", "60")  # the variable shortens the lifetime
    assert up.session_upload_dir("mine") == mine and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_checkpoint_upload_is_stored_checked_and_loadable(tmp_path, env):
    model = bundled_model("A")
    src = model.path
    files = {f"my{suffix}": src.with_name(src.stem + suffix).read_bytes()
             for suffix in (".safetensors", ".json", ".head.safetensors")}
    path = up.save_checkpoint_upload(tmp_path, files)
    assert path == tmp_path / "my" / "my.safetensors"
    loaded = load_model(path)
    assert loaded.digest == model.digest and loaded.head is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my"]

    with pytest.raises(DataError, match="my.safetensors: its metadata my.json is missing"):
        up.save_checkpoint_upload(tmp_path, {"my.safetensors": files["my.safetensors"]})
    with pytest.raises(DataError, match="notes.json: does not belong to my.safetensors"):
        up.save_checkpoint_upload(tmp_path, {**files, "notes.json": b"{}"})
    with pytest.raises(DataError, match="upload exactly one encoder"):
        up.save_checkpoint_upload(tmp_path, {"my.json": files["my.json"]})
    bad = {"broken.safetensors": b"\x00" * 64, "broken.json": files["my.json"]}
    with pytest.raises(DataError) as exc:
        up.save_checkpoint_upload(tmp_path, bad)
    msg = str(exc.value)
    assert msg.startswith("broken.safetensors: not a readable safetensors file") and "\n" not in msg
    bad_json = {"odd.safetensors": files["my.safetensors"], "odd.json": b"{not json"}
    with pytest.raises(DataError, match=r"^odd\.json: line 1: not valid checkpoint metadata"):
        up.save_checkpoint_upload(tmp_path, bad_json)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my"]  # nothing left of the failed upload


def test_official_import_becomes_a_normal_checkpoint(tmp_path):
    torch.manual_seed(1)
    enc = build_encoder("hcn", num_classes=13, layout="ntu25", window=32).eval()
    pt = tmp_path / "hcn_official.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}}, pt)
    path = up.import_official(pt, tmp_path / "out", "hcn", 13, "ntu25", 32, 2, dataset="synthetic")
    assert path == tmp_path / "out" / "hcn_official.safetensors"
    m = load_model(path)
    assert m.head is None and m.meta["dataset"] == "synthetic" and m.meta["kind"] == "official"
    x = torch.randn(2, 3, 32, 25, 2)
    with torch.no_grad():
        assert torch.equal(m.encoder(x), enc(x))
    assert m.class_names == numbered_classes(13) and m.meta["imported_from"] == "hcn_official.pt"
    assert official_class_names("ntu60-xview", 60) == ntu_classes(60)
    assert official_class_names("ucla", 10) == list(UCLA_CLASSES)
    assert official_class_names(None, 120) == ntu_classes(120)  # no dataset: guessed by the class count
    with pytest.raises(DataError, match="hcn_official.pt"):
        up.import_official(pt, tmp_path / "out", "hcn", 60, "ntu25", 32, 2)
