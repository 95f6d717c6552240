"""The published train/test transforms (CTR-GCN ``feeder_ntu`` / ``feeder_ucla``) as ``Transform``s.

A transform is ``transform(x, rng) -> x`` with ``x`` float32 ``(C, T, V, M)`` and ``rng`` a
numpy Generator; every random draw comes from ``rng`` so a dataset seed reproduces an epoch.
Each transform splits into ``sample_params(...)`` (the draws) and a deterministic
``apply(x, **params)``, and the building blocks below take explicit parameters, so the
reference's numbers can be checked for fixed draws.

NTU (``kind="ntu"``): crop the valid frames (train: random ratio in ``p_interval`` with a
64-frame floor and a random start; test: central ``p_interval[0]``), resize to ``window``
frames with torch's ``bilinear``/``align_corners=False`` interpolation, and (train) rotate
by angles uniform in +-``theta`` about x, y, z (``R = Rz @ Ry @ Rx``).

NW-UCLA (``kind="ucla"``): subtract joint ``center_joint`` of frame 0, (train) rotate about
x and y by integer degrees in +-``max_angle`` and scale by U(``scale_range``), min-max
normalise each axis to [-1, 1] over all frames and joints, and take ``window`` frames
(train: sorted random draw without replacement from the frame list repeated
``population_repeat`` times; test: ``linspace(0, T-1, window)`` truncated).

Deviations from the reference, each where it would crash or give NaN:
- NTU: a sequence with no valid frame becomes zeros ``(C, window, V, M)`` (the reference
  fails in ``F.interpolate`` on an empty crop).
- NW-UCLA: an axis with zero range (e.g. an all-zero sequence) normalises to 0 instead of
  NaN (0/0); an empty sequence becomes zeros; with ``population_repeat * T < window`` frames
  are drawn with replacement (the reference raises; impossible with the default 100).
- NW-UCLA computes in float64 like the reference but returns float32, and the sources store
  float32 coordinates, so real-data results differ from the reference by float32 rounding.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stdcl.data.base import Transform
from stdcl.errors import ConfigError

__all__ = [
    "DEFAULT_TRANSFORM_OPTIONS", "NtuTransform", "UclaTransform", "build_transform", "check_transform_options",
    "crop_length",
    "minmax_normalise", "resize_frames", "rotate", "rotation_matrix", "ucla_test_indices",
    "ucla_train_indices", "ucla_view_matrix", "valid_crop_resize", "valid_frame_count",
]

# ---------------------------------------------------------------------------------------
# NTU building blocks (CTR-GCN feeders/tools.py)
# ---------------------------------------------------------------------------------------


def valid_frame_count(x: np.ndarray) -> int:
    """Number of frames whose coordinate *sum* over C, V, M is non-zero (the reference's rule).

    A frame whose values cancel out exactly counts as invalid, and the count is used as
    the length of a prefix (valid frames are assumed to come first), as in the reference.
    """
    return int(np.sum(x.sum(0).sum(-1).sum(-1) != 0))


def crop_length(valid_frames: int, p: float, min_length: int = 64) -> int:
    """Training crop length: ``floor(valid * p)`` raised to ``min_length``, capped at ``valid``."""
    return int(min(max(int(np.floor(valid_frames * p)), min_length), valid_frames))


def resize_frames(x: np.ndarray, window: int) -> np.ndarray:
    """Resize (C, T, V, M) to ``window`` frames as the reference does.

    The reference views the crop as a ``(C*V*M, T)`` image and calls ``F.interpolate``
    (bilinear, ``align_corners=False``) to ``(C*V*M, window)``: linear interpolation along
    time with half-pixel centres, computed in float32.
    """
    c, t, v, m = x.shape
    data = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: x may be a read-only memory map
    data = data.permute(0, 2, 3, 1).reshape(1, 1, c * v * m, t)
    data = F.interpolate(data, size=(c * v * m, window), mode="bilinear", align_corners=False)
    return data.reshape(c, v, m, window).permute(0, 3, 1, 2).contiguous().numpy()


def valid_crop_resize(x: np.ndarray, valid_frames: int, p: float, window: int = 64,
                      begin: int | None = None, min_length: int = 64) -> np.ndarray:
    """Crop the first ``valid_frames`` frames of (C, T, V, M) and resize to ``window`` frames.

    ``begin=None``: central crop keeping ratio ``p`` (test rule: ``bias = int((1-p)*valid/2)``,
    frames ``bias .. valid-bias``). ``begin`` given: training rule, ``crop_length(valid, p,
    min_length)`` frames from offset ``begin``. No valid frame: zeros ``(C, window, V, M)``.
    """
    c, t, v, m = x.shape
    valid = int(valid_frames)
    if not 0 <= valid <= t:
        raise ValueError(f"valid_frames {valid} is outside 0..{t}")
    if valid == 0:
        return np.zeros((c, window, v, m), dtype=np.float32)
    if begin is None:
        if not 0 < p <= 1:
            raise ValueError(f"central crop ratio must be in (0, 1], got {p}")
        bias = int((1 - p) * valid / 2)
        data = x[:, bias:valid - bias]
    else:
        length = crop_length(valid, p, min_length)
        if not 0 <= begin <= valid - length:
            raise ValueError(f"crop start {begin} is outside 0..{valid - length}")
        data = x[:, begin:begin + length]
    return resize_frames(data, window)


def rotation_matrix(angles: Sequence[float]) -> torch.Tensor:
    """float32 ``Rz @ Ry @ Rx`` for angles (radians) about x, y, z, with the reference's signs.

    ``Rx = [[1,0,0],[0,c,s],[0,-s,c]]``, ``Ry = [[c,0,-s],[0,1,0],[s,0,c]]``,
    ``Rz = [[c,s,0],[-s,c,0],[0,0,1]]``.
    """
    a = torch.as_tensor(np.asarray(angles, dtype=np.float32).reshape(3))
    cs, sn = a.cos(), a.sin()
    one, zero = torch.ones(()), torch.zeros(())
    rx = torch.stack([torch.stack([one, zero, zero]), torch.stack([zero, cs[0], sn[0]]),
                      torch.stack([zero, -sn[0], cs[0]])])
    ry = torch.stack([torch.stack([cs[1], zero, -sn[1]]), torch.stack([zero, one, zero]),
                      torch.stack([sn[1], zero, cs[1]])])
    rz = torch.stack([torch.stack([cs[2], sn[2], zero]), torch.stack([-sn[2], cs[2], zero]),
                      torch.stack([zero, zero, one])])
    return rz.matmul(ry).matmul(rx)


def rotate(x: np.ndarray, angles: Sequence[float]) -> np.ndarray:
    """Rotate every frame of (3, T, V, M) by :func:`rotation_matrix` (float32, as the reference)."""
    c, t, v, m = x.shape
    if c != 3:
        raise ValueError(f"rotation needs 3 coordinates per joint, got C={c}")
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(1, 0, 2, 3).reshape(t, 3, v * m)
    rot = rotation_matrix(angles).expand(t, 3, 3)
    return torch.matmul(rot, data).reshape(t, 3, v, m).permute(1, 0, 2, 3).contiguous().numpy()


class NtuTransform:
    """CTR-GCN's NTU feeder transform (crop + resize, plus a random rotation when training)."""

    def __init__(self, train: bool, window: int = 64, p_interval: Sequence[float] | None = None,
                 min_length: int = 64, random_rot: bool | None = None, theta: float = 0.3):
        p_interval = tuple(float(p) for p in (p_interval if p_interval is not None
                                               else (0.5, 1.0) if train else (0.95,)))
        if len(p_interval) not in (1, 2) or not all(0 < p <= 1 for p in p_interval) \
                or (len(p_interval) == 2 and p_interval[0] > p_interval[1]):
            raise ConfigError("ntu transform: p_interval must be [p] or [low, high] within (0, 1], "
                              f"got {list(p_interval)}")
        if int(window) < 1 or int(min_length) < 1:
            raise ConfigError(f"ntu transform: window and min_length must be >= 1, got {window}, {min_length}")
        self.train = bool(train)
        self.window = int(window)
        self.p_interval = p_interval
        self.min_length = int(min_length)
        self.random_rot = self.train if random_rot is None else bool(random_rot)
        self.theta = float(theta)

    def sample_params(self, valid_frames: int, rng: np.random.Generator) -> dict[str, Any]:
        """Draw ``p``, ``begin`` and ``angles`` in the reference's order (ratio, start, rotation)."""
        params: dict[str, Any] = {"p": self.p_interval[0], "begin": None, "angles": None}
        if len(self.p_interval) == 2:
            lo, hi = self.p_interval
            params["p"] = float(rng.random() * (hi - lo) + lo)
            length = crop_length(valid_frames, params["p"], self.min_length)
            params["begin"] = int(rng.integers(0, valid_frames - length + 1)) if valid_frames else 0
        if self.random_rot:
            params["angles"] = rng.uniform(-self.theta, self.theta, 3).astype(np.float32)
        return params

    def apply(self, x: np.ndarray, p: float, begin: int | None = None,
              angles: Sequence[float] | None = None) -> np.ndarray:
        """The transform for fixed draws (``begin=None``: central crop)."""
        x = np.asarray(x, dtype=np.float32)
        out = valid_crop_resize(x, valid_frame_count(x), p, self.window, begin, self.min_length)
        return rotate(out, angles) if angles is not None else out

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return self.apply(x, **self.sample_params(valid_frame_count(x), rng))

    def __repr__(self) -> str:
        return (f"NtuTransform(train={self.train}, window={self.window}, p_interval={list(self.p_interval)}, "
                f"min_length={self.min_length}, random_rot={self.random_rot}, theta={self.theta})")


# ---------------------------------------------------------------------------------------
# NW-UCLA building blocks (CTR-GCN feeders/feeder_ucla.py)
# ---------------------------------------------------------------------------------------


def ucla_view_matrix(agx: float, agy: float, scale: float) -> np.ndarray:
    """float64 ``Ry @ (Rx @ S)`` for degrees ``agx``, ``agy``; points (N, 3) map to ``points @ M``."""
    ax, ay = math.radians(agx), math.radians(agy)
    rx = np.asarray([[1, 0, 0], [0, math.cos(ax), math.sin(ax)], [0, -math.sin(ax), math.cos(ax)]])
    ry = np.asarray([[math.cos(ay), 0, -math.sin(ay)], [0, 1, 0], [math.sin(ay), 0, math.cos(ay)]])
    s = np.asarray([[scale, 0, 0], [0, scale, 0], [0, 0, scale]])
    return np.dot(ry, np.dot(rx, s))


def minmax_normalise(points: np.ndarray) -> np.ndarray:
    """Map each column of (N, C) to [-1, 1] by its min and max; a constant column becomes 0."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = hi - lo
    flat = span == 0
    out = (points - lo) / np.where(flat, 1.0, span) * 2 - 1
    if flat.any():
        out[:, flat] = 0.0
    return out


def ucla_test_indices(length: int, window: int = 52) -> np.ndarray:
    """Evenly spaced frame ids ``linspace(0, length-1, window)`` truncated to int."""
    return np.linspace(0, length - 1, window).astype(np.int64)


def ucla_train_indices(length: int, window: int, rng: np.random.Generator,
                       population_repeat: int = 100) -> np.ndarray:
    """Sorted random frame ids: ``window`` draws without replacement from the frame list
    repeated ``population_repeat`` times (the reference's ``random.sample(list(range(T))*100, 52)``)."""
    size = length * population_repeat
    pos = rng.choice(size, window, replace=size < window)
    return np.sort(pos % length)


class UclaTransform:
    """CTR-GCN's NW-UCLA feeder transform; output (C, window, V, M) float32."""

    def __init__(self, train: bool, window: int = 52, center_joint: int = 1, max_angle: int = 60,
                 scale_range: Sequence[float] = (0.5, 1.5), random_view: bool | None = None,
                 random_sample: bool | None = None, population_repeat: int = 100):
        if int(window) < 1 or int(population_repeat) < 1:
            raise ConfigError("ucla transform: window and population_repeat must be >= 1, "
                              f"got {window}, {population_repeat}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ConfigError("ucla transform: scale_range must be [low, high] with 0 < low <= high, "
                              f"got {list(scale_range)}")
        self.train = bool(train)
        self.window = int(window)
        self.center_joint = int(center_joint)
        self.max_angle = int(max_angle)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.random_view = self.train if random_view is None else bool(random_view)
        self.random_sample = self.train if random_sample is None else bool(random_sample)
        self.population_repeat = int(population_repeat)

    def sample_params(self, length: int, rng: np.random.Generator) -> dict[str, Any]:
        """Draw ``agx``, ``agy`` (integer degrees), ``scale`` and ``frame_idx``, in that order."""
        params: dict[str, Any] = {"agx": 0, "agy": 0, "scale": 1.0, "frame_idx": None}
        if self.random_view:
            params["agx"] = int(rng.integers(-self.max_angle, self.max_angle + 1))
            params["agy"] = int(rng.integers(-self.max_angle, self.max_angle + 1))
            params["scale"] = float(rng.uniform(*self.scale_range))
        if self.random_sample and length > 0:
            params["frame_idx"] = ucla_train_indices(length, self.window, rng, self.population_repeat)
        return params

    def apply(self, x: np.ndarray, agx: float = 0, agy: float = 0, scale: float = 1.0,
              frame_idx: np.ndarray | None = None) -> np.ndarray:
        """The transform for fixed draws (``frame_idx=None``: evenly spaced test frames)."""
        c, t, v, m = x.shape
        if c != 3:
            raise ValueError(f"the NW-UCLA transform needs 3 coordinates per joint, got C={c}")
        if t == 0:
            return np.zeros((c, self.window, v, m), dtype=np.float32)
        if self.center_joint >= v:
            raise ConfigError(f"ucla transform: center_joint {self.center_joint} is not one of these sequences' {v} joints")
        value = np.asarray(x, dtype=np.float64).transpose(1, 3, 2, 0)  # T, M, V, C
        value = value - value[0, 0, self.center_joint]
        points = np.dot(value.reshape(-1, 3), ucla_view_matrix(agx, agy, scale))
        value = minmax_normalise(points).reshape(t, m, v, 3)
        idx = ucla_test_indices(t, self.window) if frame_idx is None else np.asarray(frame_idx, dtype=np.int64)
        return np.ascontiguousarray(value[idx].transpose(3, 0, 2, 1), dtype=np.float32)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(x, **self.sample_params(x.shape[1], rng))

    def __repr__(self) -> str:
        return (f"UclaTransform(train={self.train}, window={self.window}, center_joint={self.center_joint}, "
                f"max_angle={self.max_angle}, scale_range={list(self.scale_range)}, random_view={self.random_view}, "
                f"random_sample={self.random_sample}, population_repeat={self.population_repeat})")


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

#: Default options per kind and phase (what ``build_transform`` uses when not overridden).
DEFAULT_TRANSFORM_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "ntu": {
        "train": {"window": 64, "p_interval": [0.5, 1.0], "min_length": 64, "random_rot": True, "theta": 0.3},
        "test": {"window": 64, "p_interval": [0.95], "min_length": 64, "random_rot": False, "theta": 0.3},
    },
    "ucla": {
        "train": {"window": 52, "center_joint": 1, "max_angle": 60, "scale_range": [0.5, 1.5],
                  "random_view": True, "random_sample": True, "population_repeat": 100},
        "test": {"window": 52, "center_joint": 1, "max_angle": 60, "scale_range": [0.5, 1.5],
                 "random_view": False, "random_sample": False, "population_repeat": 100},
    },
    "none": {"train": {}, "test": {}},
}

_FACTORIES: dict[str, Callable[..., Transform]] = {"ntu": NtuTransform, "ucla": UclaTransform}

#: Every option's type and inclusive range: ("int" | "float" | "bool" | "floats", low, high).
_OPTION_TYPES: dict[str, tuple[str, float, float]] = {
    "window": ("int", 1, 1024), "min_length": ("int", 1, 100_000), "center_joint": ("int", 0, 1023),
    "max_angle": ("int", 0, 180), "population_repeat": ("int", 1, 10_000), "theta": ("float", 0.0, math.pi),
    "p_interval": ("floats", 0.0, 1.0), "scale_range": ("floats", 0.0, 100.0),
    "random_rot": ("bool", 0, 0), "random_view": ("bool", 0, 0), "random_sample": ("bool", 0, 0),
}


def _check_option(kind: str, name: str, value: Any) -> None:
    """A ConfigError unless ``value`` has the option's type, is finite and lies in its range."""
    typ, lo, hi = _OPTION_TYPES[name]
    where = f"{kind} transform: {name}"
    if typ == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return
    items = value if typ == "floats" else [value]
    if typ == "floats" and (not isinstance(value, (list, tuple)) or not value):
        raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
    for item in items:
        ok_type = isinstance(item, numbers.Integral if typ == "int" else numbers.Real)
        if isinstance(item, (bool, np.bool_)) or not ok_type:
            raise ConfigError(f"{where} must be {'an integer' if typ == 'int' else 'a number'}, got {item!r}")
        if not math.isfinite(item) or not lo <= item <= hi:
            raise ConfigError(f"{where} must lie in [{lo}, {hi}], got {item!r}")


def build_transform(kind: str, train: bool, **options: Any) -> Transform | None:
    """The ``kind`` ("ntu", "ucla" or "none") transform for training or testing.

    ``options`` override :data:`DEFAULT_TRANSFORM_OPTIONS` (``None`` values are ignored);
    an unknown option raises a :class:`ConfigError`. ``"none"`` returns None.
    """
    key, given = check_transform_options(kind, train, options)
    if key == "none":
        return None
    return _FACTORIES[key](train=train, **{**DEFAULT_TRANSFORM_OPTIONS[key]["train" if train else "test"], **given})


def check_transform_options(kind: str, train: bool, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(kind, options without None values)`` after checking the kind, every option's name, type and
    range (a one-line :class:`ConfigError` otherwise)."""
    key = str(kind).lower()
    if key not in DEFAULT_TRANSFORM_OPTIONS:
        raise ConfigError(f"unknown transform {kind!r}; choose from {', '.join(DEFAULT_TRANSFORM_OPTIONS)}")
    if not isinstance(options, dict):
        raise ConfigError(f"transform {key!r}: options must be a mapping, got {options!r}")
    defaults = DEFAULT_TRANSFORM_OPTIONS[key]["train" if train else "test"]
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(map(str, given)) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise ConfigError(f"transform {key!r}: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
    for name, value in given.items():
        _check_option(key, name, value)
    return key, given
