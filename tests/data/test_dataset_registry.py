"""The dataset registry: one description per dataset gives its protocol, class names and the
format sniffing ``stdcl data inspect`` uses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stdcl.data.classes import UCLA_CLASSES, ntu_classes
from stdcl.data.inspect import inspect_path
from stdcl.data.registry import DATASETS, dataset_class_names, protocols, sniff_splits
from stdcl.data.uea_ts import NATOPS_CLASSES
from stdcl.errors import DataError
from stdcl.train.config import PROTOCOLS, load_config
from tests.support.data_files import make_ntu_npz, make_numpy, make_pyskl


def test_protocols_derive_from_the_datasets():
    assert PROTOCOLS == (*protocols(), "custom")
    assert set(protocols()) == {"ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset", "ucla", "natops",
                                "synthetic"}
    for name, spec in DATASETS.items():
        if spec.protocol:  # the protocol's packaged config reads this dataset
            assert load_config(spec.protocol)["data"]["dataset"] == name


def test_class_names_come_from_the_dataset():
    assert dataset_class_names("ntu60-xsub", 60) == ntu_classes(60)
    assert dataset_class_names("ntu120-xset", 120)[-1] == ntu_classes(120)[-1]
    assert dataset_class_names("ucla", 10) == list(UCLA_CLASSES)
    assert dataset_class_names("natops", 6) == list(NATOPS_CLASSES)
    assert dataset_class_names("ucla", 12) is None and dataset_class_names("ntu60-xsub", 121) is None
    assert dataset_class_names("numpy", 4) is None and dataset_class_names("nonesuch", 4) is None
    assert dataset_class_names(None, 60) is None


def test_sniffing_names_the_dataset_and_its_splits(tmp_path):
    make_ntu_npz(tmp_path / "ntu.npz")
    make_numpy(tmp_path / "plain.npz")
    make_pyskl(tmp_path / "ann.pkl")
    ucla = tmp_path / "ucla" / "all_sqe"
    ucla.mkdir(parents=True)
    (tmp_path / "one.json").write_text(json.dumps({"skeletons": []}))
    (tmp_path / "nat").mkdir()
    (tmp_path / "nat" / "NATOPS_TRAIN.ts").write_text("")
    assert sniff_splits(tmp_path / "ntu.npz") == ("ntu-npz", ["train", "test"])
    assert sniff_splits(tmp_path / "plain.npz") == ("numpy", ["train", "test"])
    assert sniff_splits(tmp_path / "ann.pkl")[0] == "pyskl"
    assert sniff_splits(tmp_path / "ucla") == ("ucla", ["train", "test"])
    assert sniff_splits(tmp_path / "one.json") == ("ucla", ["all"])
    assert sniff_splits(tmp_path / "nat") == ("natops", ["train", "test"])
    assert sniff_splits(tmp_path / "nat" / "NATOPS_TRAIN.ts") == ("natops", ["train", "test"])
    assert sniff_splits(tmp_path) is None  # a folder of several things is none of them


def test_inspect_reads_what_the_sniffing_found(tmp_path):
    make_ntu_npz(tmp_path / "ntu.npz", n_train=6, n_test=4)
    rep = inspect_path(tmp_path / "ntu.npz")
    assert [(s.name, s.samples) for s in rep.splits] == [("train", 6), ("test", 4)]
    arrays = make_numpy(tmp_path / "plain.npz")
    rep = inspect_path(tmp_path / "plain.npz")
    assert [(s.name, s.samples) for s in rep.splits] == [("train", 6), ("test", 2)]
    assert rep.class_names == [str(c) for c in arrays["class_names"]]
    one = tmp_path / "wrapped"
    one.mkdir()
    make_ntu_npz(one / "only.npz", n_train=3, n_test=2)
    assert [s.samples for s in inspect_path(one).splits] == [3, 2]  # a folder with one .npz is that file
    np.save(tmp_path / "bare.npy", np.zeros((2, 3, 4, 25, 1), np.float32))
    with pytest.raises(DataError, match="bare.npy: a bare .npy needs labels"):
        inspect_path(tmp_path / "bare.npy")
    with pytest.raises(DataError, match="not a recognised dataset folder"):
        inspect_path(tmp_path)
