"""open_dataset: per-dataset defaults, transforms, modalities, repeat and seeded randomness."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stdcl.data import open_dataset, worker_init_fn
from stdcl.data.modalities import apply_modality
from stdcl.data.transforms import NtuTransform
from tests.support.data_files import make_ntu_npz


@pytest.fixture
def ntu_dir(tmp_path):
    make_ntu_npz(tmp_path / "NTU60_CS.npz", n_train=8, n_test=4)
    return tmp_path


def test_ntu_defaults_train_and_test(ntu_dir):
    train = open_dataset("ntu60-xsub", ntu_dir, "train")
    test = open_dataset("ntu60-xsub", ntu_dir, "test")
    assert len(train) == 8 and train.repeat == 1 and isinstance(train.transform, NtuTransform)
    x, label, index = train[3]
    assert x.shape == (3, 64, 25, 2) and x.dtype == np.float32 and index == 3
    assert label == int(train.labels[3])
    # the test transform is deterministic and equals the central-0.95 crop of the raw sample
    a, b = test[1][0], test[1][0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, NtuTransform(train=False)(test.raw(1), np.random.default_rng(0)))


def test_train_randomness_is_seeded(ntu_dir):
    a = open_dataset("ntu60-xsub", ntu_dir, "train", seed=5)
    b = open_dataset("ntu60-xsub", ntu_dir, "train", seed=5)
    c = open_dataset("ntu60-xsub", ntu_dir, "train", seed=6)
    xa, xb, xc = a[2][0], b[2][0], c[2][0]
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, xc)


def test_modality_applied_after_transform(ntu_dir):
    joint = open_dataset("ntu60-xsub", ntu_dir, "test")
    bm = open_dataset("ntu60-xsub", ntu_dir, "test", modality="bone_motion")
    np.testing.assert_allclose(bm[0][0], apply_modality(joint[0][0], "bone_motion", joint.layout))


def test_raw_sequences_without_transform(ntu_dir):
    ds = open_dataset("ntu60-xsub", ntu_dir, "train", transform=None)
    assert ds[0][0].shape == (3, 300, 25, 2)


def test_ucla_defaults(shared_data):
    train = open_dataset("ucla", shared_data / "nw_ucla_ctrgcn", "train")
    assert len(train) == 5100 and train.num_samples == 1020 and train.num_classes == 10
    assert train.index_labels.shape == (5100,)
    x, label, index = train[1020 + 7]
    assert x.shape == (3, 52, 20, 1) and index == 1027 and train.sample_of(index) == 7
    assert label == int(train.labels[7]) == int(train.index_labels[1027])
    test = open_dataset("ucla", shared_data / "nw_ucla_ctrgcn", "test")
    assert len(test) == 464 and test[0][0].shape == (3, 52, 20, 1)
    assert float(np.abs(test[0][0]).max()) <= 1.0 + 1e-6  # min-max normalised


def test_dataloader_workers_are_reseeded(ntu_dir):
    ds = open_dataset("ntu60-xsub", ntu_dir, "train")
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn, generator=g)
    batches = [b for b in loader]
    g2 = torch.Generator().manual_seed(0)
    again = [b for b in DataLoader(ds, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn, generator=g2)]
    for (x1, y1, i1), (x2, y2, i2) in zip(batches, again):
        torch.testing.assert_close(x1, x2)
        assert i1.tolist() == i2.tolist()
    # workers draw from their own reseeded streams, not a copy of the parent's seed-0 stream
    parent = open_dataset("ntu60-xsub", ntu_dir, "train")[0][0]
    assert not np.array_equal(batches[0][0][0].numpy(), parent)


def test_source_seed_does_not_clash_with_transform_seed():
    a = open_dataset("synthetic", split="test", seed=1, source_options={"num_samples": 300, "seed": 4})
    b = open_dataset("synthetic", split="test", seed=1, source_options={"num_samples": 300, "seed": 5})
    assert len(a) == len(b) and not np.array_equal(a.raw(0), b.raw(0))
