"""Bad input reported against the readers: each case is one line naming the file, the key and the problem."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stdcl.cli import main
from stdcl.data import open_source
from stdcl.data.ntu_raw import parse_skeleton
from stdcl.data.ucla import read_ucla_json
from stdcl.data.uea_ts import read_ts
from stdcl.errors import DataError
from tests.support.data_files import (
    make_ntu_npz,
    make_numpy,
    make_pyskl,
    ucla_json_obj,
    write_ucla_json,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "cache"))


def error(fn, *args, **kwargs) -> str:
    """The one-line DataError message of ``fn(*args)``, which must name the file."""
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(e.value.path))
    return msg


# -- plain-numpy .npz: every member --------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"layout": np.array("{not json")}, "key 'layout': not valid layout JSON (Expecting property name"),
    ({"layout": np.array("[1, 2]")}, "key 'layout': '[1, 2]' is neither a layout name"),
    ({"layout": np.array('{"joints": 3}')}, "key 'layout': layout 'custom': 'joints' must be a non-empty list"),
    ({"layout": np.array("../../etc/my.yaml")}, "key 'layout': '../../etc/my.yaml' is neither a layout name"),
    ({"layout": np.array(25)}, "key 'layout': must be one string, got int64 array of shape ()"),
    ({"class_meta": np.array("[{")}, "key 'class_meta': not valid class_meta JSON"),
    ({"class_meta": np.array("[" * 100000 + "]" * 100000)}, "key 'class_meta': class_meta JSON nested too deeply"),
    ({"class_meta": np.array('{"a": 1}')}, "key 'class_meta': class_meta must be a JSON list of objects"),
    ({"class_meta": np.array('[{"name": "a"}]')}, "key 'class_meta': 1 class_meta entries for 4 classes"),
    ({"lengths": np.arange(5)}, "key 'lengths': 5 lengths for 8 samples"),
    ({"lengths": np.arange(9)}, "key 'lengths': 9 lengths for 8 samples"),
    ({"lengths": np.array([40, 30, -2, 10, 40, 1, 5, 40])}, "key 'lengths': length -2 of sample 2 is outside 0..40"),
    ({"lengths": np.array([40, 30, 20, 10, 41, 1, 5, 40])}, "key 'lengths': length 41 of sample 4 is outside 0..40"),
    ({"lengths": np.full(8, 20.0)}, "key 'lengths': lengths must be integers, got dtype float64"),
    ({"x": np.full((8, 3, 4, 25, 2), "a")}, "key 'x': must hold numbers, got dtype <U1"),
    ({"x": np.zeros((8, 3, 4, 25, 2), bool)}, "key 'x': must hold numbers, got dtype bool"),
    ({"x": np.zeros((8, 3, 4, 25, 2), object)}, "key 'x': holds Python objects; refusing to unpickle"),
    ({"x": np.zeros((8, 3, 0, 25, 2), np.float32)}, "key 'x': x must be (N, C, T, V, M) or (N, T, V, C) with no "
                                                    "empty dimension, got shape (8, 3, 0, 25, 2)"),
    ({"split_train": np.arange(6.0)}, "key 'split_train': indices must be integers, got dtype float64"),
    ({"split_train": np.array([0, 1, 8])}, "key 'split_train': index 8 is outside 0..7"),
    ({"split_train": np.array([0, 1, 1])}, "key 'split_train': index 1 appears 2 times"),
    ({"split_train": np.zeros((2, 3), int)}, "key 'split_train': must have 1 dimensions, got shape (2, 3)"),
    ({"y": np.array([0, 1, 2, 3, 0, 1, 2, 3.5])}, "key 'y': label 3.5 of sample 7 is not an integer"),
    ({"y": np.ones(8, bool)}, "key 'y': must hold numbers, got dtype bool"),
    ({"names": np.arange(8)}, "key 'names': names must be a 1-D array of strings, got int64 array"),
    ({"names": np.array(["a", "b"])}, "key 'names': 2 names for 8 samples"),
    ({"subjects": np.arange(8) + 0.5}, "key 'subjects': subject ids must be integers, got dtype float64"),
    ({"class_names": np.array(["a", "b"]), "class_meta": None}, "key 'y': label 2 of sample 2 is out of range 0..1"),
    ({"y": np.array([0, 1, 2, 3, 0, 1, 2, 10**9]), "class_names": None, "class_meta": None},
     "key 'y': label 1000000000 of sample 7 implies 1000000001 classes (at most 100000)"),
])
def test_numpy_members_are_checked(tmp_path, change, message):
    arrays = {k: v for k, v in (make_numpy(tmp_path / "ok.npz") | change).items() if v is not None}
    np.savez(tmp_path / "x.npz", **arrays)
    assert error(open_source, "numpy", tmp_path / "x.npz", "train").startswith(f"{tmp_path / 'x.npz'}: {message}")


def test_numpy_split_of_floats_is_not_truncated(tmp_path):
    arrays = make_numpy(tmp_path / "ok.npz")
    np.savez(tmp_path / "x.npz", **(arrays | {"split_test": np.array([6.7, 7.2])}))
    assert error(open_source, "numpy", tmp_path / "x.npz", "test") == \
        f"{tmp_path / 'x.npz'}: key 'split_test': indices must be integers, got dtype float64"


@pytest.mark.parametrize("change, message", [
    ({"y_train": np.array([0, 1, 2, 3, 4, 5.5])}, "key 'y_train': label 5.5 of sample 5 is not an integer"),
    ({"y_train": np.full((6, 60), "a")}, "key 'y_train': must hold numbers, got dtype <U1"),
    ({"y_train": np.array([0, 1, 2, 3, 4, 10**9])}, "key 'y_train': label 1000000000 of sample 5 implies"),
    ({"y_train": np.zeros((6, 0))}, "key 'y_train': one-hot labels have no classes (shape (6, 0))"),
    ({"x_train": np.full((6, 300, 150), "a")}, "key 'x_train': must hold numbers, got dtype <U1"),
    ({"x_train": np.zeros((6, 0, 150), np.float32)}, "key 'x_train': expected shape (N, T, 150) or (N, T, 75) "
                                                     "with T > 0, got (6, 0, 150)"),
])
def test_ntu_npz_members_are_checked(tmp_path, change, message):
    arrays = make_ntu_npz(tmp_path / "ok.npz")
    np.savez(tmp_path / "x.npz", **(arrays | change))
    assert error(open_source, "ntu-npz", tmp_path / "x.npz", "train").startswith(f"{tmp_path / 'x.npz'}: {message}")


def test_ntu_npz_nan_sample_and_bad_names_sidecar(tmp_path):
    arrays = make_ntu_npz(tmp_path / "NTU60_CS.npz", n_train=2, n_test=1)
    arrays["x_test"][0, 3, 7] = np.inf
    np.savez(tmp_path / "NTU60_CS.npz", **arrays)
    src = open_source("ntu60-xsub", tmp_path, "test")
    assert "key 'x_test': sample 'test_0' (row 0) has NaN or infinite values" in error(src.read, 0)
    sidecar = tmp_path / "NTU60_CS.names.json"
    for text, problem in [("{", "not valid names sidecar (Expecting"),
                          ('{"train": [1, 2]}', "no list of names for 'train'"),
                          ('{"train": ["a"]}', "1 train names for 2 samples in NTU60_CS.npz")]:
        sidecar.write_text(text)
        assert problem in error(open_source, "ntu60-xsub", tmp_path, "train")


# -- damaged archives ------------------------------------------------------------------------------

def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1 and len(old) == len(new)
    return data.replace(old, new, 1)


def test_npz_member_header_disagreeing_with_its_size(tmp_path):
    p = tmp_path / "d.npz"
    make_numpy(p)
    p.write_bytes(_replace_once(p.read_bytes(), b"'shape': (8, 3, 40, 25, 2)", b"'shape': (9, 3, 40, 25, 2)"))
    msg = error(open_source, "numpy", p)
    assert msg.startswith(f"{p}: key 'x': header says float32 (9, 3, 40, 25, 2)") and "the archive records" in msg


def test_npz_member_with_a_garbled_npy_header(tmp_path):
    p = tmp_path / "d.npz"
    make_numpy(p)
    p.write_bytes(_replace_once(p.read_bytes(), b"25, 2), }", b"25, 2), |"))
    assert error(open_source, "numpy", p).startswith(f"{p}: key 'x': not a valid .npy member (")


def test_npz_local_header_disagreeing_with_the_directory(tmp_path):
    p = tmp_path / "d.npz"
    make_numpy(p)
    data = p.read_bytes()
    assert data[30:35] == b"x.npy"  # the first member's local header names it
    p.write_bytes(data[:30] + b"q.npy" + data[35:])
    assert error(open_source, "numpy", p) == f"{p}: key 'x': ZIP local header disagrees with the archive's directory"


def _data_start(data: bytes, info: zipfile.ZipInfo) -> int:
    """Where a member's bytes start, from its local header (whose extra field may differ from the directory's)."""
    name_len, extra_len = struct.unpack("<2H", data[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


@pytest.mark.parametrize("key, message", [("names", "member data is damaged (Bad CRC-32 for file 'names.npy')"),
                                          ("x", "data fails its CRC check (damaged file)")])
def test_npz_stored_member_failing_its_crc(tmp_path, key, message):
    p = tmp_path / "d.npz"
    make_numpy(p)
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo(f"{key}.npy")
    data = bytearray(p.read_bytes())
    data[_data_start(data, info) + info.file_size - 1] ^= 0x01  # the last byte of the array data
    p.write_bytes(bytes(data))
    assert error(open_source, "numpy", p) == f"{p}: key {key!r}: {message}"


def test_npz_large_stored_member_crc_checked_once_per_file_version(tmp_path, monkeypatch):
    """Members above the limit are checked in chunks at their first opening, then remembered in the cache
    folder (STDCL_CACHE) until the file changes; a damaged one is refused and not remembered."""
    from stdcl.data import npz_members

    monkeypatch.setattr(npz_members, "_CRC_LIMIT", 256)  # x (8 x 3 x 40 x 25 x 2 floats) is "large", chunked
    p = tmp_path / "d.npz"
    make_numpy(p)
    x = np.asarray(npz_members.open_member(p, "x"))
    first = list((tmp_path / "cache").rglob("*.crc-ok"))
    assert len(first) == 1
    good = p.read_bytes()
    calls = []
    real = npz_members.zlib.crc32
    monkeypatch.setattr(npz_members.zlib, "crc32", lambda *a: calls.append(len(a[0])) or real(*a))
    np.testing.assert_array_equal(npz_members.open_member(p, "x"), x)
    assert calls == []  # remembered: the second opening reads nothing
    monkeypatch.setattr(npz_members.zlib, "crc32", real)
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("x.npy")
    data = bytearray(p.read_bytes())
    data[_data_start(data, info) + info.file_size // 2] ^= 0x01  # a new version of the file, damaged
    p.write_bytes(bytes(data))
    assert error(npz_members.open_member, p, "x") == f"{p}: key 'x': data fails its CRC check (damaged file)"
    assert list((tmp_path / "cache").rglob("*.crc-ok")) == first  # the damaged version is not remembered
    p.write_bytes(good)  # a good version again (another modification time): checked, and the older marker removed
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(npz_members.open_member(p, "x"), x)
    markers = list((tmp_path / "cache").rglob("*.crc-ok"))
    assert len(markers) == 1 and markers != first


def test_npz_compressed_member_failing_its_crc_or_inflate(tmp_path):
    p = tmp_path / "c.npz"
    arrays = make_numpy(tmp_path / "ok.npz")
    np.savez_compressed(p, **arrays)
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("x.npy")
    data = bytearray(p.read_bytes())
    data[_data_start(data, info) + info.compress_size // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    msg = error(open_source, "numpy", p)
    assert msg.startswith(f"{p}: key 'x': member data is damaged (")
    assert not list((tmp_path / "cache").rglob("*.npy"))  # no partial converted copy is kept


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_truncated_npz(tmp_path, cut):
    p = tmp_path / "d.npz"
    make_numpy(p)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * cut)])
    assert error(open_source, "numpy", p).startswith(f"{p}: not a readable .npz archive (")


# -- pyskl pickles -------------------------------------------------------------------------------

def _pyskl_with(tmp_path: Path, edit) -> Path:
    data = make_pyskl(tmp_path / "ok.pkl")
    edit(data)
    p = tmp_path / "a.pkl"
    p.write_bytes(pickle.dumps(data))
    return p


def _ann(k: int, **change):
    def edit(data):
        data["annotations"][k].update(change)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(annotations={"a": 1}), "key 'annotations': 'annotations' must be a list of dicts, got dict"),
    (lambda d: d["annotations"].__setitem__(1, [1, 2]), "annotation 1: must be a dict, got list"),
    (lambda d: d.update(split=["xsub_train"]), "key 'split': 'split' must map split names to lists of sample names"),
    (lambda d: d["split"].update(xsub_train="abc"), "key 'split': 'split' must map split names to lists"),
    (lambda d: d["split"].update(xsub_train=[1, 2]), "key 'split': 'split' must map split names to lists"),
    (lambda d: d["split"]["xsub_train"].append("S999"), "key 'split': split 'xsub_train' names 1 samples without an "
                                                       "annotation (first: 'S999')"),
    (_ann(2, keypoint=[[1.0]]), "annotation 2 'S001C001P003R003A003': 'keypoint' must be a numeric (M, T, V, C) "
                                "array, got list"),
    (_ann(2, keypoint=np.zeros((12, 25, 3))), "'keypoint' must be a numeric (M, T, V, C) array, got float64 array "
                                              "of shape (12, 25, 3)"),
    (_ann(2, keypoint=np.full((2, 12, 25, 3), "a")), "'keypoint' must be a numeric (M, T, V, C) array, got <U1"),
    (_ann(2, keypoint=np.zeros((2, 12, 25, 3), bool)), "'keypoint' must be a numeric (M, T, V, C) array, got bool"),
    (_ann(2, keypoint=np.zeros((2, 12, 17, 3))), "keypoints have V=17 joints and 3 channels, annotation 0 has V=25"),
    (_ann(0, label=True), "annotation 0 'S001C001P001R001A001': 'label' must be an integer in 0..99999, "
                          "got True (bool)"),
    (_ann(0, label=1.0), "'label' must be an integer in 0..99999, got 1.0 (float)"),
    (_ann(0, label="1"), "'label' must be an integer in 0..99999, got '1' (str)"),
    (_ann(0, label=-1), "'label' must be an integer in 0..99999, got -1 (int)"),
    (_ann(0, label=2**70), "'label' must be an integer in 0..99999, got 1180591620717411303424 (int)"),
    (_ann(1, total_frames=99), "annotation 1 'S001C001P002R002A002': 'total_frames' is 99 but 'keypoint' has "
                               "11 frames"),
    (_ann(1, total_frames=11.0), "'total_frames' is 11.0 but 'keypoint' has 11 frames"),
    (_ann(1, frame_dir=7), "annotation 1: 'frame_dir' must be a string, got int"),
    (_ann(1, frame_dir="S001C001P001R001A001"), "annotation 1 'S001C001P001R001A001': frame_dir "
                                                "'S001C001P001R001A001' appears twice"),
    (_ann(1, keypoint_score=np.ones(3)), "'keypoint_score' must be an (M, T, V) = (2, 11, 25) array"),
])
def test_pyskl_fields_are_checked(tmp_path, edit, message):
    p = _pyskl_with(tmp_path, edit)
    assert message in error(open_source, "pyskl", p, "xsub_train")


def test_pyskl_label_types_numpy_ints_are_fine(tmp_path):
    p = _pyskl_with(tmp_path, _ann(0, label=np.int64(2)))
    assert open_source("pyskl", p, "xsub_train").labels[0] == 2


@pytest.mark.parametrize("data, message", [(b"", "is empty (0 bytes), not a pickle file"),
                                           (pickle.dumps({"a": 1})[:-3], "not a plain data pickle"),
                                           (b"\x80\x04garbage", "not a plain data pickle")])
def test_pyskl_empty_truncated_and_garbage(tmp_path, data, message):
    p = tmp_path / "a.pkl"
    p.write_bytes(data)
    assert message in error(open_source, "pyskl", p, "xsub_train")


# -- NW-UCLA json ---------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda o: o.update(file_name=3), "'file_name' must be a string, got 3"),
    (lambda o: o.update(label=True), "'label' must be an integer 1..10, got True"),
    (lambda o: o.update(label=0), "'label' must be an integer 1..10, got 0"),
    (lambda o: o.update(label=11), "'label' must be an integer 1..10, got 11"),
    (lambda o: o.update(label=1.0), "'label' must be an integer 1..10, got 1.0"),
    (lambda o: o["skeletons"][1][4].__setitem__(2, True), "key 'skeletons': 'skeletons' holds non-numeric values "
                                                         "(true/false)"),
    (lambda o: o["skeletons"][1][4].__setitem__(2, 1e300), "key 'skeletons': non-finite coordinate at frame 1, "
                                                          "joint 4 (1 such values)"),
    (lambda o: o["skeletons"][1][4].__setitem__(2, 10**400), "key 'skeletons': 'skeletons' holds non-numeric values"),
    (lambda o: o.update(skeletons={"a": 1}), "key 'skeletons': 'skeletons' holds non-numeric values"),
    (lambda o: o.update(skeletons="abc"), "key 'skeletons': 'skeletons' holds non-numeric values"),
])
def test_ucla_fields_are_checked(tmp_path, edit, message):
    obj = ucla_json_obj()
    edit(obj)
    p = write_ucla_json(tmp_path, "a01_s01_e00_v01", obj)
    assert error(read_ucla_json, p) == f"{p}: {message}"


@pytest.mark.parametrize("text, message", [
    ("[" * 100000 + "]" * 100000, "JSON nested too deeply to read"),
    ('{"skeletons": ' + "[" * 100000 + "]" * 100000 + "}", "JSON nested too deeply to read"),
    (b'{"file_name": "\xff"}', "JSON is not UTF-8 text"),
    ("", "is empty (0 bytes), not an NW-UCLA json file"),
])
def test_ucla_deep_empty_and_binary_json(tmp_path, text, message):
    p = tmp_path / "a01_s01_e00_v01.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert error(read_ucla_json, p) == f"{p}: {message}"
    assert error(open_source("ucla", tmp_path, "train").read, 0) == f"{p}: {message}"


def test_inspect_one_ucla_json_file_via_the_cli(tmp_path, capsys):
    p = write_ucla_json(tmp_path / "all_sqe", "a01_s02_e01_v03", ucla_json_obj(4, 1))
    assert main(["data", "inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [str(p), "  format: ucla", "  layout: ucla20"]
    assert "split all: 1 samples" in out and "valid frames: min 4, mean 4.0, median 4, max 4" in out
    assert "classes present: 1 / 10" in out
    assert main(["data", "inspect", "--json", str(p)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "ucla" and report["splits"][0]["samples"] == 1
    bad = write_ucla_json(tmp_path, "a01_s01_e00_v01", {"skeletons": [], "label": 1})
    assert main(["data", "inspect", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"stdcl: error: {bad}: key 'skeletons': 'skeletons' has no frames"


# -- NTU .skeleton and UEA .ts --------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"\xff\xfe\x00garbage\n", "line 1: expected the frame count (an integer) for the header"),
    (b"2\r\n1\r\n", "truncated file?"),
    (b"1\r\n" + b"9" * 30 + b"\r\nx\r\n", "line 3: file ends here but frame 1 of 1 declares "
                                       "999999999999999999999999999999 bodies (1 lines follow); truncated file?"),
])
def test_ntu_skeleton_garbage(tmp_path, data, message):
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_bytes(data)
    assert message in error(parse_skeleton, p)


def test_uea_absurd_series_length_is_refused_before_allocating(tmp_path):
    p = tmp_path / "X_TRAIN.ts"
    p.write_text("@dimensions 1\n@seriesLength 999999999999\n@classLabel true a b\n@data\n1,2,3:a\n")
    assert error(read_ts, p) == f"{p}: line 5: dimension 1 has 3 values, @seriesLength is 999999999999"


# -- every registered format: empty file, a folder for a file, a missing file -----------------------

@pytest.mark.parametrize("dataset, name, message", [
    ("numpy", "d.npz", "is empty (0 bytes), not a .npz archive"),
    ("numpy", "d.npy", "is empty (0 bytes), not a .npy file"),
    ("ntu-npz", "NTU60_CS.npz", "is empty (0 bytes), not a .npz archive"),
    ("ntu60-xsub", "NTU60_CS.npz", "is empty (0 bytes), not a .npz archive"),
    ("pyskl", "a.pkl", "is empty (0 bytes), not a pickle file"),
    ("ucla", "a01_s01_e00_v01.json", "is empty (0 bytes), not an NW-UCLA json file"),
    ("natops", "NATOPS_TRAIN.ts", "is empty (0 bytes), not a .ts file"),
])
def test_empty_file_of_each_format(tmp_path, dataset, name, message):
    p = tmp_path / name
    p.write_bytes(b"")
    if dataset == "natops":
        (tmp_path / "NATOPS_TEST.ts").write_bytes(b"")
    options = {"labels": np.zeros(1, int)} if name.endswith(".npy") else {}

    def read_all():
        src = open_source(dataset, p if dataset != "ntu60-xsub" else tmp_path, **options)
        return [src.read(i) for i in range(len(src))]

    assert error(read_all) == f"{p}: {message}"


@pytest.mark.parametrize("dataset, name, message", [
    ("ntu-npz", "x.npz", "is a folder, not a .npz archive"),
    ("ntu60-xsub", "NTU60_CS.npz", "is a folder, not a .npz archive"),
    ("pyskl", "a.pkl", "is a folder, not a pickle file"),
])
def test_folder_where_a_file_is_expected(tmp_path, dataset, name, message):
    p = tmp_path / name
    p.mkdir()
    options = {"labels": np.zeros(1, int)} if name.endswith(".npy") else {}
    path = tmp_path if dataset == "ntu60-xsub" else p
    assert error(open_source, dataset, path, **options) == f"{p}: {message}"


@pytest.mark.parametrize("dataset", ["numpy", "ntu-npz", "pyskl", "ucla", "natops", "ntu60-xsub"])
def test_missing_file(tmp_path, dataset):
    p = tmp_path / "nowhere.x"
    assert error(open_source, dataset, p) == f"{p}: no such file or directory"


def test_inspect_pyskl_and_numpy_files_via_the_cli(tmp_path, capsys):
    make_pyskl(tmp_path / "a.pkl")
    assert main(["data", "inspect", str(tmp_path / "a.pkl")]) == 0
    out = capsys.readouterr().out
    assert "  format: pyskl" in out and "split xsub_train: 4 samples" in out and "split xsub_val: 1 samples" in out
    make_numpy(tmp_path / "d.npz")
    assert main(["data", "inspect", str(tmp_path / "d.npz")]) == 0
    out = capsys.readouterr().out
    assert "split train: 6 samples" in out and "split test: 2 samples" in out
    (tmp_path / "e.npz").write_bytes(b"")
    assert main(["data", "inspect", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"stdcl: error: {tmp_path / 'e.npz'}: is empty (0 bytes), not a .npz archive"
