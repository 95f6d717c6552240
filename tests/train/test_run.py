"""A tiny training run through the CLI: run directory, checkpoints, export, eval, fine-tuning, bench."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stdcl.checkpoint import load_encoder, read_meta
from stdcl.cli import main
from stdcl.train.run_dir import read_metrics
from stdcl.train.state import load_state
from tests.support.training import TINY, assert_same_tensors, tensors


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("train") / "run"
    rc = main(["-q", "train", "--config", "synthetic", "--encoder", "hcn", "--modality", "bone", "--stdcl", "on",
               "--out", str(out), *TINY, "train.epochs=2"])
    assert rc == 0
    return out


def test_run_directory_contents(run):
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "run.json", "val_split.json", "metrics.jsonl", "train.log", "summary.json", "state.json",
            "last.safetensors", "last.json", "best.safetensors", "best.json"} <= names
    assert len([n for n in names if n.startswith("state-")]) == 1
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert cfg["data"]["modality"] == "bone" and cfg["model"]["encoder"] == "hcn" and cfg["stdcl"]["enabled"]
    recs = read_metrics(run)
    steps = [r for r in recs if r["kind"] == "step"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["global_step"] for r in steps] == list(range(4, 33, 4)) and len(epochs) == 2
    assert {"loss", "ce", "spatial", "temporal", "valid_frac_spatial", "valid_frac_temporal", "acc", "lr",
            "samples_per_s"} <= steps[0].keys()
    assert {"val_top1", "test_top1", "test_top5", "train_loss", "train_acc", "best_val_top1"} <= epochs[0].keys()
    assert recs[-1]["kind"] == "final"
    meta = read_meta(run / "last.safetensors")
    assert meta["encoder"]["name"] == "hcn" and meta["layout"] == "ntu25" and meta["modality"] == "bone"
    assert len(meta["class_names"]) == meta["num_classes"] == 13 and meta["dataset"] == "synthetic"
    assert meta["stdcl"] and meta["head"]["head"]["dim"] == 32 and meta["epoch"] == 2 and meta["global_step"] == 32
    assert meta["version"] and meta["kind"] == "last"
    val_names = json.loads((run / "val_split.json").read_text())["names"]
    assert len(val_names) == json.loads((run / "run.json").read_text())["val_samples"] > 0


def test_best_is_chosen_on_validation(run):
    epochs = [r for r in read_metrics(run) if r["kind"] == "epoch"]
    best = read_meta(run / "best.safetensors")
    top = max(r["val_top1"] for r in epochs)
    first = next(r for r in epochs if r["val_top1"] == top)
    assert best["metrics"]["val_top1"] == top and best["epoch"] == first["epoch"]
    assert best["metrics"]["test_top1"] == first["test_top1"]  # reported alongside, never used to choose


def test_existing_run_directory_is_an_error(run, capsys):
    before = (run / "last.safetensors").read_bytes()
    assert main(["train", "--config", "synthetic", "--encoder", "hcn", "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--resume" in err and len(err.splitlines()) == 1
    assert (run / "last.safetensors").read_bytes() == before


def test_export_is_the_plain_encoder_with_identical_logits(run, tmp_path):
    from stdcl.encoders import build_encoder
    from stdcl.head.model import build_stdcl_model
    from stdcl.train.config import read_yaml
    from stdcl.train.data import build_train_data

    out = tmp_path / "model.safetensors"
    assert main(["-q", "export", str(run), "--which", "last", "--out", str(out)]) == 0
    exported, meta = load_encoder(out)
    baseline = build_encoder("hcn", num_classes=13, layout="ntu25", in_channels=3, num_person=2, window=16)
    assert list(exported.state_dict()) == list(baseline.state_dict())
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in baseline.parameters())
    assert set(tensors(out)) == set(baseline.state_dict())
    assert meta["class_names"] and meta["modality"] == "bone" and meta["exported_from"].endswith("last.safetensors")
    # the training model (encoder + head + banks) restored from the resume state
    cfg = read_yaml(run / "config.yaml")
    data = build_train_data(cfg, 0)
    enc = build_encoder("hcn", num_classes=13, layout="ntu25", in_channels=3, num_person=2, window=16)
    model = build_stdcl_model(enc, 16, dict(cfg["stdcl"]["head"]), dict(cfg["stdcl"]["loss"]),
                              slot_labels=torch.as_tensor(data.train.labels), num_classes=13)
    model.load_state_dict(load_state(run)["model"])
    model.eval()
    x = torch.randn(4, 3, 16, 25, 2)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], exported(x))
    assert_same_tensors(tensors(out), tensors(run / "last.safetensors"))


def test_head_saved_beside_checkpoints_and_exported_on_request(run, tmp_path):
    from stdcl.head.checkpoint import head_path, load_head
    from stdcl.train.state import load_state

    names = {p.name for p in run.iterdir()}
    assert {"last.head.safetensors", "best.head.safetensors"} <= names
    enc, meta = load_encoder(run / "last.safetensors")
    head = load_head(run / "last.safetensors", enc, meta)
    trained = {k[len("head."):]: v for k, v in load_state(run)["model"].items() if k.startswith("head.")}
    assert set(head.state_dict()) == set(trained)
    for k, v in head.state_dict().items():
        assert torch.equal(v, trained[k]), k
    # the deployable export has no head; --with-head adds it beside the encoder
    plain, with_head = tmp_path / "plain.safetensors", tmp_path / "demo.safetensors"
    assert main(["-q", "export", str(run), "--which", "last", "--out", str(plain)]) == 0
    assert not head_path(plain).exists()
    assert main(["-q", "export", str(run), "--which", "last", "--with-head", "--out", str(with_head)]) == 0
    enc2, meta2 = load_encoder(with_head)
    head2 = load_head(with_head, enc2, meta2)
    fmap = enc2.features(torch.randn(2, 3, 16, 25, 2)).map
    with torch.no_grad():
        for branch, emb in head2(fmap).items():
            torch.testing.assert_close(emb, head(fmap)[branch])


def test_eval_outputs(run, capsys):
    assert main(["-q", "eval", str(run), "--split", "test"]) == 0
    assert "top-1" in capsys.readouterr().out
    d = run / "eval-best-test"
    assert {p.name for p in d.iterdir()} == {"metrics.json", "confusion.csv", "confusion.json", "per_class.csv",
                                             "scores.npz"}
    with np.load(d / "scores.npz", allow_pickle=False) as z:
        logits, labels, names, classes = z["logits"], z["labels"], z["names"], z["class_names"]
    m = json.loads((d / "metrics.json").read_text())
    conf = json.loads((d / "confusion.json").read_text())
    assert np.asarray(conf["matrix"]).sum() == len(labels) == len(names) == m["n"] == 57
    assert m["top1"] == pytest.approx(float((logits.argmax(1) == labels).mean()))
    assert m["top1"] == pytest.approx(np.trace(np.asarray(conf["matrix"])) / len(labels))
    top5 = np.argsort(-logits, 1)[:, :5]
    assert m["top5"] == pytest.approx(float((top5 == labels[:, None]).any(1).mean()))
    assert conf["class_names"] == list(classes) and len(m["per_class"]) == 13
    rows = (d / "confusion.csv").read_text().splitlines()
    assert len(rows) == 14 and rows[1].startswith(str(classes[0]))
    assert m["split"] == "test" and m["modality"] == "bone"
    # the validation split is the one carved in training
    assert main(["-q", "eval", str(run), "--split", "val", "--which", "last"]) == 0
    with np.load(run / "eval-last-val" / "scores.npz", allow_pickle=False) as z:
        assert list(z["names"]) == json.loads((run / "val_split.json").read_text())["names"]


def test_fine_tuning_from_a_checkpoint_and_max_steps(run, tmp_path):
    out = tmp_path / "ft"
    init = run / "last.safetensors"
    assert main(["-q", "train", "--config", "synthetic", "--encoder", "hcn", "--modality", "bone", "--out", str(out),
                 *TINY, f"train.init_from={init}", "train.max_steps=3", "optim.lr=0.0", "deterministic=true"]) == 0
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    assert read_meta(out / "last.safetensors")["global_step"] == 3
    assert_same_tensors(tensors(out / "last.safetensors"), tensors(init))  # lr 0: still the initial weights
    assert main(["-q", "train", "--config", "synthetic", "--encoder", "ctrgcn", "--out", str(tmp_path / "x"),
                 *TINY, f"train.init_from={init}"]) == 2  # an hcn checkpoint cannot start a ctrgcn run


def test_bench_train_step_smoke(capsys):
    from stdcl.train.bench import bench_train_step

    row = bench_train_step("hcn", batch=4, window=16, repeats=1, warmup=0, bank_size=120, num_classes=6,
                           device="cpu", num_pos=4, num_neg=16)
    assert row["valid_frac"] == 1.0 and row["baseline_s"] > 0 and row["stdcl_s"] > 0
    assert "overhead" in capsys.readouterr().out


def test_eval_overrides_on_a_recorded_config(tmp_path, monkeypatch):
    """A checkpoint whose recorded config predates some keys (the probe section, the loss ramp) evaluated on a
    set written by `stdcl data synth` equals the same set generated in memory; bad overrides are one-line errors."""
    import shutil

    from stdcl.data.synthetic import write_synthetic
    from stdcl.errors import ConfigError
    from stdcl.train.evaluate import evaluate
    from stdcl.weights import BUNDLED_DIR

    bundled = BUNDLED_DIR / "synthetic_ctrgcn_stdcl.safetensors"
    ckpt = tmp_path / "old" / bundled.name
    ckpt.parent.mkdir()
    shutil.copy(bundled, ckpt)
    meta = json.loads(bundled.with_suffix(".json").read_text())
    del meta["config"]["probe"], meta["config"]["stdcl"]["loss"]["ramp_epochs"], meta["config"]["stdcl"]["loss"]["start_epoch"]
    ckpt.with_suffix(".json").write_text(json.dumps(meta))
    written = write_synthetic(tmp_path / "syn", num_samples=200, seed=0)
    generated = evaluate(ckpt, out_dir=tmp_path / "e1", overrides=["data.source.num_samples=200"])
    from_file = evaluate(ckpt, out_dir=tmp_path / "e2", overrides=[f"data.path={written.parent}"])
    assert generated["n"] == from_file["n"] == 57 and generated["top1"] == from_file["top1"]
    with np.load(tmp_path / "e1" / "scores.npz") as a, np.load(tmp_path / "e2" / "scores.npz") as b:
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-5)
        assert list(a["names"]) == list(b["names"])
    for bad, message in [("data.window=nan", "config key data.window must be a whole number >= 1 or null"),
                         ("data.windw=32", "unknown config key data.windw; did you mean data.window?"),
                         ("train.eval_batch_size=0", "config key train.eval_batch_size must be")]:
        with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
            evaluate(ckpt, out_dir=tmp_path / "e3", overrides=[bad])
    assert not (tmp_path / "e3").exists()
    monkeypatch.chdir(tmp_path)  # a bundled checkpoint's scores go to the working directory, not the installation
    assert evaluate(f"bundled:{bundled.stem}", overrides=[f"data.path={written.parent}"])["out_dir"] == \
        str(tmp_path / f"{bundled.stem}-eval-test")
    assert not list(BUNDLED_DIR.glob("*-eval-*"))
