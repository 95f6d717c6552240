"""The synthetic teaching set: determinism, format, split, body plausibility and the twin properties."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from stdcl.data.base import names_to_subjects
from stdcl.data.layouts import NTU25
from stdcl.data.synth.body import SWAP
from stdcl.data.synthetic import (CLASSES, DEFAULT_NUM_SAMPLES, NUM_CLASSES, SyntheticSource, class_meta,
                                  class_names, default_test_subjects, generate, render_class, write_synthetic)
from stdcl.errors import ConfigError

J = {n: i for i, n in enumerate(NTU25.joints)}
CLEAN = {"noise": 0.0, "drop_prob": 0.0}


def by_name(name: str) -> int:
    return class_names().index(name)


def valid(x: np.ndarray, length: int, m: int = 0) -> np.ndarray:
    """(T, V, 3) valid frames of one person of a (C, T, V, M) sample."""
    return x[:, :length, :, m].transpose(1, 2, 0).astype(np.float64)


def speed_profile(p: np.ndarray) -> np.ndarray:
    """Per-frame joint-averaged speed (T-1,) of (T, V, 3) positions."""
    return np.linalg.norm(np.diff(p, axis=0), axis=-1).mean(1)


def joint_energy(p: np.ndarray) -> np.ndarray:
    """Time-averaged speed per joint (V,)."""
    return np.linalg.norm(np.diff(p, axis=0), axis=-1).mean(0)


@pytest.fixture(scope="module")
def small() -> dict:
    return generate(390, seed=3)


# --------------------------------------------------------------------------------------------
# format, determinism, metadata
# --------------------------------------------------------------------------------------------
def test_shapes_dtypes_and_names(small):
    d = small
    n = 390
    x = d["x"]
    assert x.dtype == np.float32 and x.ndim == 5 and x.shape[0] == n and x.shape[1] == 3
    assert x.shape[3] == 25 and x.shape[4] == 2 and x.shape[2] == d["lengths"].max()
    for key in ("y", "lengths", "subjects", "split_train", "split_test"):
        assert d[key].dtype == np.int64, key
    assert d["y"].shape == (n,) and set(d["y"].tolist()) == set(range(NUM_CLASSES))
    assert 40 <= d["lengths"].min() and d["lengths"].max() <= 100 and len(set(d["lengths"].tolist())) > 20
    assert str(d["layout"]) == "ntu25"
    assert list(d["class_names"]) == class_names() and len(class_names()) == NUM_CLASSES >= 10
    assert json.loads(str(d["class_meta"])) == class_meta()
    names = [str(s) for s in d["names"]]
    assert len(set(names)) == n
    assert all(re.fullmatch(r"SYN_P\d{3}_A\d{3}_R\d{3}", s) for s in names)
    assert np.array_equal(names_to_subjects(names), d["subjects"])
    assert all(int(s[10:13]) == y + 1 for s, y in zip(names, d["y"].tolist()))
    # zero after each sample's length, non-zero inside it
    t = np.arange(x.shape[2])
    after = t[None, :] >= d["lengths"][:, None]
    assert not np.abs(x).sum((1, 3, 4))[after].any()
    first = np.abs(x[:, :, 0, :, 0]).sum((1, 2))
    assert (first > 0).all()


def test_deterministic_in_the_seed():
    a = generate(60, seed=5)
    b = generate(60, seed=5)
    c = generate(60, seed=6)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["x"][:, :, :40], c["x"][:, :, :40])


def test_twin_metadata_is_symmetric_and_complete():
    meta = class_meta()
    assert len(meta) == NUM_CLASSES
    pairs = {"spatial": 0, "temporal": 0}
    for k, m in enumerate(meta):
        assert set(m) >= {"name", "twin", "twin_type", "persons", "description"}
        assert m["name"] == class_names()[k] and m["description"]
        if m["twin"] is None:
            assert m["twin_type"] is None
            continue
        t = m["twin"]
        assert t != k and meta[t]["twin"] == k and meta[t]["twin_type"] == m["twin_type"]
        assert meta[t]["persons"] == m["persons"]
        pairs[m["twin_type"]] += 1
    assert pairs["spatial"] >= 6 and pairs["temporal"] >= 6  # >= 3 pairs each
    assert any(m["persons"] == 2 for m in meta)
    # spatial twins are mirror images, temporal ones the same motion re-timed
    for k, c in enumerate(CLASSES):
        if c.twin is not None and c.twin > k:
            other = CLASSES[c.twin]
            assert c.motion is other.motion
            if c.twin_type == "spatial":
                assert c.mirror != other.mirror and c.reverse == other.reverse and c.options == other.options
            else:
                assert c.mirror == other.mirror and (c.reverse != other.reverse or c.options != other.options)


def test_bad_options_raise():
    with pytest.raises(ConfigError):
        generate(0)
    with pytest.raises(ConfigError):
        generate(10, min_frames=50, max_frames=40)
    with pytest.raises(ConfigError):
        render_class(NUM_CLASSES)
    with pytest.raises(ConfigError):
        SyntheticSource(split="val", num_samples=26)


# --------------------------------------------------------------------------------------------
# split, source, file
# --------------------------------------------------------------------------------------------
def test_default_size_meets_the_released_loss_settings():
    assert 2600 <= DEFAULT_NUM_SAMPLES <= 3000
    train = SyntheticSource("train")
    test = SyntheticSource("test")
    assert len(train) + len(test) == DEFAULT_NUM_SAMPLES
    counts = np.bincount(train.labels, minlength=NUM_CLASSES)
    print(f"\ntrain {len(train)} / test {len(test)}; train samples per class {counts.tolist()}")
    assert counts.min() >= 128  # P = 128 same-class bank entries
    assert (len(train) - counts).min() >= 512  # K = 512 other-class entries
    assert np.bincount(test.labels, minlength=NUM_CLASSES).min() >= 40
    # cross-subject: disjoint subjects, the documented held-out ids
    assert not set(train.subjects.tolist()) & set(test.subjects.tolist())
    assert set(test.subjects.tolist()) == set(default_test_subjects())
    assert 0.25 < len(test) / DEFAULT_NUM_SAMPLES < 0.35


def test_source_reads_padded_samples():
    src = SyntheticSource("all", num_samples=130, seed=1)
    assert src.format == "synthetic" and src.layout is NTU25 and len(src) == 130
    assert src.class_names == class_names() and src.class_meta == class_meta()
    assert np.array_equal(names_to_subjects(src.names), src.subjects)
    ref = generate(130, seed=1)
    for i in (0, 12, 77):
        x = src.read(i)
        assert x.dtype == np.float32 and x.shape == (3, ref["x"].shape[2], 25, 2)
        assert np.array_equal(x, ref["x"][i])
        assert not x[:, src.lengths[i]:].any()
        x[:] = 1  # a copy: the cached arrays stay intact
    assert np.array_equal(src.read(0), ref["x"][0])
    tr, te = SyntheticSource("train", num_samples=130, seed=1), SyntheticSource("test", num_samples=130, seed=1)
    assert sorted(tr.names + te.names) == sorted(src.names)


def test_a_source_is_sized_without_rendering_its_motion(monkeypatch):
    """Names, labels, subjects, lengths and splits come from the set's plan; the motion is rendered at the first
    read (what lets the Fine-tune page count a 200,000-sample set in seconds and little memory)."""
    from stdcl.data import synthetic
    from stdcl.train.config import load_config
    from stdcl.train.estimate import data_sizes

    ref = generate(150, seed=4, max_yaw=10.0)
    synthetic._cached.cache_clear()
    rendered = []
    real = synthetic.synthesize
    monkeypatch.setattr(synthetic, "synthesize", lambda **kw: rendered.append(kw) or real(**kw))
    src = SyntheticSource("all", num_samples=150, seed=4, max_yaw=10.0)
    test = SyntheticSource("test", num_samples=150, seed=4, max_yaw=10.0)
    assert rendered == []
    assert src.names == ref["names"].tolist() and np.array_equal(src.labels, ref["y"])
    assert np.array_equal(src.lengths, ref["lengths"]) and np.array_equal(src.subjects, ref["subjects"])
    assert np.array_equal(np.flatnonzero(np.isin(src.names, test.names)), ref["split_test"])
    assert src.joints_persons() == (25, 2) and rendered == []
    assert np.array_equal(test.read(3), ref["x"][ref["split_test"][3]]) and len(rendered) == 1
    assert np.array_equal(src.read(5), ref["x"][5]) and len(rendered) == 1  # rendered once for every split
    rendered.clear()
    sizes = data_sizes(load_config("synthetic", overrides=["data.source={num_samples: 200000}"])["data"])
    assert rendered == []
    assert sizes["train_items"] + sizes["val"] + sizes["test"] == 200_000 and sizes["persons"] == 2
    with pytest.raises(ConfigError, match="unknown option"):
        SyntheticSource("all", num_samples=10, nosie=1.0)


def test_interaction_partner_is_another_subject_on_the_same_side_of_the_split():
    from stdcl.data.synth.generator import synthesize

    comp = synthesize(260, seed=8)
    shake = np.flatnonzero(comp.labels == by_name("shake hands"))
    assert shake.size == 20 and np.array_equal(np.flatnonzero(comp.second >= 0), shake)
    a, b = comp.subjects[shake], comp.partners[shake]
    assert (a != b).all() and (np.isin(a, comp.test_subjects) == np.isin(b, comp.test_subjects)).all()
    assert (np.delete(comp.partners, shake) == 0).all()


def test_open_source_by_dataset_name():
    from stdcl.data import open_source

    src = open_source("synthetic", split="test", num_samples=130, seed=2)
    assert isinstance(src, SyntheticSource) and src.split == "test"
    assert set(src.subjects.tolist()) <= set(default_test_subjects())


def test_write_synthetic_plain_numpy_roundtrip(tmp_path):
    from stdcl.data.numpy_source import NumpySource

    path = write_synthetic(tmp_path / "syn", num_samples=104, seed=4)
    assert path == tmp_path / "syn" / "synthetic.npz" and path.exists()
    readme = (tmp_path / "syn" / "README.txt").read_text()
    assert "wave left hand" in readme and "shake hands" in readme
    assert sorted(p.name for p in path.parent.iterdir()) == ["README.txt", "synthetic.npz"]  # no temp files
    with np.load(path) as f:
        keys = set(f.files)
        assert keys == {"x", "y", "names", "class_names", "layout", "lengths", "subjects", "split_train",
                        "split_test", "class_meta"}
        ref = generate(104, seed=4)
        for k in keys:
            assert np.array_equal(f[k], ref[k]), k
    src = NumpySource(path, "train")
    assert src.layout.name == "ntu25" and src.class_names == class_names() and src.class_meta == class_meta()
    assert len(src) == len(ref["split_train"]) and np.array_equal(src.subjects, ref["subjects"][ref["split_train"]])
    i = int(ref["split_train"][3])
    assert np.array_equal(src.read(3), ref["x"][i][:, : ref["lengths"][i]])


# --------------------------------------------------------------------------------------------
# bodies: kinematics and plausibility
# --------------------------------------------------------------------------------------------
def test_bone_lengths_are_constant_per_sample():
    d = generate(130, seed=7, noise=0.0)  # dropped frames on (repeats or zeros), no sensor noise
    x, L = d["x"], d["lengths"]
    worst = 0.0
    for i in range(len(x)):
        for m in range(2):
            p = valid(x[i], L[i], m)
            p = p[np.abs(p).sum((1, 2)) > 0]  # skip zeroed (dropped) frames
            if not len(p):
                continue
            for c, par in NTU25.edges:
                ln = np.linalg.norm(p[:, c] - p[:, par], axis=-1)
                assert 0.02 < ln.mean() < 0.5
                worst = max(worst, float(ln.std()))
    assert worst < 2e-5
    # sensor noise does make them vary, like Kinect
    noisy = generate(13, seed=7)
    p = valid(noisy["x"][0], noisy["lengths"][0])
    assert np.linalg.norm(p[:, J["l_elbow"]] - p[:, J["l_shoulder"]], axis=-1).std() > 1e-3


def test_people_are_upright_and_in_front_of_the_camera(small):
    x, L, y = small["x"], small["lengths"], small["y"]
    sb_all = []
    for i in range(len(x)):
        for m in range(1 + (CLASSES[y[i]].persons == 2)):
            p = valid(x[i], L[i], m)
            p = p[np.abs(p).sum((1, 2)) > 0]
            head, sb = p[:, J["head"], 1], p[:, J["spine_base"], 1]
            feet = np.minimum(p[:, J["l_foot"], 1], p[:, J["r_foot"], 1])
            assert (head > sb + 0.1).all() and (sb > feet + 0.25).all()
            assert (np.abs(p[..., 0]) < 2.0).all() and (p[..., 2] > 1.8).all() and (p[..., 2] < 4.6).all()
            assert (np.abs(p[..., 1]) < 1.6).all()
            sb_all.append(np.median(sb))
            # standing height: head above the feet by 1.2-1.8 m in the first frame
            if y[i] not in (by_name("stand up"), by_name("touch knees then head")):
                assert 1.2 < head[0] - feet[0] < 1.8
    sb_all = np.array(sb_all)
    assert -0.5 < np.median(sb_all) < 0.4 and sb_all.min() > -1.0
    z = x[:, 2, :, J["spine_base"], 0]
    assert 2.5 < np.median(z[z != 0]) < 3.6
    # viewpoints vary: the shoulder line is rotated about the vertical axis
    sh = x[:, :, 0, J["r_shoulder"], 0] - x[:, :, 0, J["l_shoulder"], 0]
    yaw = np.degrees(np.arctan2(-sh[:, 2], sh[:, 0]))
    one = np.array([CLASSES[c].persons == 1 for c in y])
    assert np.abs(yaw[one]).max() > 30 and np.abs(yaw[one]).max() < 60 and abs(np.median(yaw[one])) < 12


def test_second_person_only_in_the_interaction_class(small):
    x, L, y = small["x"], small["lengths"], small["y"]
    shake = by_name("shake hands")
    for i in range(len(x)):
        second = np.abs(x[i, :, : L[i], :, 1]).sum((0, 2))
        if y[i] == shake:
            assert (second > 0).mean() > 0.85
            # the two face each other: right hands meet mid-action
            a, b = valid(x[i], L[i], 0), valid(x[i], L[i], 1)
            seen = np.flatnonzero((np.abs(a).sum((1, 2)) > 0) & (np.abs(b).sum((1, 2)) > 0))
            t = seen[np.argmin(np.abs(seen - L[i] // 2))]  # mid-action, not a dropped frame
            hands = np.linalg.norm(a[t, J["r_hand"]] - b[t, J["r_hand"]])
            bodies = np.linalg.norm(a[t, J["spine_mid"]] - b[t, J["spine_mid"]])
            assert hands < 0.15 < 0.5 < bodies < 1.4
        else:
            assert not second.any()


# --------------------------------------------------------------------------------------------
# the teaching properties of the twins
# --------------------------------------------------------------------------------------------
SPATIAL = [(by_name(a), by_name(b)) for a, b in
           (("wave left hand", "wave right hand"), ("kick left leg", "kick right leg"),
            ("raise left arm", "raise right arm"))]
REVERSED = [(by_name(a), by_name(b)) for a, b in
            (("sit down", "stand up"), ("touch head then knees", "touch knees then head"))]


@pytest.mark.parametrize("a,b", SPATIAL)
def test_spatial_twins_differ_only_in_the_side_that_moves(a, b):
    n = 24
    da, db = render_class(a, n, seed=11, **CLEAN), render_class(b, n, seed=11, **CLEAN)
    assert np.array_equal(da["lengths"], db["lengths"]) and np.array_equal(da["subjects"], db["subjects"])
    corr, rel, mirror_err, side_gap = [], [], [], []
    for i in range(n):
        pa, pb = valid(da["x"][i], da["lengths"][i]), valid(db["x"][i], db["lengths"][i])
        sa, sb = speed_profile(pa), speed_profile(pb)
        corr.append(np.corrcoef(sa, sb)[0, 1])
        rel.append(np.abs(sa - sb).mean() / sa.mean())
        ea, eb = joint_energy(pa), joint_energy(pb)
        # time-averaged per-joint features differ strongly ...
        side_gap.append(np.abs(ea - eb).sum() / (ea + eb).sum())
        # ... and are exactly the other side's (mirror image)
        mirror_err.append(np.abs(ea[SWAP] - eb).sum() / ea.sum())
    print(f"\n{class_names()[a]} vs {class_names()[b]}: speed-profile corr {np.min(corr):.4f} (min), "
          f"rel diff {np.max(rel):.4f} (max); per-joint energy gap {np.min(side_gap):.2f} (min), "
          f"mirror mismatch {np.max(mirror_err):.4f} (max)")
    assert min(corr) > 0.99 and max(rel) < 0.05  # same timing
    assert min(side_gap) > 0.3  # different limbs
    assert max(mirror_err) < 0.05  # only the side differs


@pytest.mark.parametrize("a,b", REVERSED)
def test_reversed_twins_are_the_same_poses_backwards(a, b):
    n = 24
    opts = dict(CLEAN, timing_jitter=False)
    da, db = render_class(a, n, seed=12, **opts), render_class(b, n, seed=12, **opts)
    rev, fwd, mean_gap = [], [], []
    for i in range(n):
        pa, pb = valid(da["x"][i], da["lengths"][i]), valid(db["x"][i], db["lengths"][i])
        rev.append(np.linalg.norm(pb - pa[::-1], axis=-1).mean())
        fwd.append(np.linalg.norm(pb - pa, axis=-1).mean())
        mean_gap.append(np.linalg.norm(pb.mean(0) - pa.mean(0), axis=-1).mean())
    print(f"\n{class_names()[a]} vs {class_names()[b]}: |b - reversed a| {np.mean(rev) * 100:.1f} cm, "
          f"|b - a| {np.mean(fwd) * 100:.1f} cm, per-joint time-mean gap {np.mean(mean_gap) * 100:.2f} cm")
    assert max(rev) < 0.03 and np.mean(fwd) > 0.15 and min(fwd) > 5 * max(rev)
    assert max(mean_gap) < 0.01  # the same multiset of poses

    # with the default (random) timing the order still separates them, the pose statistics do not
    da, db = render_class(a, n, seed=12), render_class(b, n, seed=12)
    gap, order = [], []
    for i in range(n):
        pa, pb = valid(da["x"][i], da["lengths"][i]), valid(db["x"][i], db["lengths"][i])
        gap.append(np.linalg.norm(pb.mean(0) - pa.mean(0), axis=-1).mean())
        order.append(np.linalg.norm(pb - pa, axis=-1).mean())
    assert np.median(gap) < 0.25 * np.median(order)


def _claps(p: np.ndarray) -> int:
    """Number of times the hands come together (minima of the wrist distance under 40 % of its range)."""
    d = np.linalg.norm(p[:, J["l_wrist"]] - p[:, J["r_wrist"]], axis=-1)
    lo = d.min() + 0.4 * (d.max() - d.min())
    inner = (d[1:-1] < d[:-2]) & (d[1:-1] <= d[2:]) & (d[1:-1] < lo)
    return int(inner.sum())


def test_tempo_twins_are_the_same_poses_faster():
    a, b = by_name("clap slowly"), by_name("clap fast")
    n = 24
    da, db = render_class(a, n, seed=13, **CLEAN), render_class(b, n, seed=13, **CLEAN)
    mean_gap, spread_gap, fwd, ratio = [], [], [], []
    for i in range(n):
        pa, pb = valid(da["x"][i], da["lengths"][i]), valid(db["x"][i], db["lengths"][i])
        mean_gap.append(np.linalg.norm(pb.mean(0) - pa.mean(0), axis=-1).mean())
        spread_gap.append(np.abs(pb.std(0) - pa.std(0)).mean() / pa.std(0).mean())
        fwd.append(np.linalg.norm(pb - pa, axis=-1)[:, [J["l_hand"], J["r_hand"]]].mean())
        ca, cb = _claps(pa), _claps(pb)
        assert ca in (2, 3) and cb == 2 * ca + 1, (ca, cb)
        ratio.append(speed_profile(pb).mean() / speed_profile(pa).mean())
    print(f"\nclap slowly vs fast: per-joint time-mean gap {np.mean(mean_gap) * 100:.2f} cm, "
          f"spread gap {np.mean(spread_gap):.3f}, hands |b - a| {np.mean(fwd) * 100:.1f} cm, "
          f"speed ratio {np.mean(ratio):.2f}")
    assert max(mean_gap) < 0.015 and max(spread_gap) < 0.12  # the same poses
    assert np.mean(fwd) > 0.04 and np.mean(ratio) > 1.5  # visited faster (raising the arms is shared)


def test_twins_look_alike_to_a_pose_histogram_but_not_to_order():
    """Across samples: time-averaged pose statistics cannot tell temporal twins apart but
    tell spatial twins apart easily (the point of the spatial vs temporal embeddings)."""
    n = 16

    def stats(label):
        d = render_class(label, n, seed=14, **CLEAN)
        out = []
        for i in range(n):
            p = valid(d["x"][i], d["lengths"][i])
            p = p - p[:, J["spine_mid"]].mean(0)  # drop the placement
            out.append(np.concatenate([p.mean(0).ravel(), p.std(0).ravel()]))
        return np.array(out)

    def separation(a, b):
        sa, sb = stats(a), stats(b)
        within = np.linalg.norm(sa - sb, axis=1).mean()
        return within / np.linalg.norm(sa, axis=1).mean()

    spatial = separation(*SPATIAL[0])
    temporal = separation(*REVERSED[0])
    print(f"\npose-statistics gap: spatial twins {spatial:.3f}, temporal twins {temporal:.3f}")
    assert spatial > 5 * temporal


# --------------------------------------------------------------------------------------------
# speed
# --------------------------------------------------------------------------------------------
def test_generation_speed_report():
    n = 2500  # half the 5000-sample target, to keep the suite fast on shared CPUs
    t0, c0 = time.perf_counter(), time.process_time()
    d = generate(n, seed=21)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n{n} samples ({d['x'].nbytes / 2**20:.0f} MiB): {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"(~{cpu * 5000 / n:.1f} s CPU per 5000 samples)")
    assert d["x"].shape[0] == n
