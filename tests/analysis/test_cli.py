"""``stdcl analyze embed | project | metrics | report`` on the bundled demo checkpoints."""

import csv
import json
import re

import numpy as np
import pytest

from analysis.datasets import open_analysis_data, stratified_subset
from analysis.models import bundled_models, load_model
from analysis.report import SECTIONS
from stdcl.cli import main

BASE, STDCL = "bundled:synthetic_hcn_baseline", "bundled:synthetic_hcn_stdcl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """One cache per test module (embeddings are reused across the tests), never the user's."""
    root = tmp_path_factory.getbasetemp() / "analysis-cli-cache"
    monkeypatch.setenv("STDCL_CACHE", str(root))
    return root


def test_embed_writes_arrays_and_prints_matching_accuracy(tmp_path, capfd):
    out = tmp_path / "emb.npz"
    assert main(["analyze", "embed", STDCL, "--max-samples", "130", "--out", str(out)]) == 0
    text = capfd.readouterr().out
    with np.load(out) as z:
        a = {k: z[k] for k in z.files}
    model = load_model(bundled_models()[[r.label for r in bundled_models()].index("synthetic_hcn_stdcl")])
    data = open_analysis_data(model, "test")
    expected = stratified_subset(data.labels, 130, 0)
    np.testing.assert_array_equal(a["indices"], expected)  # the stratified subset of the test split
    np.testing.assert_array_equal(a["labels"], data.labels[expected])
    n = len(expected)
    c, t, v = model.encoder.feature_shape(model.encoder.window)
    shapes = {k: a[k].shape for k in ("global", "spatial", "temporal", "spatial_pooled", "temporal_pooled")}
    assert shapes == {"global": (n, shapes["global"][1]), "spatial": (n, 256), "temporal": (n, 256),
                      "spatial_pooled": (n, c * v), "temporal_pooled": (n, c * t)}
    assert a["logits"].shape == (n, 13) and list(a["class_names"])[0] == "wave left hand"
    assert len(set(a["names"].tolist())) == n and a["indices"].shape == (n,)
    np.testing.assert_array_equal(a["predictions"], a["logits"].argmax(1))
    correct = int((a["logits"].argmax(1) == a["labels"]).sum())
    m = re.search(r"top-1 accuracy ([\d.]+)% \((\d+)/(\d+)\)", text)
    assert m, text
    assert (int(m.group(2)), int(m.group(3))) == (correct, n)
    assert float(m.group(1)) == pytest.approx(100 * correct / n, abs=0.005)
    assert "spatial 256 (STD-CL head)" in text and f"wrote {out}" in text


def test_project_csv_and_npz(tmp_path, capsys):
    out = tmp_path / "coords.csv"
    assert main(["analyze", "project", BASE, "--max-samples", "130", "--method", "pca", "--spaces", "global",
                 "spatial", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 130 and list(rows[0])[-4:] == ["global_x", "global_y", "spatial_x", "spatial_y"]
    npz = tmp_path / "coords.npz"
    assert main(["analyze", "project", BASE, "--max-samples", "130", "--method", "pca", "--spaces", "global",
                 "spatial", "--out", str(npz)]) == 0
    with np.load(npz) as z:
        assert z["global"].shape == (130, 2)
        np.testing.assert_allclose(z["global"][:, 0], [float(r["global_x"]) for r in rows], rtol=1e-4, atol=1e-5)
        assert [str(n) for n in z["names"]] == [r["name"] for r in rows]
        # PCA's first axis carries at least as much variance as the second
        assert z["spatial"][:, 0].var() >= z["spatial"][:, 1].var()
    capsys.readouterr()
    assert main(["analyze", "project", BASE, "--spaces", "nope", "--method", "pca", "--max-samples", "130",
                 "--out", str(npz)]) == 2
    assert "no embedding space 'nope'" in capsys.readouterr().err


def test_metrics_json_one_and_two_checkpoints(tmp_path, capsys):
    one = tmp_path / "one.json"
    assert main(["analyze", "metrics", STDCL, "--max-samples", "130", "--out", str(one)]) == 0
    r = json.loads(one.read_text())
    assert r["n"] == 130 and len(r["models"]) == 1
    spaces = r["models"][0]["spaces"]
    assert set(spaces) == {"global", "spatial", "temporal"}
    assert all(spaces[s]["overall"] for s in spaces)
    assert {t["type"] for t in r["models"][0]["twins"]} == {"spatial", "temporal"}
    text = capsys.readouterr().out
    assert text.count("spatial") >= 1 and "top-1" in text
    two = tmp_path / "two.json"
    assert main(["analyze", "metrics", BASE, STDCL, "--max-samples", "130", "--out", str(two)]) == 0
    r = json.loads(two.read_text())
    assert [m["label"] for m in r["models"]] == ["synthetic_hcn_baseline", "synthetic_hcn_stdcl"]
    assert [m["st_source"] for m in r["models"]] == ["pooled", "head"]
    assert set(r["models"][1]["spaces"]) == {"global", "spatial", "temporal", "spatial_pooled", "temporal_pooled"}
    comp = r["comparison"]
    assert {c["space"] for c in comp} == set(r["spaces"])
    for c in comp[:5]:  # the comparison reads the per-model numbers
        a = r["models"][0]["spaces"][c["space"]]["overall"][c["metric"]]
        b = r["models"][1]["spaces"][c["space"]]["overall"][c["metric"]]
        assert (c["a"], c["b"]) == (pytest.approx(a), pytest.approx(b))
    assert "comparison (synthetic_hcn_baseline -> synthetic_hcn_stdcl)" in capsys.readouterr().out


def test_report_pair(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["analyze", "report", BASE, STDCL, "--max-samples", "52", "--method", "pca",
                 "--attribution-samples", "1", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert page.count("* plotly.js v") == 1  # the library inlined exactly once, no CDN
    assert "<script src=" not in page  # nothing loaded from a CDN
    for title in SECTIONS.values():
        assert f">{title}</h2>" in page, title
    assert "Pooled spatial embedding" in page  # the definition, since a baseline is shown
    assert page.count('class="plotly-graph-div"') >= 6 + 2 + 1
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["attribution.png", "confusion.png", "projections.png", "twins.png"]
    for p in out.glob("*.png"):
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert w > 300 and h > 300
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    # running again replaces the report; a folder that is not a report is left alone
    assert main(["analyze", "report", STDCL, "--max-samples", "52", "--method", "pca", "--attribution-samples",
                 "0", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert ">Baseline vs STD-CL</h2>" not in page and ">Pooled embeddings</h2>" not in page
    assert sorted(p.name for p in out.glob("*.png")) == ["confusion.png", "projections.png", "twins.png"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["analyze", "report", STDCL, "--max-samples", "52", "--method", "pca", "--out", str(other)]) == 2
    assert "not a report" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"


def test_bad_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert main(["analyze", "embed", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"stdcl: error: {missing}: no such file or folder"
    assert main(["analyze", "metrics", "bundled:nothing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stdcl: error: ") and err.endswith(")") and "synthetic_hcn_stdcl" in err
    assert "nothing.safetensors: no bundled checkpoint 'nothing' (bundled: " in err
    assert len(err.splitlines()) == 1
    assert main(["analyze", "metrics", BASE, STDCL, BASE]) == 2
    assert "give one checkpoint or two" in capsys.readouterr().err
