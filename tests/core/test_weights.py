"""stdcl.weights: every source gives the same typed result for the same weights; bad sources fail in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from stdcl import weights
from stdcl.cli import main
from stdcl.encoders import build_encoder
from stdcl.errors import ConfigError, DataError
from stdcl.head.checkpoint import head_path
from stdcl.train.run_dir import CONFIG

BUNDLED = "synthetic_hcn_stdcl"


def _same(a: weights.LoadedWeights, b: weights.LoadedWeights) -> None:
    sa, sb = a.encoder.state_dict(), b.encoder.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    drop = {"save_id"}  # identifies a save (each save has its own), not what was saved
    assert {k: v for k, v in a.meta.items() if k not in drop} == {k: v for k, v in b.meta.items() if k not in drop}


def _one_line(exc: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_bundled_file_json_and_run_directory_give_one_result(tmp_path):
    ref = weights.load(f"bundled:{BUNDLED}")
    assert isinstance(ref, weights.LoadedWeights) and ref.kind == "bundled" and ref.meta["stdcl"] is True
    assert ref.source == weights.BUNDLED_DIR / f"{BUNDLED}.safetensors" and ref.head_file == head_path(ref.source)
    assert not ref.encoder.training
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text("seed: 0\n")
    for suffix in (".safetensors", ".json", ".head.safetensors"):
        shutil.copy(ref.source.with_suffix("").with_suffix(suffix) if suffix != ".head.safetensors"
                    else ref.head_file, run / f"best{suffix}")
    routes = {"file": weights.load(ref.source), "json": weights.load(ref.source.with_suffix(".json")),
              "run": weights.load(run), "run-best": weights.load(run, "best")}
    for name, got in routes.items():
        _same(ref, got)
    assert routes["run"].kind == "run" and routes["run"].source == run / "best.safetensors"
    assert routes["run"].head_file == run / "best.head.safetensors"
    assert routes["file"].kind == "bundled"  # a path into the bundled folder is the bundled checkpoint
    # saved elsewhere: the same weights and metadata come back, as a loose file without the head
    out = ref.save(tmp_path / "copy.safetensors")
    copy = weights.load(out)
    _same(ref, copy)
    assert copy.kind == "file" and copy.head_file is None


def test_official_pt_and_its_import_give_one_result(tmp_path):
    torch.manual_seed(3)
    enc = build_encoder("hcn", num_classes=10, layout="ucla20", num_person=1, window=20).eval()
    pt = tmp_path / "hcn_ucla.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}}, pt)
    spec = weights.OfficialSpec("hcn", 10, "ucla20", 20, 1, dataset="ucla")
    direct = weights.load(pt, official=spec)
    assert direct.kind == "official" and direct.source == pt and direct.head_file is None
    for k, v in enc.state_dict().items():
        assert torch.equal(direct.encoder.state_dict()[k], v), k
    assert direct.meta["class_names"][0] == "pick up with one hand" and direct.meta["kind"] == "official"
    assert direct.meta["dataset"] == "ucla" and direct.meta["imported_from"] == "hcn_ucla.pt"
    # the library's save, the CLI and the app's import write the same checkpoint
    saved = weights.load(direct.save(tmp_path / "lib.safetensors"))
    assert main(["import-official", "--encoder", "hcn", "--weights", str(pt), "--out", str(tmp_path / "cli.safetensors"),
                 "--num-classes", "10", "--layout", "ucla20", "--num-person", "1", "--window", "20",
                 "--dataset", "ucla"]) == 0
    cli = weights.load(tmp_path / "cli.safetensors")
    from app.uploads import import_official

    app = weights.load(import_official(pt, tmp_path / "app", "hcn", 10, "ucla20", 20, 1, dataset="ucla"))
    for got in (saved, cli, app):
        _same(direct, got)
        assert got.kind == "file"


def test_a_stale_head_is_not_read_as_the_imported_models(tmp_path):
    ref = weights.load(f"bundled:{BUNDLED}")
    out = tmp_path / "m.safetensors"
    ref.save(out)
    shutil.copy(ref.head_file, head_path(out))
    enc = build_encoder("hcn", num_classes=13, layout="ntu25", window=32).eval()
    torch.save(enc.state_dict(), tmp_path / "m.pt")
    weights.load(tmp_path / "m.pt", official=weights.OfficialSpec("hcn", 13, window=32)).save(out)
    assert not head_path(out).exists() and weights.load(out).head_file is None


def test_bad_sources_give_one_line_errors_naming_the_file(tmp_path):
    with pytest.raises(DataError) as exc:
        weights.load("bundled:nope")
    assert "no bundled checkpoint 'nope' (bundled: " in _one_line(exc, weights.BUNDLED_DIR / "nope.safetensors")
    with pytest.raises(DataError) as exc:
        weights.load(tmp_path / "missing.safetensors")
    assert "no such file or folder" in _one_line(exc, tmp_path / "missing.safetensors")
    enc = build_encoder("hcn", num_classes=13, layout="ntu25", window=32)
    pt = tmp_path / "w.pt"
    torch.save(enc.state_dict(), pt)
    with pytest.raises(DataError) as exc:
        weights.load(pt)  # no spec: nothing says which model it is
    assert "official PyTorch checkpoint" in _one_line(exc, pt)
    with pytest.raises(DataError) as exc:
        weights.load(pt, official=weights.OfficialSpec("hcn", 60, window=32))
    assert _one_line(exc, pt) == f"{pt}: hcn (official weights): key 'fc8.weight' has shape (13, 512), expected (60, 512)"
    with pytest.raises(DataError) as exc:
        weights.load(pt, official=weights.OfficialSpec("hcn", 13, window=32, class_names=("a", "b")))
    assert "2 class names for 13 classes" in _one_line(exc, pt)
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    with pytest.raises(DataError) as exc:
        weights.load(txt)
    assert "not a .safetensors checkpoint" in _one_line(exc, txt)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DataError) as exc:
        weights.load(folder)
    assert "not a run directory" in _one_line(exc, folder)
    (folder / CONFIG).write_text("seed: 0\n")
    with pytest.raises(DataError) as exc:
        weights.load(folder)
    assert "has not saved one yet" in _one_line(exc, folder / "best.safetensors")
    cut = tmp_path / "cut.safetensors"
    src = weights.BUNDLED_DIR / f"{BUNDLED}.safetensors"
    cut.write_bytes(src.read_bytes()[:100])
    shutil.copy(src.with_suffix(".json"), cut.with_suffix(".json"))
    with pytest.raises(DataError) as exc:
        weights.load(cut)
    assert "not a readable safetensors file" in _one_line(exc, cut)


def test_init_encoder_copies_fitting_tensors_and_names_what_does_not_fit(tmp_path):
    src = weights.load(f"bundled:{BUNDLED}")
    cfg = src.meta["encoder"]
    fresh = build_encoder("hcn", num_classes=cfg["num_classes"], layout="ntu25", window=cfg["window"])
    res = weights.init_encoder(fresh, f"bundled:{BUNDLED}")
    assert res.skipped == [] and res.source.meta == src.meta
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    other = build_encoder("hcn", num_classes=7, layout="ntu25", window=cfg["window"])
    before = other.classifier.weight.detach().clone()
    with pytest.raises(ConfigError, match=r"^train\.init_from bundled:synthetic_hcn_stdcl: shapes differ for "):
        weights.init_encoder(other, f"bundled:{BUNDLED}")
    res = weights.init_encoder(other, f"bundled:{BUNDLED}", strict=False)
    assert res.skipped and all(other.state_dict()[k].shape != src.encoder.state_dict()[k].shape for k in res.skipped)
    assert torch.equal(other.classifier.weight, before)  # the classifier keeps its initial values
    agcn = build_encoder("agcn", num_classes=cfg["num_classes"], layout="ntu25", window=cfg["window"])
    with pytest.raises(ConfigError, match="a hcn checkpoint, but the config trains agcn"):
        weights.init_encoder(agcn, f"bundled:{BUNDLED}")
