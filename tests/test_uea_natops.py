"""The UEA .ts reader, its conversion to the plain-numpy format with a custom layout, and UEA NATOPS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stdcl.cli import main
from stdcl.data.layouts import load_layout_file
from stdcl.data.uea_ts import comment_class_names, convert_ts, read_ts, to_skeleton
from stdcl.errors import DataError, StdclError

ROOT = Path(__file__).resolve().parents[1]
NATOPS = ROOT.parent / "shared" / "data" / "uea_natops"
LAYOUT = ROOT / "experiments" / "layouts" / "natops8.yaml"

HEADER = ("#Caf\u00e9 data, comment with a non-ASCII character\n#1: walk\n#2: run\n"
          "@problemName Tiny\n@timeStamps false\n@missing false\n@univariate false\n@dimensions 2\n"
          "@equalLength true\n@seriesLength 3\n@classLabel true 1.0 2.0\n@data\n")
CASES = "1,2,3:4,5,6:1.0\n-1,-2.5,3e-1:0,0,0:2.0\n"


def write(tmp_path: Path, text: str, name: str = "t.ts", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_reads_values_labels_header_and_class_names(tmp_path):
    d = read_ts(write(tmp_path, HEADER + CASES))
    assert d.x.dtype == np.float32 and d.x.shape == (2, 2, 3)
    assert np.array_equal(d.x, np.array([[[1, 2, 3], [4, 5, 6]], [[-1, -2.5, 0.3], [0, 0, 0]]], np.float32))
    assert d.labels == ["1.0", "2.0"] and d.class_labels == ["1.0", "2.0"] and d.y.tolist() == [0, 1]
    assert d.header["problemname"] == "Tiny" and comment_class_names(d) == ["walk", "run"]


def test_latin1_header_and_missing_values_as_nan(tmp_path):
    d = read_ts(write(tmp_path, HEADER + CASES, encoding="latin-1"))
    assert d.x.shape == (2, 2, 3)
    p = write(tmp_path, HEADER + "1,?,3:4,5,6:1.0\n", "m.ts")
    with pytest.raises(DataError, match=r"m\.ts: line 13: missing value"):
        read_ts(p)
    assert np.isnan(read_ts(p, missing="nan").x[0, 0, 1])


@pytest.mark.parametrize("text, problem", [
    (HEADER.replace("@data\n", ""), "no @data line"),
    (HEADER.replace("@data\n", "") + CASES, r"line 12: expected a '@' header line or '#' comment before @data"),
    (HEADER + "1,2,3:1.0\n", r"line 13: expected 2 dimensions"),
    (HEADER + "1,2:4,5,6:1.0\n", r"line 13: dimension 1 has 2 values"),
    (HEADER + "1,2,3:4,5,6:7.0\n", r"line 13: class label '7.0' is not one of"),
    (HEADER + "1,x,3:4,5,6:1.0\n", r"line 13: dimension 1 step 2: 'x' is not a number"),
    (HEADER + "1,inf,3:4,5,6:1.0\n", "is not finite"),
    (HEADER.replace("@seriesLength 3", "@seriesLength three") + CASES, "@serieslength must be a positive integer"),
    (HEADER.replace("@equalLength true", "@equalLength false") + CASES, "equalLength false is not supported"),
    (HEADER.replace("@classLabel true 1.0 2.0", "@classLabel false") + CASES, "@classLabel must be 'true'"),
    (HEADER.replace("@dimensions 2\n", "") + CASES, "@dimensions is missing"),
    (HEADER.replace("@problemName Tiny", "problemName Tiny") + CASES, "expected a '@' header line"),
    (HEADER, "no cases after @data"),
])
def test_malformed_files_give_one_line_naming_file_and_line(tmp_path, text, problem):
    p = write(tmp_path, text, "bad.ts")
    with pytest.raises(DataError, match=problem) as e:
        read_ts(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(HEADER + CASES)), junk=st.text(max_size=6), drop=st.integers(0, 14))
def test_fuzzed_files_parse_or_fail_with_one_line(tmp_path, cut, junk, drop):
    lines = (HEADER + CASES).splitlines(keepends=True)
    lines = lines[:drop] + lines[drop + 1:]
    text = "".join(lines)
    text = text[:cut] + junk + text[cut:]
    p = write(tmp_path, text, "fuzz.ts")
    try:
        d = read_ts(p)
    except DataError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)
    else:
        assert d.x.ndim == 3 and len(d.labels) == d.x.shape[0] and np.isfinite(d.x).all()


def test_to_skeleton_is_point_major(tmp_path):
    d = read_ts(write(tmp_path, HEADER.replace("@dimensions 2", "@dimensions 6")
                      + "1,1,1:2,2,2:3,3,3:4,4,4:5,5,5:6,6,6:1.0\n"))
    s = to_skeleton(d, "t.ts")
    assert s.shape == (1, 3, 3, 2, 1)  # N, C, T, V, M
    assert s[0, :, 0, 0, 0].tolist() == [1, 2, 3] and s[0, :, 0, 1, 0].tolist() == [4, 5, 6]
    with pytest.raises(DataError, match="do not split into points of 4"):
        to_skeleton(d, "t.ts", channels=4)


def test_natops_layout_is_a_connected_tree_with_two_arm_groups():
    lay = load_layout_file(LAYOUT)
    assert lay.num_joints == 8 and lay.num_person == 1 and lay.num_groups == 2
    parents = lay.parents  # raises unless the edges form one tree
    assert (parents == -1).sum() == 1 and lay.joints[lay.center] == "elbow_l"
    assert len(lay.edges) == 7 and ("elbow_r", "elbow_l") in [(lay.joints[c], lay.joints[p]) for c, p in lay.edges]


def test_convert_refuses_existing_output_and_mismatches(tmp_path):
    tr = write(tmp_path, HEADER.replace("@dimensions 2", "@dimensions 24")
               + "".join(":".join(["1,2,3"] * 24) + f":{c}\n" for c in ("1.0", "2.0")), "a_TRAIN.ts")
    out = tmp_path / "n.npz"
    convert_ts(tr, tr, out, LAYOUT)
    with pytest.raises(DataError, match="exists; pass --force"):
        convert_ts(tr, tr, out, LAYOUT)
    convert_ts(tr, tr, out, LAYOUT, class_names=["a", "b"], force=True)
    with np.load(out) as z:
        assert z["x"].shape == (4, 3, 3, 8, 1) and z["class_names"].tolist() == ["a", "b"]
        assert z["split_train"].tolist() == [0, 1] and z["split_test"].tolist() == [2, 3]
    small = write(tmp_path, HEADER + CASES, "small.ts")
    with pytest.raises(DataError, match="do not split into points|points per frame"):
        convert_ts(small, small, tmp_path / "m.npz", LAYOUT)
    assert not (tmp_path / "m.npz").exists() and not list(tmp_path.glob("*.tmp*"))


needs_natops = pytest.mark.skipif(not (NATOPS / "NATOPS_TRAIN.ts").is_file(),
                                  reason=f"UEA NATOPS is not at {NATOPS} (research-only data, not shipped)")


@needs_natops
def test_real_natops_shapes_classes_and_training(tmp_path, capsys):
    tr = read_ts(NATOPS / "NATOPS_TRAIN.ts")
    te = read_ts(NATOPS / "NATOPS_TEST.ts")
    assert tr.x.shape == te.x.shape == (180, 24, 51)
    assert np.bincount(tr.y).tolist() == np.bincount(te.y).tolist() == [30] * 6
    assert comment_class_names(tr) == ["I have command", "All clear", "Not clear", "Spread wings", "Fold wings",
                                       "Lock wings"]
    out = tmp_path / "natops.npz"
    assert main(["data", "convert-ts", str(NATOPS / "NATOPS_TRAIN.ts"), str(NATOPS / "NATOPS_TEST.ts"),
                 "--layout", str(LAYOUT), "--out", str(out)]) == 0
    with np.load(out) as z:
        x = z["x"]
        assert x.shape == (360, 3, 51, 8, 1)
        assert np.array_equal(x[0, :, :, 0, 0], tr.x[0, 0:3])  # hand tip left = dimensions 1-3
        assert np.array_equal(x[180, :, :, 7, 0], te.x[0, 21:24])  # thumb right = dimensions 22-24
    run = tmp_path / "run"
    assert main(["-q", "train", "--config", "custom", "--encoder", "hcn", "--stdcl", "on", "--out", str(run),
                 f"data.path={out}", "data.window=52", "train.epochs=1", "train.batch_size=16",
                 "data.num_workers=0", "data.val_fraction=0", "stdcl.loss.scale_to_data=true",
                 "train.tensorboard=false"]) == 0
    import json
    summary = json.loads((run / "summary.json").read_text())
    info = json.loads((run / "run.json").read_text())
    assert info["train_items"] == 180 and info["test_samples"] == 180 and info["classes"] == 6
    assert 0 <= summary["final"]["test_top1"] <= 1


def test_cli_error_is_one_line(tmp_path, capsys):
    bad = write(tmp_path, "@data\n", "bad.ts")
    code = main(["data", "convert-ts", str(bad), str(bad), "--layout", str(LAYOUT), "--out", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and str(bad) in err and len(err.splitlines()) == 1
    assert isinstance(DataError(bad, "x"), StdclError)
