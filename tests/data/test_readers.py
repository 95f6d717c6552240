"""NTU .npz (memory-mapped), pyskl pickle and plain-numpy readers, and their bad inputs."""

import json
import pickle
import tracemalloc

import numpy as np
import pytest

from stdcl.data import open_dataset, open_source
from stdcl.data.npz_members import open_member
from stdcl.errors import ConfigError, DataError
from tests.support.data_files import make_ntu_npz, make_numpy, make_pyskl


def test_ntu_npz_is_memory_mapped_and_matches_reference_reshape(tmp_path):
    arrays = make_ntu_npz(tmp_path / "NTU60_CS.npz")
    m = open_member(tmp_path / "NTU60_CS.npz", "x_train")
    assert isinstance(m, np.memmap)
    src = open_source("ntu60-xsub", tmp_path, "train")
    assert len(src) == 6 and src.names[0] == "train_0" and src.subjects is None
    assert src.class_names[0] == "drink water" and len(src.class_names) == 60
    for i in range(6):
        # CTR-GCN feeder: reshape (N, T, 2, 25, 3) then transpose (0, 4, 1, 3, 2)
        ref = arrays["x_train"][i].reshape(300, 2, 25, 3).transpose(3, 0, 2, 1)
        np.testing.assert_array_equal(src.read(i), ref)
        assert src.labels[i] == arrays["y_train"][i].argmax()


def test_ntu_npz_reading_a_sample_does_not_load_the_split(tmp_path):
    make_ntu_npz(tmp_path / "big.npz", n_train=400, n_test=1)  # 72 MB x_train
    tracemalloc.start()
    src = open_source("ntu-npz", tmp_path / "big.npz", "train")
    x = src.read(399)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert x.shape == (3, 300, 25, 2)
    assert peak < 8 << 20, f"peak {peak / 1e6:.1f} MB while reading one sample"


def test_ntu_npz_compressed_is_converted_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    arrays = make_ntu_npz(data / "c.npz", compressed=True)
    data.chmod(0o555)  # a read-only data folder (root may still write: hence the listing below)
    try:
        src = open_source("ntu-npz", data / "c.npz", "test")
        assert sorted(p.name for p in data.iterdir()) == ["c.npz"]  # nothing written beside the data
        converted = sorted((tmp_path / "cache" / "npz").glob("c.x_test.*.npy"))
        assert len(converted) == 1
        np.testing.assert_array_equal(src.read(3), arrays["x_test"][3].reshape(300, 2, 25, 3).transpose(3, 0, 2, 1))
        assert "cannot be memory-mapped" in caplog.text
        caplog.clear()
        open_source("ntu-npz", data / "c.npz", "test")
        assert "cannot be memory-mapped" not in caplog.text  # converted once
    finally:
        data.chmod(0o755)
    arrays = make_ntu_npz(data / "c.npz", compressed=True, seed=1, n_test=5)  # a changed source is converted again
    src = open_source("ntu-npz", data / "c.npz", "test")
    copies = sorted((tmp_path / "cache" / "npz").glob("c.x_test.*.npy"))
    assert len(src) == 5 and len(copies) == 1 and copies != converted  # the older version's copy is removed
    np.testing.assert_array_equal(src.read(4), arrays["x_test"][4].reshape(300, 2, 25, 3).transpose(3, 0, 2, 1))


def test_ntu_npz_names_sidecar_gives_subjects(tmp_path):
    make_ntu_npz(tmp_path / "NTU60_CS.npz", n_train=2, n_test=1)
    names = {"train": ["S001C001P001R001A001", "S001C002P008R001A002"], "test": ["S001C001P003R001A003"]}
    (tmp_path / "NTU60_CS.names.json").write_text(json.dumps(names))
    src = open_source("ntu60-xsub", tmp_path, "train")
    assert src.names == names["train"]
    assert src.subjects.tolist() == [1, 8]


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.pop("y_train"), "missing array 'y_train'"),
    (lambda a: a.update(x_train=np.zeros((3, 300, 10), np.float32)), "expected shape (N, T, 150)"),
    (lambda a: a.update(y_train=np.zeros((6, 60), np.float32)), "is not one-hot"),
    (lambda a: a.update(y_train=np.eye(60, dtype=np.float32)[:5]), "x_train has 6 samples but y_train has 5"),
])
def test_ntu_npz_bad_keys_and_shapes(tmp_path, mutate, message):
    arrays = make_ntu_npz(tmp_path / "ok.npz")
    mutate(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as e:
        open_source("ntu-npz", tmp_path / "bad.npz", "train")
    assert message in str(e.value) and "bad.npz" in str(e.value) and "\n" not in str(e.value)


def test_ntu_npz_not_a_zip(tmp_path):
    (tmp_path / "NTU60_CS.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="NTU60_CS.npz: not a readable .npz archive"):
        open_source("ntu60-xsub", tmp_path, "train")


def test_missing_prepared_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="stdcl data prepare"):
        open_dataset("ntu60-xview", tmp_path, "train")


def test_pyskl_split_order_and_layout(tmp_path):
    data = make_pyskl(tmp_path / "a.pkl")
    src = open_source("pyskl", tmp_path / "a.pkl", "xsub_train")
    assert src.names == [a["frame_dir"] for a in data["annotations"][:4]]
    assert src.labels.tolist() == [0, 1, 2, 0]
    assert src.layout.name == "ntu25" and src.subjects.tolist() == [1, 2, 3, 1]
    kp = data["annotations"][2]["keypoint"]
    np.testing.assert_array_equal(src.read(2), kp.astype(np.float32).transpose(3, 1, 2, 0))
    val = open_dataset("pyskl", tmp_path / "a.pkl", "xsub_val", transform=None)
    assert len(val) == 1 and val[0][0].shape == (3, 15, 25, 2)


def test_pyskl_2d_scores_become_third_channel(tmp_path):
    data = make_pyskl(tmp_path / "b.pkl", two_d=True)
    src = open_source("pyskl", tmp_path / "b.pkl", "xsub_train")
    x = src.read(0)
    assert src.layout.name == "coco17" and x.shape == (3, 10, 17, 2)
    np.testing.assert_array_equal(x[2], data["annotations"][0]["keypoint_score"].astype(np.float32).transpose(1, 2, 0))


@pytest.mark.parametrize("payload, message", [
    ({"annotations": []}, "'split' and 'annotations'"),
    ({"split": {"a": []}, "annotations": [{"frame_dir": "x", "label": 0, "keypoint": np.zeros((1, 2, 25, 3))}]},
     "no split 'xsub_train' (has: 'a')"),
])
def test_pyskl_bad(tmp_path, payload, message):
    p = tmp_path / "bad.pkl"
    with open(p, "wb") as fh:
        pickle.dump(payload, fh)
    with pytest.raises(DataError) as e:
        open_source("pyskl", p, "xsub_train")
    assert message in str(e.value) and "bad.pkl" in str(e.value)


def test_pyskl_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pkl"
    with open(p, "wb") as fh:
        pickle.dump({"split": {}, "annotations": [Evil()]}, fh)
    with pytest.raises(DataError, match="refusing to load global builtins.print"):
        open_source("pyskl", p, "xsub_train")


def test_pyskl_label_out_of_range(tmp_path):
    make_pyskl(tmp_path / "a.pkl")
    with pytest.raises(DataError, match=r"a.pkl: label 2 of sample 2 is out of range 0..1"):
        open_source("pyskl", tmp_path / "a.pkl", "xsub_train", class_names=["a", "b"])


def test_numpy_format_splits_lengths_and_meta(tmp_path):
    arrays = make_numpy(tmp_path / "d.npz")
    src = open_source("numpy", tmp_path / "d.npz", "train")
    assert len(src) == 6 and src.class_names == ["a", "b", "c", "d"] and src.class_meta[1] == {"name": "b"}
    assert src.subjects.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(src.read(1), arrays["x"][1][:, :30])
    assert src.read(5).shape == (3, 1, 25, 2)
    test = open_source("numpy", tmp_path, "test")  # a folder holding one .npz
    assert test.names == ["S001C001P006R001A001", "S001C001P007R001A001"]


def test_numpy_ntvc_and_bare_npy(tmp_path):
    x = np.random.default_rng(1).normal(size=(5, 12, 20, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.txt", np.array([0, 1, 2, 1, 0]), fmt="%d")
    src = open_source("numpy", tmp_path / "x.npy", labels=tmp_path / "y.txt")
    assert src.layout.name == "ucla20" and src.class_names == ["class_000", "class_001", "class_002"]
    np.testing.assert_array_equal(src.read(3), x[3].transpose(2, 0, 1)[..., None])


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 3, 4, 25, 1), np.float32)}, "needs arrays 'x' and 'y'"),
    ({"x": np.zeros((2, 3, 4), np.float32), "y": np.zeros(2, int)}, "x must be (N, C, T, V, M)"),
    ({"x": np.zeros((2, 3, 4, 25, 1), np.float32), "y": np.array([0, -1])}, "label -1 of sample 1 is out of range"),
    ({"x": np.zeros((2, 3, 4, 25, 1), np.float32), "y": np.array([0, 1, 1])}, "labels have shape (3,)"),
    ({"x": np.zeros((2, 3, 4, 13, 1), np.float32), "y": np.array([0, 1])}, "V=13 joints matches no shipped layout"),
])
def test_numpy_bad(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises((DataError, ConfigError)) as e:
        open_source("numpy", tmp_path / "bad.npz")
    assert message in str(e.value) and "bad.npz" in str(e.value)


def test_numpy_nan_sample_names_file_and_sample(tmp_path):
    x = np.zeros((2, 3, 4, 25, 1), np.float32)
    x[1, 0, 2, 3, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.array([0, 1]))
    src = open_source("numpy", tmp_path / "nan.npz")
    src.read(0)
    with pytest.raises(DataError, match=r"nan.npz: key 'x': sample 'sample_1' \(row 1\) has NaN"):
        src.read(1)


def test_unknown_dataset_and_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'kinetics'"):
        open_dataset("kinetics", tmp_path)
    with pytest.raises(DataError, match="no such file or directory"):
        open_dataset("ucla", tmp_path / "nowhere")
