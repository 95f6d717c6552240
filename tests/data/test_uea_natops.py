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
from tests.support.paths import ROOT

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


# -- the registered natops dataset: UeaTsSource, layout natops8, config natops ----------------------

from stdcl.data.graph import hop_distance, spatial_adjacency  # noqa: E402
from stdcl.data.layouts import get_layout  # noqa: E402
from stdcl.data.registry import open_dataset  # noqa: E402
from stdcl.data.uea_ts import NATOPS_CLASSES, UeaTsSource  # noqa: E402
from stdcl.errors import ConfigError  # noqa: E402

HEADER24 = HEADER.replace("@dimensions 2", "@dimensions 24")


def case24(k: float, label: str) -> str:
    """One 24-dimension case: dimension d (0-based), step t holds k + d + t / 10."""
    return ":".join(",".join(repr(k + d + t / 10) for t in range(3)) for d in range(24)) + f":{label}\n"


def expected24(k: float) -> np.ndarray:
    """(C, T, V, 1) of :func:`case24`: point v coordinate c is dimension 3 v + c."""
    out = np.empty((3, 3, 8, 1), np.float32)
    for v in range(8):
        for c in range(3):
            out[c, :, v, 0] = [k + 3 * v + c + t / 10 for t in range(3)]
    return out


def pair(tmp_path: Path, train: str, test: str, problem: str = "TOY") -> Path:
    folder = tmp_path / "uea"
    folder.mkdir(exist_ok=True)
    write(folder, train, f"{problem}_TRAIN.ts")
    write(folder, test, f"{problem}_TEST.ts")
    return folder


def test_natops8_layout_registered_connected_and_symmetric():
    lay = get_layout("natops8")
    assert lay.num_joints == 8 and lay.num_person == 1 and lay.joints[lay.center] == "elbow_l"
    assert lay.to_mapping() == load_layout_file(LAYOUT).to_mapping()  # the shipped YAML says the same
    a = spatial_adjacency(lay)
    assert a.shape == (3, 8, 8)
    und = (a[1] + a[2]) > 0
    assert np.array_equal(und, und.T) and not und.diagonal().any()  # each edge both ways, no self loop
    assert und.sum() == 2 * 7
    assert np.isfinite(hop_distance(lay)).all()  # connected
    assert lay.groups == (0, 1, 0, 1, 0, 1, 0, 1)


def test_source_reads_a_folder_pair_point_major(tmp_path):
    folder = pair(tmp_path, HEADER24 + case24(0, "2.0") + case24(100, "1.0"), HEADER24 + case24(-50, "1.0"))
    tr = UeaTsSource(folder, "train")
    assert len(tr) == 2 and tr.labels.tolist() == [1, 0] and tr.class_names == ["walk", "run"]
    assert tr.names == ["TOY_TRAIN_0000", "TOY_TRAIN_0001"] and tr.subjects is None and tr.layout.name == "natops8"
    assert tr.read(0).dtype == np.float32 and np.array_equal(tr.read(0), expected24(0))
    assert np.array_equal(tr.read(1), expected24(100))
    te = UeaTsSource(folder / "TOY_TEST.ts", "test")  # a file of the pair works too
    assert np.array_equal(te.read(0), expected24(-50)) and te.names == ["TOY_TEST_0000"]
    both = UeaTsSource(folder, "all", class_names=["a", "b"])
    assert len(both) == 3 and both.labels.tolist() == [1, 0, 0] and both.class_names == ["a", "b"]
    x = tr.read(0)
    x[:] = 7  # read returns a copy
    assert np.array_equal(tr.read(0), expected24(0))


@pytest.mark.parametrize("make, problem", [
    (lambda t: pair(t, HEADER24 + case24(0, "1.0"), HEADER24.replace("true 1.0 2.0", "true 1.0 3.0") + case24(0, "1.0")),
     r"TOY_TEST\.ts: @classLabel 1\.0 3\.0 differs"),
    (lambda t: pair(t, HEADER + CASES, HEADER + CASES), "2 dimensions do not split into points of 3"),
    (lambda t: pair(t, *[HEADER.replace("@dimensions 2", "@dimensions 6") + ":".join(["1,2,3"] * 6) + ":1.0\n"] * 2),
     r"TOY_TRAIN\.ts: 2 points per frame .* layout 'natops8' has 8 joints"),
    (lambda t: pair(t, HEADER24 + case24(0, "1.0"), HEADER24.replace("@seriesLength 3", "@seriesLength 4")
                    + ":".join(["1,2,3,4"] * 24) + ":1.0\n"), "cases of shape"),
    (lambda t: pair(t, HEADER24 + case24(0, "1.0"), HEADER24 + case24(0, "9.0")), r"TOY_TEST\.ts: line 13: class label"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "exactly one <problem>_TRAIN.ts"),
    (lambda t: write(t, HEADER, "x.ts"), "expected a <problem>_TRAIN.ts"),
])
def test_source_errors_are_one_line_data_errors(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(DataError, match=problem) as e:
        UeaTsSource(path, "all")
    assert "\n" not in str(e.value)


def test_source_missing_test_file_and_bad_split(tmp_path):
    folder = pair(tmp_path, HEADER24 + case24(0, "1.0"), HEADER24 + case24(0, "1.0"))
    (folder / "TOY_TEST.ts").unlink()
    with pytest.raises(DataError, match=r"TOY_TEST\.ts: not found"):
        UeaTsSource(folder, "train")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        UeaTsSource(folder, "val")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete", "dup_line", "drop_line"]),
                                st.integers(0, 10**6), st.binary(min_size=1, max_size=3)), min_size=1, max_size=4))
def test_byte_and_line_mutations_parse_or_fail_with_one_line(tmp_path, edits):
    """Random byte edits (invalid UTF-8 included) and line duplications/deletions of a valid file:
    read_ts and the source either succeed with finite arrays or raise a one-line DataError."""
    data = (HEADER24 + case24(0, "1.0") + case24(3, "2.0")).encode("utf-8")
    for op, pos, blob in edits:
        if op in ("dup_line", "drop_line"):
            lines = data.splitlines(keepends=True)
            k = pos % max(1, len(lines))
            lines[k:k + 1] = [lines[k]] * 2 if op == "dup_line" and lines else []
            data = b"".join(lines)
            continue
        k = pos % (len(data) + 1)
        data = (data[:k] + blob + data[k + 1:] if op == "replace" else data[:k] + blob + data[k:]
                if op == "insert" else data[:k] + data[k + 1:])
    folder = tmp_path / "fz"
    folder.mkdir(exist_ok=True)
    (folder / "FZ_TRAIN.ts").write_bytes(data)
    (folder / "FZ_TEST.ts").write_bytes(data)
    try:
        d = read_ts(folder / "FZ_TRAIN.ts")
    except DataError as e:
        assert str(e).startswith(str(folder / "FZ_TRAIN.ts")) and "\n" not in str(e)
    else:
        assert d.x.dtype == np.float32 and d.x.ndim == 3 and np.isfinite(d.x).all() and len(d.labels) == len(d.x)
    try:
        src = UeaTsSource(folder, "all")
    except DataError as e:
        assert "\n" not in str(e)
    else:
        assert all(np.isfinite(src.read(i)).all() for i in range(len(src)))


def test_natops_protocol_config():
    from stdcl.train.config import PROTOCOLS, load_config

    assert "natops" in PROTOCOLS
    cfg = load_config("natops", encoder="hcn", overrides=["data.path=/data/natops"])
    assert cfg["data"]["dataset"] == "natops" and cfg["data"]["window"] == 52 and cfg["data"]["path"] == "/data/natops"
    assert cfg["protocol"] == "natops" and cfg["data"]["repeat"] is None


@needs_natops
def test_real_natops_registered_dataset_matches_conversion(tmp_path):
    train = open_dataset("natops", NATOPS, "train", seed=0)
    test = open_dataset("natops", NATOPS, "test")
    assert len(train) == len(test) == 180 and train.layout.name == "natops8"
    assert train.class_names == test.class_names == NATOPS_CLASSES
    assert np.bincount(train.labels).tolist() == np.bincount(test.labels).tolist() == [30] * 6
    raw = train.source.read(0)
    assert raw.shape == (3, 51, 8, 1) and np.array_equal(raw[:, :, 0, 0], read_ts(NATOPS / "NATOPS_TRAIN.ts").x[0, :3])
    x, label, index = test[5]
    assert x.shape == (3, 52, 8, 1) and x.dtype == np.float32 and index == 5
    out = convert_ts(NATOPS / "NATOPS_TRAIN.ts", NATOPS / "NATOPS_TEST.ts", tmp_path / "n.npz", "natops8")
    for split, ours in (("train", train), ("test", test)):
        theirs = open_dataset("numpy", out, split, window=52, seed=0)
        assert theirs.names == ours.names and theirs.labels.tolist() == ours.labels.tolist()
        for i in (0, 57, 179):  # same arrays, same transform, same random draws
            assert np.array_equal(theirs[i][0], ours[i][0])


@needs_natops
def test_real_natops_hcn_logits_and_train_smoke(tmp_path):
    import json

    import torch
    import torch.nn.functional as F

    from stdcl.encoders import build_encoder

    ds = open_dataset("natops", NATOPS, "train", seed=0)
    batch = [ds[i] for i in range(0, 180, 23)]
    x = torch.from_numpy(np.stack([b[0] for b in batch]))
    y = torch.tensor([b[1] for b in batch])
    torch.manual_seed(0)
    model = build_encoder("hcn", ds.num_classes, ds.layout, in_channels=3, num_person=1, window=52)
    logits = model(x)
    assert logits.shape == (len(batch), 6)
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    run = tmp_path / "run"
    assert main(["-q", "train", "--config", "natops", "--encoder", "hcn", "--stdcl", "on", "--out", str(run),
                 f"data.path={NATOPS}", "train.epochs=1", "train.max_steps=3", "train.batch_size=16",
                 "data.num_workers=0", "data.val_fraction=0", "stdcl.loss.scale_to_data=true",
                 "train.tensorboard=false", "train.progress=false"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["train_items"] == 180 and info["test_samples"] == 180 and info["classes"] == 6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses and all(np.isfinite(losses))
    final = [r for r in records if r["kind"] == "final"][-1]
    assert final["global_step"] == 3 and 0 <= final["test_top1"] <= 1


@needs_natops
def test_inspect_recognises_the_natops_folder():
    from stdcl.data.inspect import inspect_path

    report = inspect_path(NATOPS)
    assert [s.name for s in report.splits] == ["train", "test"] and report.layout == "natops8"
    assert all(s.samples == 180 and set(s.class_counts.values()) == {30} for s in report.splits)
