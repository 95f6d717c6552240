"""Transforms: parity with CTR-GCN's feeders (stored fixtures), edge cases, registry, modalities.

The fixtures in ``fixtures/transforms/`` hold the reference feeders' outputs (and their
random draws) for the synthetic inputs that :func:`ntu_input` / :func:`ucla_input`
regenerate from a seed; see ``fixtures/transforms/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stdcl.data.layouts import NTU25, UCLA20
from stdcl.data.modalities import apply_modality, bones, motion
from stdcl.data.transforms import (DEFAULT_TRANSFORM_OPTIONS, NtuTransform, UclaTransform, build_transform,
                                   crop_length, minmax_normalise, resize_frames, rotate, ucla_test_indices,
                                   ucla_train_indices, valid_crop_resize, valid_frame_count)
from stdcl.errors import ConfigError
from tests.support.paths import FIXTURES

FIXTURES = FIXTURES / "transforms"

# -- synthetic inputs (the fixture generator imports these) ------------------------------

#: NTU cases: name -> (seed, valid frames, second person present, train, window, modality)
NTU_CASES = {
    "test_v1": (11, 1, False, False, 64, "joint"),
    "test_v10": (12, 10, True, False, 64, "joint"),
    "test_v100": (13, 100, False, False, 64, "joint"),
    "test_v300": (14, 300, True, False, 64, "joint"),
    "test_cancel": (15, 50, False, False, 16, "joint"),  # frame 20 sums to exactly zero
    "train_v1": (21, 1, True, True, 64, "joint"),
    "train_v10": (22, 10, False, True, 64, "joint"),
    "train_v100": (23, 100, True, True, 64, "joint"),
    "train_v300": (24, 300, False, True, 64, "joint"),
    "train_bone_motion": (25, 120, True, True, 32, "bone_motion"),
}

#: NW-UCLA cases: name -> (seed, frames, train, modality)
UCLA_CASES = {
    "test_t1": (31, 1, False, "joint"),
    "test_t6": (32, 6, False, "joint"),
    "test_t39": (33, 39, False, "joint"),
    "test_t201": (34, 201, False, "joint"),
    "test_bone_motion": (35, 39, False, "bone_motion"),
    "train_t1": (41, 1, True, "joint"),
    "train_t6": (42, 6, True, "joint"),
    "train_t39": (43, 39, True, "joint"),
    "train_t201": (44, 201, True, "joint"),
}


def ntu_input(seed: int, valid: int, second_person: bool, total: int = 300) -> np.ndarray:
    """A (3, 300, 25, 2) float32 random walk, zero after ``valid`` frames."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((3, valid, 25, 2)) * 0.02, axis=1)
    walk += rng.standard_normal((3, 1, 25, 2)) * 0.3
    if not second_person:
        walk[..., 1] = 0
    x = np.zeros((3, total, 25, 2), dtype=np.float32)
    x[:, :valid] = walk
    if valid > 20:  # a valid frame whose values cancel exactly: the reference counts it as invalid
        x[:, 20] = np.where(np.arange(150).reshape(3, 25, 2) % 2 == 0, 0.25, -0.25)
    return x


def ucla_input(seed: int, frames: int) -> np.ndarray:
    """A (T, 20, 3) float64 random walk around (0, 0, 3) m, exactly representable in float32."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((frames, 20, 3)) * 0.01, axis=0)
    walk += rng.standard_normal((1, 20, 3)) * 0.3 + np.array([0.0, 0.0, 3.0])
    return walk.astype(np.float32).astype(np.float64)


def _fixture(name: str) -> dict[str, np.ndarray]:
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"missing parity fixture {path}; see {FIXTURES / 'README.md'}")
    with np.load(path) as z:
        return dict(z)


def _check_input(fx: dict[str, np.ndarray], case: str, x: np.ndarray) -> None:
    assert np.isclose(np.float64(x).sum(), fx[f"{case}/input_sum"], rtol=0, atol=1e-9), (
        f"{case}: the regenerated synthetic input differs from the one the fixture was made from "
        "(numpy's Generator stream changed?); regenerate the fixtures")


# -- parity with the reference feeders ---------------------------------------------------


@pytest.mark.parametrize("case", sorted(NTU_CASES))
def test_ntu_parity_with_reference_feeder(case: str) -> None:
    fx = _fixture("ntu_reference.npz")
    seed, valid, second, train, window, modality = NTU_CASES[case]
    x = ntu_input(seed, valid, second)
    _check_input(fx, case, x)
    assert valid_frame_count(x) == fx[f"{case}/valid"]
    t = build_transform("ntu", train, window=window)
    if train:
        p, begin = float(fx[f"{case}/p"]), int(fx[f"{case}/begin"])
        n_valid = valid_frame_count(x)
        assert n_valid - crop_length(n_valid, p) + 1 == fx[f"{case}/randint_hi"]
        y = t.apply(x, p=p, begin=begin, angles=fx[f"{case}/angles"])
    else:
        y = t.apply(x, p=0.95)
    y = apply_modality(y, modality, NTU25)
    assert y.shape == (3, window, 25, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y, fx[f"{case}/out"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", sorted(UCLA_CASES))
def test_ucla_parity_with_reference_feeder(case: str) -> None:
    fx = _fixture("ucla_reference.npz")
    seed, frames, train, modality = UCLA_CASES[case]
    x = ucla_input(seed, frames)
    _check_input(fx, case, x)
    x = x.astype(np.float32).transpose(2, 0, 1)[..., None]  # what a source returns: (3, T, 20, 1)
    t = build_transform("ucla", train)
    if train:
        y = t.apply(x, agx=int(fx[f"{case}/agx"]), agy=int(fx[f"{case}/agy"]), scale=float(fx[f"{case}/scale"]),
                    frame_idx=fx[f"{case}/frame_idx"])
    else:
        y = t.apply(x)
    y = apply_modality(y, modality, UCLA20)
    assert y.shape == (3, 52, 20, 1) and y.dtype == np.float32
    np.testing.assert_allclose(y, fx[f"{case}/out"], rtol=0, atol=1e-6)


def test_fixtures_are_small() -> None:
    total = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert total < 500_000


# -- NTU building blocks and edge cases --------------------------------------------------


def test_valid_frame_count_sums_values_not_nonzeros() -> None:
    x = np.zeros((3, 10, 25, 2), dtype=np.float32)
    x[:, :6] = 1.0
    x[0, 2, 0, 0], x[1, 2, 0, 0] = 1.0, -1.0
    x[:, 3] = 0.0
    x[0, 3, 0, 0], x[1, 3, 0, 0] = 2.0, -2.0  # non-zero values that sum to zero
    assert valid_frame_count(x) == 5


def test_crop_length_floor_and_cap() -> None:
    assert crop_length(300, 0.5) == 150
    assert crop_length(100, 0.5) == 64
    assert crop_length(40, 0.5) == 40
    assert crop_length(1, 0.5) == 1
    assert crop_length(100, 0.5, min_length=10) == 50


def test_resize_is_linear_with_half_pixel_centres() -> None:
    x = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1).repeat(3, 0)
    y = resize_frames(x, 8)[0, :, 0, 0]
    # src = (i + 0.5) * 4 / 8 - 0.5, clamped at 0, linear between neighbours
    np.testing.assert_allclose(y, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0], atol=1e-7)
    np.testing.assert_array_equal(resize_frames(x, 4), x)


def test_ntu_short_and_empty_sequences() -> None:
    rng = np.random.default_rng(0)
    one = ntu_input(5, 1, True)
    for train in (True, False):
        t = build_transform("ntu", train)
        y = t(one, rng)
        assert y.shape == (3, 64, 25, 2) and np.isfinite(y).all()
        if not train:
            np.testing.assert_array_equal(y, np.repeat(one[:, :1], 64, axis=1))
        z = t(np.zeros((3, 300, 25, 2), np.float32), rng)
        assert z.shape == (3, 64, 25, 2) and not z.any()
        short = t(ntu_input(6, 3, False, total=3), rng)
        assert short.shape == (3, 64, 25, 2) and np.isfinite(short).all()


def test_ntu_crop_bounds_are_checked() -> None:
    x = ntu_input(1, 100, True)
    with pytest.raises(ValueError, match="crop start"):
        valid_crop_resize(x, 100, 0.5, begin=37)  # 64 frames from 37 run past 100
    with pytest.raises(ValueError, match="outside 0..300"):
        valid_crop_resize(x, 301, 0.95)


def test_rotation_is_orthonormal_and_in_reference_order() -> None:
    x = ntu_input(2, 64, True, total=64)
    y = rotate(x, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(y, x)
    a = 0.3
    yz = rotate(x, [0.0, 0.0, a])  # about z: x' = c x + s y, y' = -s x + c y
    np.testing.assert_allclose(yz[0], np.cos(a) * x[0] + np.sin(a) * x[1], atol=1e-6)
    np.testing.assert_allclose(yz[1], -np.sin(a) * x[0] + np.cos(a) * x[1], atol=1e-6)
    norms = np.linalg.norm(rotate(x, [0.1, -0.2, 0.3]), axis=0)
    np.testing.assert_allclose(norms, np.linalg.norm(x, axis=0), atol=1e-5)
    # composition Rz @ Ry @ Rx: rotating by x first, then y, then z
    step = rotate(rotate(rotate(x, [0.1, 0, 0]), [0, -0.2, 0]), [0, 0, 0.3])
    np.testing.assert_allclose(rotate(x, [0.1, -0.2, 0.3]), step, atol=1e-5)


def test_ntu_train_draws_come_from_the_generator() -> None:
    x = ntu_input(3, 200, True)
    t = build_transform("ntu", True)
    a = t(x, np.random.default_rng(7))
    b = t(x, np.random.default_rng(7))
    c = t(x, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    params = [t.sample_params(200, np.random.default_rng(s)) for s in range(200)]
    ps = np.array([q["p"] for q in params])
    ang = np.array([q["angles"] for q in params])
    assert 0.5 <= ps.min() and ps.max() <= 1.0 and np.abs(ang).max() <= 0.3
    assert all(0 <= q["begin"] <= 200 - crop_length(200, q["p"]) for q in params)


# -- NW-UCLA building blocks and edge cases ----------------------------------------------


def test_minmax_normalise_zero_range_gives_zero_not_nan() -> None:
    pts = np.array([[1.0, 2.0, 5.0], [3.0, 2.0, 5.0]])
    out = minmax_normalise(pts)
    np.testing.assert_array_equal(out, [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


def test_ucla_all_zero_and_one_frame_sequences_are_finite() -> None:
    rng = np.random.default_rng(0)
    for train in (True, False):
        t = build_transform("ucla", train)
        z = t(np.zeros((3, 7, 20, 1), np.float32), rng)
        assert z.shape == (3, 52, 20, 1) and np.isfinite(z).all() and not z.any()
        one = ucla_input(3, 1).astype(np.float32).transpose(2, 0, 1)[..., None]
        y = t(one, rng)
        assert y.shape == (3, 52, 20, 1) and np.isfinite(y).all()
        assert np.allclose(y.min(axis=(1, 2, 3)), -1) and np.allclose(y.max(axis=(1, 2, 3)), 1)
        e = t(np.zeros((3, 0, 20, 1), np.float32), rng)
        assert e.shape == (3, 52, 20, 1) and not e.any()


def test_ucla_frame_indices() -> None:
    np.testing.assert_array_equal(ucla_test_indices(1), np.zeros(52, np.int64))
    idx = ucla_test_indices(10)
    assert idx[0] == 0 and idx[-1] == 9 and (np.diff(idx) >= 0).all()
    rng = np.random.default_rng(0)
    tr = ucla_train_indices(3, 52, rng)
    assert tr.shape == (52,) and (np.diff(tr) >= 0).all() and set(tr) <= {0, 1, 2}
    # no frame can appear more often than the population repeats it
    assert np.bincount(ucla_train_indices(1, 52, rng, population_repeat=100)).max() == 52
    assert ucla_train_indices(2, 52, rng, population_repeat=10).shape == (52,)  # with replacement


def test_ucla_train_draws() -> None:
    t = build_transform("ucla", True)
    rng = np.random.default_rng(1)
    draws = [t.sample_params(40, rng) for _ in range(300)]
    ax = np.array([d["agx"] for d in draws] + [d["agy"] for d in draws])
    sc = np.array([d["scale"] for d in draws])
    assert ax.dtype.kind == "i" and -60 <= ax.min() and ax.max() <= 60 and ax.min() < -50 and ax.max() > 50
    assert 0.5 <= sc.min() and sc.max() <= 1.5
    x = ucla_input(9, 40).astype(np.float32).transpose(2, 0, 1)[..., None]
    np.testing.assert_array_equal(t(x, np.random.default_rng(3)), t(x, np.random.default_rng(3)))


def test_ucla_test_transform_centres_on_joint_2_of_frame_0() -> None:
    x = ucla_input(4, 30).astype(np.float32).transpose(2, 0, 1)[..., None]
    shifted = x + np.array([1.0, -2.0, 0.5], np.float32).reshape(3, 1, 1, 1)
    t = build_transform("ucla", False)
    np.testing.assert_allclose(t(x, None), t(shifted, None), atol=1e-5)


# -- registry ----------------------------------------------------------------------------


def test_build_transform_registry() -> None:
    assert build_transform("none", True) is None and build_transform("none", False) is None
    assert isinstance(build_transform("ntu", True), NtuTransform)
    assert isinstance(build_transform("ucla", False), UclaTransform)
    t = build_transform("ntu", False, window=32, p_interval=[0.9], theta=None)
    assert t.window == 32 and t.p_interval == (0.9,) and not t.random_rot
    assert build_transform("ucla", True, random_view=False).random_view is False
    assert set(DEFAULT_TRANSFORM_OPTIONS) == {"ntu", "ucla", "none"}
    with pytest.raises(ConfigError, match="unknown transform 'foo'"):
        build_transform("foo", True)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) windw; allowed: window"):
        build_transform("ntu", True, windw=3)
    with pytest.raises(ConfigError, match="p_interval"):
        build_transform("ntu", True, p_interval=[0.9, 0.5])
    with pytest.raises(ConfigError, match="unknown option"):
        build_transform("none", True, window=3)


def test_transforms_pickle() -> None:
    import pickle

    for kind in ("ntu", "ucla"):
        t = build_transform(kind, True)
        assert repr(pickle.loads(pickle.dumps(t))) == repr(t)


# -- modalities (stdcl.data.modalities, as the reference feeders compute them) -----------


@pytest.mark.parametrize("layout", [NTU25, UCLA20], ids=lambda l: l.name)
def test_bone_uses_layout_pairs(layout) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, layout.num_joints, layout.num_person)).astype(np.float32)
    b = bones(x, layout)
    assert len(layout.bone_pairs) == layout.num_joints  # every joint has exactly one bone
    for child, parent in layout.bone_pairs:
        np.testing.assert_array_equal(b[:, :, child], x[:, :, child] - x[:, :, parent])
    assert not b[:, :, layout.center].any()
    np.testing.assert_array_equal(apply_modality(x, "bone", layout), b)


def test_bone_pairs_match_the_reference_lists() -> None:
    ntu_ref = {(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
               (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23),
               (21, 21), (23, 8), (24, 25), (25, 12)}
    ucla_ref = {(1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10),
                (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19)}
    assert {(a + 1, b + 1) for a, b in NTU25.bone_pairs} == ntu_ref
    assert {(a + 1, b + 1) for a, b in UCLA20.bone_pairs} == ucla_ref


def test_motion_and_bone_motion() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 25, 2)).astype(np.float32)
    m = motion(x)
    np.testing.assert_array_equal(m[:, :-1], x[:, 1:] - x[:, :-1])
    assert not m[:, -1].any()
    np.testing.assert_array_equal(apply_modality(x, "joint_motion", NTU25), m)
    np.testing.assert_array_equal(apply_modality(x, "bone_motion", NTU25), motion(bones(x, NTU25)))
    assert not motion(x[:, :1]).any()  # one frame: all zero
    np.testing.assert_array_equal(apply_modality(x, "joint", NTU25), x)


@pytest.mark.parametrize("kind,options,match", [
    ("ntu", {"theta": float("nan")}, "theta must lie in"),
    ("ntu", {"theta": "x"}, "theta must be a number"),
    ("ntu", {"window": "abc"}, "window must be an integer"),
    ("ntu", {"window": 10**9}, r"window must lie in \[1, 1024\]"),
    ("ntu", {"window": True}, "window must be an integer"),
    ("ntu", {"p_interval": "ab"}, "p_interval must be a list of numbers"),
    ("ntu", {"random_rot": "yes"}, "random_rot must be true or false"),
    ("ntu", {"min_length": -3}, "min_length must lie in"),
    ("ucla", {"max_angle": float("inf")}, "max_angle must be an integer"),
    ("ucla", {"center_joint": -1}, "center_joint must lie in"),
    ("ucla", {"scale_range": [float("nan"), 1.0]}, "scale_range must lie in"),
    ("ucla", {"population_repeat": 1.5}, "population_repeat must be an integer"),
    ("ucla", {"window": 2.5}, "window must be an integer"),
])
def test_transform_options_typed_and_ranged(kind: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_transform(kind, True, **options)


def test_transform_numpy_scalars_accepted_and_center_joint_checked_against_the_data() -> None:
    t = build_transform("ucla", False, window=np.int64(8), center_joint=np.int32(19), random_view=np.bool_(False))
    assert t.window == 8 and t.center_joint == 19
    x = np.random.default_rng(0).random((3, 30, 20, 1), dtype=np.float32)
    assert t(x, np.random.default_rng(0)).shape == (3, 8, 20, 1)
    with pytest.raises(ConfigError, match="center_joint 19 is not one of these sequences' 12 joints"):
        t(x[:, :, :12], np.random.default_rng(0))
