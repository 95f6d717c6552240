"""Score fusion: weights tuned on validation scores only; the CLI over two tiny stream runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stdcl.cli import main
from stdcl.train import ensemble as E
from tests.support.training import TINY

K, N = 5, 80


def _scores(labels: np.ndarray, good: bool, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(size=(len(labels), K))
    return noise + (4 * np.eye(K)[labels] if good else 0)


def test_tune_weights_prefers_the_stream_that_is_right_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, N)
    w, acc = E.tune_weights([_scores(y, True, rng), _scores(y, False, rng)], y)
    assert w[0] > w[1] and acc > 0.9
    # ties go to the most balanced weights; the result is scale-free
    same = _scores(y, True, rng)
    w2, _ = E.tune_weights([same, same], y)
    assert w2 == [1.0, 1.0]  # not (0.1, 0.1), which fuses alike
    w3, _ = E.tune_weights([same, 0.5 * same], y, step=0.25)
    assert max(w3) == 1.0


def test_ensemble_never_reads_test_scores_to_choose(monkeypatch):
    rng = np.random.default_rng(1)
    y_val, y_test = rng.integers(0, K, N), rng.integers(0, K, N)
    names = np.asarray([f"s{i}" for i in range(N)])
    classes = np.asarray([f"c{k}" for k in range(K)])
    val = [_scores(y_val, True, rng), _scores(y_val, False, rng)]  # stream 0 wins on validation
    tests = {"a": [_scores(y_test, False, rng), _scores(y_test, True, rng)],  # stream 1 wins on test
             "b": [_scores(y_test, True, rng), _scores(y_test, False, rng)]}
    seen = []

    def fake_tune(scores, labels, **kw):
        seen.append((scores, labels))
        return real_tune(scores, labels, **kw)

    real_tune = E.tune_weights
    monkeypatch.setattr(E, "tune_weights", fake_tune)
    results = {}
    for case, test in tests.items():
        def fake_scores(run, split, which, recompute, overrides, test=test):
            i = int(run[-1])
            arr, lab = (val[i], y_val) if split == "val" else (test[i], y_test)
            return {"names": names, "labels": lab, "logits": arr, "class_names": classes}

        monkeypatch.setattr(E, "_stream_scores", fake_scores)
        results[case] = E.ensemble(["run0", "run1"])
    assert results["a"]["weights"] == results["b"]["weights"]  # test scores change nothing
    assert results["a"]["weights"][0] > results["a"]["weights"][1]
    for scores, labels in seen:
        assert all(np.array_equal(s, v) for s, v in zip(scores, val)) and np.array_equal(labels, y_val)
    assert results["a"]["weights_source"] == "tuned on validation"
    given = E.ensemble(["run0", "run1"], weights=[0.0, 1.0])
    assert given["fused_test_top1"] == given["streams"][1]["test_top1"]


@pytest.mark.slow
def test_ensemble_cli_over_two_streams(tmp_path, capsys):
    torch.set_num_threads(1)
    runs = []
    for modality in ("joint", "bone"):
        out = tmp_path / modality
        assert main(["-q", "train", "--config", "synthetic", "--encoder", "hcn", "--modality", modality,
                     "--stdcl", "off", "--out", str(out), *TINY, "train.max_steps=6"]) == 0
        runs.append(str(out))
    capsys.readouterr()
    assert main(["-q", "ensemble", *runs, "--out", str(tmp_path / "fusion.json")]) == 0
    out = capsys.readouterr().out
    assert "fused" in out and "tuned on validation" in out and runs[0] in out
    r = json.loads((tmp_path / "fusion.json").read_text())
    assert len(r["weights"]) == 2 and r["n_test"] == 57 and r["n_val"] > 0
    assert (tmp_path / "joint" / "eval-best-val" / "scores.npz").is_file()
    assert main(["-q", "ensemble", *runs, "--weights", "1", "0", "--out", str(tmp_path / "given.json")]) == 0
    g = json.loads((tmp_path / "given.json").read_text())
    assert g["fused_test_top1"] == g["streams"][0]["test_top1"] and g["weights_source"] == "given"
    assert main(["-q", "ensemble", *runs, "--weights", "1"]) == 2  # one weight per stream


def test_ensemble_of_checkpoint_files_with_data_overrides(tmp_path, capsys):
    """Checkpoint files (not runs) fuse too, their scores beside them; key=value words are data overrides;
    fusion weights are checked."""
    import shutil

    from stdcl.data.synthetic import write_synthetic
    from stdcl.weights import BUNDLED_DIR

    files = []
    for name in ("synthetic_hcn_baseline", "synthetic_hcn_stdcl"):
        for ext in (".safetensors", ".json"):
            shutil.copy(BUNDLED_DIR / f"{name}{ext}", tmp_path / f"{name}{ext}")
        files.append(str(tmp_path / f"{name}.safetensors"))
    data = write_synthetic(tmp_path / "syn", num_samples=200, seed=0)
    capsys.readouterr()
    assert main(["-q", "ensemble", *files, f"data.path={data}", "--weights", "1", "0",
                 "--out", str(tmp_path / "f.json")]) == 0
    r = json.loads((tmp_path / "f.json").read_text())
    assert r["n_test"] == 57 and r["fused_test_top1"] == r["streams"][0]["test_top1"]
    with np.load(tmp_path / "synthetic_hcn_stdcl-eval-test" / "scores.npz") as z:
        assert len(z["names"]) == 57
    # overrides after the weights (argparse's nargs="+" takes them with the weights): the same fusion
    assert main(["-q", "ensemble", *files, "--weights", "1", "0", f"data.path={data}",
                 "--out", str(tmp_path / "g.json")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    assert g["weights"] == r["weights"] == [1.0, 0.0] and g["n_test"] == 57
    assert g["fused_test_top1"] == r["fused_test_top1"]
    for weights in (["1", "nan"], ["-1", "1"]):
        with pytest.raises(SystemExit) as e:
            main(["-q", "ensemble", *files, f"data.path={data}", "--weights", *weights])
        assert e.value.code == 2 and "argument --weights: must be a finite number >= 0" in capsys.readouterr().err
    assert main(["-q", "ensemble", *files, f"data.path={data}", "--weights", "0", "0"]) == 2
    assert "fusion weights must be finite numbers >= 0, not all 0" in capsys.readouterr().err
    assert main(["-q", "ensemble", *files, "data.pth=x"]) == 2
    assert "unknown config key data.pth; did you mean data.path?" in capsys.readouterr().err
