"""NW-UCLA json reader: real-data protocol checks (skipped without shared/data) and bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from stdcl.data.base import SkeletonDataset
from stdcl.data.layouts import UCLA20
from stdcl.data.transforms import build_transform
from stdcl.data.ucla import CLASS_NAMES, UclaSource, read_ucla_json, reference_order
from stdcl.data.safe_pickle import load_data_pickle
from stdcl.errors import ConfigError, DataError
from tests.support.data_files import ucla_json_obj, write_ucla_json
from tests.support.paths import SHARED_DATA

DATA = SHARED_DATA / "nw_ucla_ctrgcn"
needs_data = pytest.mark.skipif(
    not (DATA / "all_sqe").is_dir(),
    reason=f"real NW-UCLA data not found at {DATA} (shared/data is not part of the project)")


def load_val_label() -> list[dict]:
    return load_data_pickle(DATA / "val_label.pkl")


@pytest.fixture(scope="module")
def train_source() -> UclaSource:
    return UclaSource(DATA, "train")


@pytest.fixture(scope="module")
def test_source() -> UclaSource:
    return UclaSource(DATA / "all_sqe", "test")


# -- shipped order lists -----------------------------------------------------------------


def test_reference_orders_are_the_cross_view_split() -> None:
    train, test = reference_order("train"), reference_order("test")
    assert len(train) == len(set(train)) == 1020 and len(test) == len(set(test)) == 464
    assert all(n.endswith(("_v01", "_v02")) for n in train) and all(n.endswith("_v03") for n in test)
    assert test[:2] == ["a05_s04_e02_v03", "a12_s09_e04_v03"]


# -- real data ---------------------------------------------------------------------------


@needs_data
def test_split_sizes_and_metadata(train_source: UclaSource, test_source: UclaSource) -> None:
    assert len(train_source) == 1020 and len(test_source) == 464
    assert not set(train_source.names) & set(test_source.names)
    assert train_source.names == reference_order("train")
    assert set(train_source.views) == {1, 2} and set(test_source.views) == {3}
    assert train_source.layout is UCLA20 and train_source.class_names == CLASS_NAMES
    assert sorted(set(train_source.subjects)) == list(range(1, 11))
    assert train_source.subjects[0] == int(train_source.names[0].split("_")[1][1:])
    assert np.bincount(train_source.labels).size == 10
    train_source.check_labels()


@needs_data
def test_test_order_and_labels_equal_val_label_pkl(test_source: UclaSource) -> None:
    ref = load_val_label()
    assert [d["file_name"] for d in ref] == test_source.names == reference_order("test")
    assert [d["label"] - 1 for d in ref] == test_source.labels.tolist()
    # reading every test file checks each json label against the file name and the lengths
    lengths = [test_source.read(i).shape[1] for i in range(len(test_source))]
    assert lengths == [d["length"] for d in ref]


@needs_data
def test_read_shape_and_one_frame_sequence(test_source: UclaSource) -> None:
    x = test_source.read(0)
    assert x.dtype == np.float32 and x.shape[0] == 3 and x.shape[2:] == (20, 1)
    i = test_source.names.index("a02_s09_e04_v03")
    one = test_source.read(i)
    assert one.shape == (3, 1, 20, 1)
    np.testing.assert_array_equal(one, read_ucla_json(DATA / "all_sqe" / "a02_s09_e04_v03.json"))
    for train in (False, True):
        y = build_transform("ucla", train)(one, np.random.default_rng(0))
        assert y.shape == (3, 52, 20, 1) and y.dtype == np.float32 and np.isfinite(y).all()
    x[:] = 0  # read returns a copy: the cache is not affected
    assert test_source.read(0).any()


@needs_data
def test_train_dataset_repeat_5(train_source: UclaSource) -> None:
    ds = SkeletonDataset(train_source, build_transform("ucla", True), repeat=5, seed=0)
    assert len(ds) == 5100 and ds.num_samples == 1020
    assert ds.sample_of(0) == 0 and ds.sample_of(1020) == 0 and ds.sample_of(5099) == 1019
    np.testing.assert_array_equal(ds.sample_of(np.arange(5100)), np.tile(np.arange(1020), 5))
    assert len(ds.index_labels) == 5100 and ds.index_labels[3 * 1020 + 7] == train_source.labels[7]
    x, label, index = ds[1020 + 5]
    assert x.shape == (3, 52, 20, 1) and label == train_source.labels[5] and index == 1025
    np.testing.assert_array_equal(ds.raw(1025), ds.raw(5))
    with pytest.raises(IndexError):
        ds[5100]


@needs_data
def test_float64_source_and_all_split() -> None:
    src = UclaSource(DATA, "all", dtype="float64")
    assert len(src) == 1484 and src.read(0).dtype == np.float64
    assert src.names[:1020] == reference_order("train") and src.names[1020:] == reference_order("test")


# -- bad input ---------------------------------------------------------------------------


def _message(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_read_ucla_json_roundtrip(tmp_path: Path) -> None:
    obj = ucla_json_obj(5)
    x = read_ucla_json(write_ucla_json(tmp_path, "a01_s01_e00_v01", obj))
    assert x.shape == (3, 5, 20, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :, :, 0], np.asarray(obj["skeletons"], np.float32).transpose(2, 0, 1))


@pytest.mark.parametrize("content, problem", [
    ({"file_name": "x", "label": 1}, "no 'skeletons' key (expected an object with file_name, skeletons, label)"),
    ([1, 2], "no 'skeletons' key (expected an object with file_name, skeletons, label)"),
    ({"skeletons": np.zeros((3, 19, 3)).tolist()},
     "key 'skeletons': 'skeletons' has 19 joints x 3 coordinates per frame, expected 20 x 3"),
    ({"skeletons": [[["a", "b", "c"]] * 20]}, "key 'skeletons': 'skeletons' holds non-numeric values"),
    ({"skeletons": [[[None, 1, 2]] * 20]}, "key 'skeletons': 'skeletons' holds non-numeric values"),
    ({"skeletons": [[[0, 1, 2]] * 20, [[0, 1, 2]] * 19]},
     "key 'skeletons': 'skeletons' is not a regular T x 20 x 3 nested list"),
    ({"skeletons": []}, "key 'skeletons': 'skeletons' has no frames"),
    ({"skeletons": [[1.0, 2.0, 3.0]]}, "key 'skeletons': 'skeletons' has shape (1, 3), expected (T, 20, 3)"),
    ('{"skeletons": [[' + ", ".join(["[NaN, 0, 0]"] + ["[0, 0, 0]"] * 19) + "]]}",
     "key 'skeletons': non-finite coordinate at frame 0, joint 0 (1 such values)"),
    ('{"skeletons": [[[0, 0, 0]', "line 1: not valid JSON (Expecting ',' delimiter)"),
    ({"skeletons": np.zeros((2, 20, 3)).tolist(), "label": "3"}, "'label' must be an integer 1..10, got '3'"),
])
def test_bad_json_files(tmp_path: Path, content, problem: str) -> None:
    p = write_ucla_json(tmp_path, "a01_s01_e00_v01", content)
    with pytest.raises(DataError) as exc:
        read_ucla_json(p)
    assert _message(exc) == f"{p}: {problem}"


def test_bad_folders_and_names(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        UclaSource(tmp_path / "missing")
    assert _message(exc) == f"{tmp_path / 'missing'}: no such file or directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        UclaSource(empty)
    assert _message(exc) == f"{empty}: no NW-UCLA json files (aXX_sYY_eZZ_vWW.json) in this folder"

    bad = tmp_path / "badname"
    write_ucla_json(bad, "a01_s01_e00_v01", ucla_json_obj())
    p = write_ucla_json(bad, "a1_s01_e00_v01", ucla_json_obj())
    with pytest.raises(DataError) as exc:
        UclaSource(bad)
    assert _message(exc) == f"{p}: file name does not match aXX_sYY_eZZ_vWW(.json)"

    code = tmp_path / "code"
    p = write_ucla_json(code, "a07_s01_e00_v01", ucla_json_obj())
    with pytest.raises(DataError) as exc:
        UclaSource(code)
    assert _message(exc).startswith(f"{p}: unknown action code a07 (NW-UCLA has a01, a02")

    only_test = tmp_path / "v3"
    write_ucla_json(only_test, "a01_s01_e00_v03", ucla_json_obj())
    with pytest.raises(DataError) as exc:
        UclaSource(only_test, "train")
    assert _message(exc) == f"{only_test}: no json files of view(s) 1, 2 for split 'train'"
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        UclaSource(only_test, "val")


def test_small_folder_order_labels_and_label_check(tmp_path: Path) -> None:
    root = tmp_path / "ucla"
    folder = root / "all_sqe"
    write_ucla_json(folder, "a12_s03_e00_v01", ucla_json_obj(3, 10))
    write_ucla_json(folder, "a05_s04_e02_v01", ucla_json_obj(2, 5))  # first in the reference train order
    write_ucla_json(folder, "a01_s99_e00_v02", ucla_json_obj(2, 1))  # not in the reference list: sorted, at the end
    write_ucla_json(folder, "a01_s01_e00_v03", ucla_json_obj(2, 1))
    p = write_ucla_json(folder, "a02_s01_e00_v01", ucla_json_obj(2, 7))  # json label disagrees with a02
    src = UclaSource(root, "train", cache_size=0)
    assert src.names[0] == "a05_s04_e02_v01" and src.names[-1] == "a01_s99_e00_v02"
    assert src.labels.tolist()[0] == 4 and src.subjects.tolist()[-1] == 99
    i = src.names.index("a02_s01_e00_v01")
    with pytest.raises(DataError) as exc:
        src.read(i)
    assert _message(exc) == f"{p}: 'label' 7 disagrees with the file name's action code (expected 2)"
    assert src.read(src.names.index("a12_s03_e00_v01")).shape == (3, 3, 20, 1)
    test = UclaSource(folder, "test")
    assert test.names == ["a01_s01_e00_v03"]
    clone = pickle.loads(pickle.dumps(UclaSource(folder, "test")))
    assert clone.read(0).shape == (3, 2, 20, 1)
