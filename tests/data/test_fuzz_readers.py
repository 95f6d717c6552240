"""Property-based fuzzing of every reader: a small valid file, randomly damaged (cut, bytes flipped,
keys deleted, fields of another type, arrays of other dtypes and shapes, deep nesting), opened
through the public entry and read in full either gives valid samples or a StdclError, never any
other exception."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stdcl.data import open_source
from stdcl.data.ntu_denoise import skeleton_to_array
from stdcl.data.ntu_raw import parse_skeleton
from stdcl.data.ucla import read_ucla_json
from stdcl.errors import DataError, StdclError

#: deterministic in CI; ``STDCL_FUZZ_EXAMPLES=5000`` searches longer with random seeds
_DEEP = int(os.environ.get("STDCL_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=_DEEP or 150, deadline=None, derandomize=not _DEEP, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Converted copies of compressed members go to the test's folder, not the user's cache (and
    their notices are not logged)."""
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(logging.getLogger("stdcl.data.npz_members"), "disabled", True)


# -- mutations ---------------------------------------------------------------------------------

#: byte edits: (operation, position (taken modulo the length), bytes)
BYTE_EDITS = st.lists(st.tuples(st.sampled_from(["cut", "flip", "insert", "delete"]), st.integers(0, 10**6),
                                st.binary(min_size=1, max_size=4)), min_size=1, max_size=3)


def edit_bytes(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    for op, pos, blob in edits:
        k = pos % (len(data) + 1)
        if op == "cut":
            data = data[:k]
        elif op == "flip":
            data = data[:k] + bytes(b ^ (blob[0] or 1) for b in data[k:k + 1]) + data[k + 1:]
        elif op == "insert":
            data = data[:k] + blob + data[k:]
        else:
            data = data[:k] + data[k + len(blob):]
    return data


#: replacement values for a field: other types, nesting, odd numbers
ODD_VALUES = st.sampled_from([None, True, 0, -1, 2**63, 1.5, float("nan"), "", "x", "[", [], {}, [[[]]], [1, "a"],
                              {"a": {"b": [1]}}, [[1.0, 2.0, 3.0]]])


def _odd_array(dtype: str, shape: list[int]) -> np.ndarray:
    if dtype == "object":  # np.savez pickles it; readers must refuse to unpickle
        return np.array([{"a": 1}], dtype=object)
    return np.ones(shape, dtype=dtype)


#: replacement arrays: other dtypes and shapes, odd text (JSON or not), odd values
ODD_ARRAYS = st.one_of(
    st.builds(_odd_array, st.sampled_from(["float64", "float16", "int8", "uint64", "bool", "<U3", "complex64",
                                           "object"]), st.lists(st.integers(0, 4), max_size=4)),
    st.sampled_from(["{", "[]", "{}", "ntu25", "coco17", '[{"a": 1}]', "[" * 5000 + "]" * 5000, '{"joints": 3}',
                     '{"joints": ["a", "b"], "center": "a", "edges": [["b", "a"]]}']).map(np.array),
    st.sampled_from([np.array([np.nan, np.inf]), np.array([-1, 10**9]), np.arange(3.0), np.array(b"\xff\xfe")]),
)


def edit_arrays(arrays: dict[str, np.ndarray], edits: list[tuple[str, int, Any]]) -> dict[str, np.ndarray]:
    """``(operation, key index, new array)`` edits: delete a member, replace it, or change its dtype."""
    arrays = dict(arrays)
    for op, k, new in edits:
        keys = sorted(arrays)
        if not keys:
            break
        key = keys[k % len(keys)]
        if op == "delete":
            del arrays[key]
        elif op == "replace":
            arrays[key] = new
        elif op == "astype":
            try:
                arrays[key] = arrays[key].astype(new.dtype)
            except (ValueError, TypeError, OverflowError):  # e.g. text to float: replace instead
                arrays[key] = new
        elif op == "scale":  # same dtype, values out of range: negative or huge (unsigned wrap around)
            a = arrays[key]
            with np.errstate(all="ignore"):
                arrays[key] = (-a - 1 if a.dtype.kind in "iu" else a * -1e30).astype(a.dtype) \
                    if a.dtype.kind in "iuf" else a
    return arrays


ARRAY_EDITS = st.lists(st.tuples(st.sampled_from(["delete", "replace", "astype", "scale"]), st.integers(0, 50),
                                 ODD_ARRAYS), max_size=3)


def edit_tree(obj: Any, edits: list[tuple[str, list[int], Any]]) -> Any:
    """Edits of a JSON-like tree of dicts and lists: at the node reached by the path of indices,
    delete a child, replace it with an odd value, or nest it in lists."""
    for op, route, value in edits:
        parent, node = None, obj
        key = None
        for i in route:
            if isinstance(node, dict) and node:
                key = sorted(node)[i % len(node)]
            elif isinstance(node, list) and node:
                key = i % len(node)
            else:
                break
            parent, node = node, node[key]
        if parent is None:
            continue
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = copy.deepcopy(value)  # sampled values are shared between examples
        elif op == "nest":
            parent[key] = {"x": node} if isinstance(value, dict) else [[node]]
    return obj


TREE_EDITS = st.lists(st.tuples(st.sampled_from(["delete", "replace", "nest"]),
                                st.lists(st.integers(0, 30), min_size=1, max_size=5),
                                st.one_of(ODD_VALUES, ODD_ARRAYS)), max_size=3)


# -- what a valid outcome is -------------------------------------------------------------------

def check_error(e: StdclError) -> None:
    """One line; a DataError starts with the file it names."""
    assert "\n" not in str(e)
    if isinstance(e, DataError):
        assert e.path and str(e).startswith(e.path)


def read_all(open_it: Callable[[], Any]) -> None:
    """Open a source and read every sample: each is finite float32 (C, T, V, M) with the layout's V,
    every label is in range; anything else must be a one-line StdclError."""
    try:
        src = open_it()
        samples = [src.read(i) for i in range(len(src))]
    except StdclError as e:
        check_error(e)
        return
    assert len(src.names) == len(src) == len(src.labels)
    assert ((0 <= src.labels) & (src.labels < len(src.class_names))).all()
    for x in samples:
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1] >= 1 and x.shape[2] == src.layout.num_joints
        assert np.isfinite(x).all()


def save_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool, edits) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    path.write_bytes(edit_bytes(buf.getvalue(), edits) if edits else buf.getvalue())


# -- numpy and NTU .npz ----------------------------------------------------------------------------

def numpy_arrays() -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 25, 1)).astype(np.float32)
    return dict(x=x, y=np.array([0, 1, 2, 1]), names=np.array([f"S001C001P00{k}R001A001" for k in range(4)]),
                class_names=np.array(["a", "b", "c"]), layout=np.array("ntu25"), lengths=np.array([5, 3, 1, 0]),
                subjects=np.arange(4), split_train=np.array([0, 2, 3]), split_test=np.array([1]),
                class_meta=np.array(json.dumps([{"name": c} for c in "abc"])))


def ntu_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for split, n in (("train", 3), ("test", 2)):
        out[f"x_{split}"] = rng.normal(size=(n, 6, 150)).astype(np.float32)
        out[f"y_{split}"] = np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)]
    return out


#: reader: (valid arrays, file name, dataset, splits read)
NPZ_READERS = {"numpy": (numpy_arrays, "d.npz", "numpy", ("all", "train")),
               "ntu-npz": (ntu_arrays, "NTU60_CS.npz", "ntu60-xsub", ("train", "test"))}


@pytest.mark.parametrize("reader", sorted(NPZ_READERS))
@FUZZ
@given(array_edits=ARRAY_EDITS, byte_edits=st.one_of(st.none(), BYTE_EDITS), compressed=st.booleans())
def test_fuzz_npz(tmp_path, reader, array_edits, byte_edits, compressed):
    arrays, name, dataset, splits = NPZ_READERS[reader]
    save_npz(tmp_path / name, edit_arrays(arrays(), array_edits), compressed, byte_edits)
    for split in splits:
        read_all(lambda: open_source(dataset, tmp_path / name, split))


# -- pyskl pickle ------------------------------------------------------------------------------

def pyskl_data() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    anns = [{"frame_dir": f"S001C001P00{k}R001A001", "label": k % 2, "total_frames": 3 + k,
             "keypoint": rng.normal(size=(1, 3 + k, 17, 2)).astype(np.float32),
             "keypoint_score": rng.random((1, 3 + k, 17)).astype(np.float32)} for k in range(3)]
    return {"split": {"xsub_train": [a["frame_dir"] for a in anns[:2]], "xsub_val": [anns[2]["frame_dir"]]},
            "annotations": anns}


@FUZZ
@given(tree_edits=TREE_EDITS, byte_edits=st.one_of(st.none(), BYTE_EDITS))
def test_fuzz_pyskl_pickle(tmp_path, tree_edits, byte_edits):
    data = pickle.dumps(edit_tree(pyskl_data(), tree_edits), protocol=4)
    p = tmp_path / "a.pkl"
    p.write_bytes(edit_bytes(data, byte_edits) if byte_edits else data)
    for split in ("xsub_train", "xsub_val"):
        read_all(lambda: open_source("pyskl", p, split))


# -- NW-UCLA json ------------------------------------------------------------------------------

def ucla_json() -> dict[str, Any]:
    sk = np.random.default_rng(3).normal(size=(3, 20, 3)).round(3).tolist()
    return {"file_name": "a01_s01_e00_v01", "skeletons": sk, "label": 1}


@FUZZ
@given(tree_edits=TREE_EDITS, byte_edits=st.one_of(st.none(), BYTE_EDITS), deep=st.booleans())
def test_fuzz_ucla_json(tmp_path, tree_edits, byte_edits, deep):
    obj = edit_tree(ucla_json(), [(op, r, v.tolist() if isinstance(v, np.ndarray) else v) for op, r, v in tree_edits])
    text = json.dumps(obj, allow_nan=True, default=repr)
    if deep:  # nested far beyond what the parser recurses into
        text = "[" * 10**5 + text + "]" * 10**5
    data = edit_bytes(text.encode(), byte_edits) if byte_edits else text.encode()
    folder = tmp_path / "all_sqe"
    folder.mkdir(exist_ok=True)
    (folder / "a01_s01_e00_v01.json").write_bytes(data)
    read_all(lambda: open_source("ucla", tmp_path, "train"))
    read_all(lambda: open_source("ucla", folder / "a01_s01_e00_v01.json", "all"))
    try:
        x = read_ucla_json(folder / "a01_s01_e00_v01.json")
    except StdclError as e:
        check_error(e)
    else:
        assert x.dtype == np.float32 and x.shape[0] == 3 and x.shape[2:] == (20, 1) and np.isfinite(x).all()


# -- NTU raw .skeleton -------------------------------------------------------------------------

def skeleton_text(frames: int = 4) -> str:
    rng = np.random.default_rng(4)
    lines = [str(frames)]
    for f in range(frames):
        lines += ["1", "72057594037931101 0 1 1 1 1 0 0.02 0.05 2", "25"]
        for j in range(25):
            x, y, z = rng.normal(size=3) * 0.3 + (0, 0, 3)
            lines.append(f"{x:.7f} {y:.7f} {z:.7f} 200.1 180.2 900.5 500.7 0.1 0.2 0.3 0.9 2")
    return "\r\n".join(lines) + "\r\n"


#: line edits: drop or duplicate a line, or replace it with an odd one
LINE_EDITS = st.lists(st.tuples(st.sampled_from(["drop", "dup", "replace"]), st.integers(0, 200),
                                st.sampled_from(["", "0", "-1", "25", "1e999", "nan", "x y z", "9" * 30,
                                                 "2 2 2 2 2 2 2 2 2 2 2 2"])), max_size=3)


@FUZZ
@given(byte_edits=BYTE_EDITS, line_edits=LINE_EDITS)
def test_fuzz_ntu_skeleton(tmp_path, byte_edits, line_edits):
    lines = skeleton_text().split("\r\n")
    for op, k, value in line_edits:
        k %= len(lines)
        lines[k:k + 1] = [] if op == "drop" else [lines[k]] * 2 if op == "dup" else [value]
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_bytes(edit_bytes("\r\n".join(lines).encode(), byte_edits))
    try:
        sk = parse_skeleton(p)
        x = skeleton_to_array(sk)
    except StdclError as e:
        check_error(e)
        return
    assert np.isfinite(sk.joints).all() and sk.joints.shape == (sk.num_records, 25, 3)
    assert x.dtype == np.float32 and x.shape[0] == 3 and x.shape[2:] == (25, 2) and np.isfinite(x).all()


# -- UEA .ts -----------------------------------------------------------------------------------

TS_HEADER = {"problemName": "FZ", "timeStamps": "false", "missing": "false", "univariate": "false",
             "dimensions": "24", "equalLength": "true", "seriesLength": "3", "classLabel": "true 1.0 2.0"}


def ts_text(header: dict[str, str], cases: int = 2) -> str:
    head = "".join(f"@{k} {v}\n" for k, v in header.items()) + "@data\n"
    rng = np.random.default_rng(5)
    rows = [":".join(",".join(f"{v:.3f}" for v in rng.normal(size=3)) for _ in range(24)) + f":{1.0 + c % 2:.1f}"
            for c in range(cases)]
    return "#1: walk\n#2: run\n" + head + "\n".join(rows) + "\n"


@FUZZ
@given(header_edits=st.lists(st.tuples(st.sampled_from(sorted(TS_HEADER)), st.sampled_from(
           [None, "", "0", "-3", "1", "99999999999999", "true", "false", "true 1.0", "true 1.0 1.0", "abc"])),
           max_size=3), byte_edits=st.one_of(st.none(), BYTE_EDITS), which=st.sampled_from(["TRAIN", "TEST"]))
def test_fuzz_uea_ts(tmp_path, header_edits, byte_edits, which):
    header = dict(TS_HEADER)
    for key, value in header_edits:
        if value is None:
            header.pop(key, None)
        else:
            header[key] = value
    for tag in ("TRAIN", "TEST"):
        text = ts_text(header if tag == which else TS_HEADER).encode()
        (tmp_path / f"FZ_{tag}.ts").write_bytes(edit_bytes(text, byte_edits) if byte_edits and tag == which else text)
    for split in ("train", "test", "all"):
        read_all(lambda: open_source("natops", tmp_path, split, problem="FZ"))


def test_the_unmutated_files_are_valid(tmp_path):
    """The fuzzers start from valid files: each opens and reads without error."""
    for reader, (arrays, name, dataset, splits) in NPZ_READERS.items():
        for compressed in (False, True):
            save_npz(tmp_path / name, arrays(), compressed, None)
            assert all(len(open_source(dataset, tmp_path / name, s)) for s in splits)
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(pyskl_data()))
    assert open_source("pyskl", tmp_path / "a.pkl", "xsub_train").read(1).shape == (3, 4, 17, 1)
    (tmp_path / "a01_s01_e00_v01.json").write_text(json.dumps(ucla_json()))
    assert read_ucla_json(tmp_path / "a01_s01_e00_v01.json").shape == (3, 3, 20, 1)
    (tmp_path / "S001C001P001R001A001.skeleton").write_text(skeleton_text())
    assert skeleton_to_array(tmp_path / "S001C001P001R001A001.skeleton").shape == (3, 4, 25, 2)
    for tag in ("TRAIN", "TEST"):
        (tmp_path / f"FZ_{tag}.ts").write_text(ts_text(TS_HEADER))
    assert open_source("natops", tmp_path, "all", problem="FZ").read(3).shape == (3, 3, 8, 1)
