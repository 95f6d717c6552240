"""Sampling and rendering of the synthetic set: subjects, per-sample variation, camera,
sensor noise, dropped frames, cross-subject split.

Everything is drawn from one seed, in a fixed order and *independently of the labels*:
rendering class ``a`` and class ``b`` with the same seed and sample count gives both the
same subjects, lengths, speeds, amplitudes, viewpoints and noise, which is what the twin
comparisons (and the app's side-by-side views) rely on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from stdcl.data.layouts import NTU25
from stdcl.data.synth.actions import CLASSES, Ctx, class_meta, class_names, render_motion
from stdcl.data.synth.body import (ANKLE_HEIGHT, BONE_MEAN, SIDE, SWAP, V, Rig, rad)
from stdcl.errors import ConfigError

NUM_CLASSES = len(CLASSES)
SAMPLES_PER_CLASS = 220
#: 13 classes x 220 = 2860 samples: ~154 training samples per class (X-Sub, 28 of 40 subjects)
DEFAULT_NUM_SAMPLES = NUM_CLASSES * SAMPLES_PER_CLASS
DEFAULT_NUM_SUBJECTS = 40
#: Most samples one set may have: the set is generated in memory, ~32 kB a sample (6.5 GB at the limit;
#: NTU RGB+D 120 has 114,480 sequences).
MAX_NUM_SAMPLES = 200_000
#: Longest sequence (frames) the generator draws.
MAX_FRAMES = 1024
FPS = 30.0
BASE_FRAMES = 72.0

_JOINT_NOISE = np.ones(V)  # sensor-noise multiplier per joint (Kinect extremities jitter more)
for _s in (-1, 1):
    for _k, _m in (("wrist", 1.3), ("hand", 1.6), ("ankle", 1.2), ("foot", 1.5), ("thumb", 2.2), ("hand_tip", 2.2)):
        _JOINT_NOISE[SIDE[_s][_k]] = _m


def default_test_subjects(num_subjects: int = DEFAULT_NUM_SUBJECTS) -> list[int]:
    """Held-out subjects of the cross-subject split: ids ending in 3, 6 or 9 (12 of 40)."""
    return [s for s in range(1, num_subjects + 1) if s % 10 in (3, 6, 9)]


@dataclass
class Subjects:
    """Per-subject body and style (arrays indexed by subject id - 1)."""

    lengths: np.ndarray  # (S, V) bone lengths, metres
    scale: np.ndarray  # (S,)
    speed: np.ndarray  # (S,) duration factor
    amp: np.ndarray  # (S,)
    stance: np.ndarray  # (S,) radians
    arm_abd: np.ndarray  # (S,) radians
    lean: np.ndarray  # (S,) radians


def make_subjects(num_subjects: int, seed: int) -> Subjects:
    """Draw ``num_subjects`` bodies; depends only on ``seed`` and the count."""
    rng = np.random.default_rng([seed, 0x5B1])
    S = num_subjects
    scale = np.clip(rng.normal(1.0, 0.06, S), 0.86, 1.14)
    kind = np.clip(rng.normal(0.0, 0.04, (S, V)), -0.1, 0.1)  # per bone type, shared by both sides
    left = [SIDE[-1][k] for k in SIDE[-1]]
    kind[:, SWAP[left]] = kind[:, left]
    side = np.clip(rng.normal(0.0, 0.015, (S, V)), -0.04, 0.04)  # small left/right asymmetry
    lengths = BONE_MEAN[None] * scale[:, None] * (1 + kind + side)
    return Subjects(lengths=lengths, scale=scale, speed=np.exp(rng.normal(0.0, 0.12, S)),
                    amp=np.clip(rng.normal(1.0, 0.05, S), 0.9, 1.1), stance=rad(rng.uniform(2.0, 6.0, S)),
                    arm_abd=rad(rng.uniform(5.0, 11.0, S)), lean=rad(rng.uniform(0.0, 5.0, S)))


def _draw(rng: np.random.Generator, n: int, max_frames: int, max_yaw: float, max_pitch: float) -> dict[str, np.ndarray]:
    """Per-sample draws, in a fixed order (never depends on the labels)."""
    return {
        "speed": np.exp(rng.normal(0.0, 0.18, n)),
        "lead": rng.uniform(0.0, 0.15, (n, 2)),
        "warp": rng.uniform(-0.3, 0.3, n),
        "amp": rng.uniform(0.87, 1.13, n),
        "u": rng.random((n, 4)),
        "yaw": rad(rng.uniform(-max_yaw, max_yaw, n)),
        "pos": np.stack([rng.uniform(-0.4, 0.4, n), rng.uniform(2.6, 3.6, n)], 1),
        "floor_y": rng.uniform(-1.05, -0.6, n),
        "cam_pitch": rad(rng.uniform(0.0, max_pitch, n)),
        "sway": np.stack([rad(rng.uniform(0.4, 1.5, n)), rad(rng.uniform(0.4, 1.5, n)), rng.random(n),
                          rng.uniform(0.15, 0.4, n)], 1),
        "sway2": np.stack([rad(rng.uniform(0.4, 1.5, n)), rad(rng.uniform(0.4, 1.5, n)), rng.random(n),
                           rng.uniform(0.15, 0.4, n)], 1),
        "partner": rng.random(n),
        "sigma": rng.uniform(0.003, 0.010, n),
        "drop": rng.random(n),
        "drop_rate": rng.uniform(0.02, 0.10, n),
        "drop_zero": rng.random(n) < 0.3,
        "drop_u": rng.random((n, max_frames), dtype=np.float32),
    }


def _assign_subjects(n: int, labels: np.ndarray, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Subject of sample i: ``(i // K) % S + 1`` (label-free, so twins share subjects);
    replication: running count per (subject, class)."""
    subjects = (np.arange(n) // NUM_CLASSES) % S + 1
    reps = np.zeros(n, dtype=np.int64)
    seen: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(subjects.tolist(), labels.tolist())):
        seen[key] = seen.get(key, 0) + 1
        reps[i] = seen[key]
    return subjects.astype(np.int64), reps


def _ctx(p: dict[str, np.ndarray], idx: np.ndarray, subj: Subjects, sid: np.ndarray, tau: np.ndarray,
         seconds: np.ndarray, frames: np.ndarray, sway_key: str = "sway") -> Ctx:
    k = sid - 1
    return Ctx(tau=tau, seconds=seconds, amp=subj.amp[k] * p["amp"][idx], u=p["u"][idx], lengths=subj.lengths[k],
               scale=subj.scale[k], stance=subj.stance[k], arm_abd=subj.arm_abd[k], lean=subj.lean[k],
               sway=p[sway_key][idx], frames=frames)


def _local_positions(person, ctx: Ctx) -> np.ndarray:
    """Place a rendered person in the group's floor frame: anchor joints where they stand at
    rest. Returns (V, B, T, 3)."""
    P = person.rig.positions()
    rest = Rig(ctx.lengths, 1, ctx.stance, ctx.arm_abd).positions(False)[:, :, 0]  # (V, B, 3)
    floor = (rest[SIDE[-1]["ankle"]] + rest[SIDE[1]["ankle"]]) / 2
    floor[:, 1] -= ANKLE_HEIGHT * ctx.scale
    anchor = list(person.anchor)
    shift = (rest[anchor].mean(0) - floor)[:, None, :] - P[anchor].mean(0)  # (B, T, 3)
    if person.facing < 0:
        P += shift
        P *= np.array([-1.0, 1.0, -1.0])
        shift = 0.0
    if person.origin is not None:
        shift = shift + person.origin[:, None, :]
    P += shift
    return P


def _to_camera(P: np.ndarray, yaw: np.ndarray, pos: np.ndarray, floor_y: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Body-local (right, up, forward) (V, B, T, 3) -> Kinect camera space (x right, y up, z depth).

    Facing the camera at yaw 0; the group turns by ``yaw`` about its vertical axis and stands
    at floor point (x, z) = ``pos``; the camera is tilted down by ``pitch`` and set at the
    height that puts that floor point at camera-space height ``floor_y``.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cam_h = (pos[:, 1] * sp - floor_y) / cp
    zero = np.zeros_like(c)
    # (r, u, f) -> world: x = r c - f s, y = u, z = -r s - f c; then tilt by the pitch
    m = np.stack([np.stack([c, zero, -s], -1),
                  np.stack([-s * sp, cp, -c * sp], -1),
                  np.stack([-s * cp, -sp, -c * cp], -1)], 1)  # (B, 3, 3): rows x, y, z
    off = np.stack([pos[:, 0], -cam_h * cp + pos[:, 1] * sp, cam_h * sp + pos[:, 1] * cp], -1)
    out = np.matmul(P, m.transpose(0, 2, 1)[None])
    out += off[None, :, None, :]
    return out.astype(np.float32)


def _drop_frames(X: np.ndarray, idx: np.ndarray, p: dict[str, np.ndarray], frames: np.ndarray,
                 drop_prob: float) -> None:
    """Kinect-like dropped frames, in place on X (V, B, T, 3): repeated frames, or zeros."""
    T = X.shape[2]
    t = np.arange(T)[None]
    mask = (p["drop_u"][idx, :T] < p["drop_rate"][idx, None]) & (p["drop"][idx, None] < drop_prob)
    mask &= (t >= 1) & (t < frames[:, None] - 1)
    if not mask.any():
        return
    zero = p["drop_zero"][idx]
    zm = mask & zero[:, None]
    X[:, zm] = 0.0
    rm = mask & ~zero[:, None]
    if rm.any():
        rows = np.flatnonzero(rm.any(1))
        src = np.where(rm[rows], 0, np.arange(T)[None])
        src = np.maximum.accumulate(src, axis=1)
        X[:, rows] = np.take_along_axis(X[:, rows], src[None, :, :, None], 2)


@dataclass
class Compact:
    """Generated set, one array per person slot: ``x1`` (N, C, T, V) first person, ``x2``
    (N2, C, T, V) second persons, ``second`` (N,) row in x2 or -1."""

    x1: np.ndarray
    x2: np.ndarray
    second: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    subjects: np.ndarray
    partners: np.ndarray
    names: list[str]
    test_subjects: list[int]

    def full(self) -> np.ndarray:
        """(N, C, T, V, 2) float32, second person zero for one-person samples (NTU60 style)."""
        n, c, t, v = self.x1.shape
        x = np.zeros((n, c, t, v, 2), dtype=np.float32)
        x[..., 0] = self.x1
        has = self.second >= 0
        x[has, ..., 1] = self.x2[self.second[has]]
        return x

    def sample(self, i: int) -> np.ndarray:
        """(C, T, V, 2) float32 of sample ``i``."""
        x = np.zeros(self.x1.shape[1:] + (2,), dtype=np.float32)
        x[..., 0] = self.x1[i]
        if self.second[i] >= 0:
            x[..., 1] = self.x2[self.second[i]]
        return x


def _whole(value: Any, key: str, low: int, high: int) -> int:
    """An integer option (an integral float such as ``200.0`` too) in ``low..high``, else a one-line ConfigError:
    options come from configs, and a wrong type or a huge size must not reach numpy."""
    if isinstance(value, bool) or not (isinstance(value, (int, np.integer))
                                       or isinstance(value, float) and value.is_integer()):
        raise ConfigError(f"synthetic: {key} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"synthetic: {key} must be in {low:,}..{high:,}, got {value}")
    return int(value)


@dataclass(frozen=True)
class Plan:
    """A set before its motion is rendered: per sample ``labels``, ``subjects``, ``reps`` (repetition),
    ``frames`` (clip length), ``partners`` (the second person's subject) and ``names``; the held-out
    ``test_subjects``, and what rendering draws from (``draws``, ``subj``, ``lead``, ``warp``)."""

    labels: np.ndarray
    subjects: np.ndarray
    reps: np.ndarray
    frames: np.ndarray
    partners: np.ndarray
    names: list[str]
    test_subjects: list[int]
    draws: dict[str, np.ndarray]
    subj: Subjects
    lead: np.ndarray
    warp: np.ndarray


def plan(num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0, *, labels: Sequence[int] | None = None,
         num_subjects: int = DEFAULT_NUM_SUBJECTS, test_subjects: Sequence[int] | None = None,
         min_frames: int = 40, max_frames: int = 100, max_yaw: float = 45.0, max_camera_pitch: float = 10.0,
         timing_jitter: bool = True) -> Plan:
    """Everything of a set but its motion (options checked): cheap, so a set's size, labels, subjects and
    splits are known without rendering it; :func:`synthesize` renders from it."""
    n = _whole(num_samples, "num_samples", 1, MAX_NUM_SAMPLES)
    seed = _whole(seed, "seed", 0, 2**63 - 1)
    num_subjects = _whole(num_subjects, "num_subjects", 2, 100_000)
    min_frames = _whole(min_frames, "min_frames", 2, MAX_FRAMES)
    max_frames = _whole(max_frames, "max_frames", 2, MAX_FRAMES)
    if not 2 <= min_frames <= max_frames:
        raise ConfigError(f"synthetic: need 2 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    if num_subjects < 2:
        raise ConfigError(f"synthetic: num_subjects must be >= 2, got {num_subjects}")
    if labels is None:
        y = np.arange(n, dtype=np.int64) % NUM_CLASSES
    else:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if y.shape != (n,):
            raise ConfigError(f"synthetic: {y.size} labels for {n} samples")
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise ConfigError(f"synthetic: labels must be in 0..{NUM_CLASSES - 1}")
    test = sorted(set(default_test_subjects(num_subjects) if test_subjects is None else
                      (_whole(t, "test_subjects", 1, num_subjects) for t in test_subjects)))
    if not test or len(test) >= num_subjects or min(test) < 1 or max(test) > num_subjects:
        raise ConfigError(f"synthetic: test_subjects must be a proper, non-empty subset of 1..{num_subjects}")

    subj = make_subjects(num_subjects, seed)
    rng = np.random.default_rng(seed)
    p = _draw(rng, n, max_frames, max_yaw, max_camera_pitch)
    sid, reps = _assign_subjects(n, y, num_subjects)
    # partner: another subject on the same side of the split
    is_test = np.isin(sid, test)
    pools = {True: np.array(test), False: np.array([s for s in range(1, num_subjects + 1) if s not in test])}
    partners = np.zeros(n, dtype=np.int64)
    for flag, pool in pools.items():
        rows = np.flatnonzero(is_test == flag)
        if rows.size:
            k = (p["partner"][rows] * (len(pool) - 1)).astype(int)
            own = np.searchsorted(pool, sid[rows])
            partners[rows] = pool[np.where(k >= own, k + 1, k) % len(pool)]
    duration = np.array([c.duration for c in CLASSES])[y]
    frames = np.clip(np.round(BASE_FRAMES * duration * subj.speed[sid - 1] * p["speed"]), min_frames, max_frames)
    frames = frames.astype(np.int64)
    names = [f"SYN_P{s:03d}_A{c + 1:03d}_R{r:03d}" for s, c, r in zip(sid.tolist(), y.tolist(), reps.tolist())]
    return Plan(labels=y, subjects=sid, reps=reps, frames=frames, partners=partners, names=names, test_subjects=test,
                draws=p, subj=subj, lead=p["lead"] if timing_jitter else np.full((n, 2), 0.075),
                warp=p["warp"] if timing_jitter else np.zeros(n))


def synthesize(num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0, *, labels: Sequence[int] | None = None,
               num_subjects: int = DEFAULT_NUM_SUBJECTS, test_subjects: Sequence[int] | None = None,
               min_frames: int = 40, max_frames: int = 100, max_yaw: float = 45.0, max_camera_pitch: float = 10.0,
               noise: float = 1.0, drop_prob: float = 0.35, timing_jitter: bool = True) -> Compact:
    """Generate the set in compact form (see :func:`stdcl.data.synthetic.generate` for the options)."""
    pl = plan(num_samples, seed, labels=labels, num_subjects=num_subjects, test_subjects=test_subjects,
              min_frames=min_frames, max_frames=max_frames, max_yaw=max_yaw, max_camera_pitch=max_camera_pitch,
              timing_jitter=timing_jitter)
    n, y, sid, partners, frames, p, subj = (len(pl.labels), pl.labels, pl.subjects, pl.partners, pl.frames, pl.draws,
                                            pl.subj)
    lead, warp = pl.lead, pl.warp
    seed = _whole(seed, "seed", 0, 2**63 - 1)

    T_all = int(frames.max())
    x1 = np.zeros((n, 3, T_all, V), dtype=np.float32)
    two = np.flatnonzero(np.array([CLASSES[c].persons for c in y]) == 2)
    second = np.full(n, -1, dtype=np.int64)
    second[two] = np.arange(two.size)
    x2 = np.zeros((two.size, 3, T_all, V), dtype=np.float32)
    noise_rng = np.random.default_rng([seed, 0x401])

    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(y == c)
        if idx.size == 0:
            continue
        cls = CLASSES[c]
        L = frames[idx]
        T = int(L.max())
        t = np.arange(T, dtype=float)[None]
        x = np.clip(t / (L[:, None] - 1), 0.0, 1.0)
        a0, a1 = lead[idx, :1], lead[idx, 1:]
        tr = np.clip((x - a0) / (1.0 - a0 - a1), 0.0, 1.0)
        tau = tr - warp[idx, None] * np.sin(2 * np.pi * tr) / (2 * np.pi)
        seconds = np.broadcast_to(t / FPS, tau.shape)
        ctx = _ctx(p, idx, subj, sid[idx], tau, seconds, L)
        ctxs = [ctx]
        if cls.persons == 2:
            ctx.partner = _ctx(p, idx, subj, partners[idx], tau, seconds, L, sway_key="sway2")
            ctxs.append(ctx.partner)
        people = render_motion(cls, ctx)
        base_yaw = 0.0 if cls.persons == 1 else np.pi / 2
        for m, (person, pctx) in enumerate(zip(people, ctxs)):
            P = _local_positions(person, pctx)
            X = _to_camera(P, p["yaw"][idx] + base_yaw, p["pos"][idx], p["floor_y"][idx], p["cam_pitch"][idx])
            if noise > 0:
                sig = (noise * p["sigma"][idx]).astype(np.float32)[None, :, None, None] \
                    * _JOINT_NOISE.astype(np.float32)[:, None, None, None]
                X += noise_rng.standard_normal(X.shape, dtype=np.float32) * sig
            if drop_prob > 0:
                _drop_frames(X, idx, p, L, drop_prob)
            X[:, np.arange(T)[None] >= L[:, None]] = 0.0
            out = np.zeros((idx.size, 3, T_all, V), dtype=np.float32)
            out[:, :, :T] = X.transpose(1, 3, 2, 0)  # (B, C, T, V)
            if m == 0:
                x1[idx] = out
            else:
                x2[second[idx]] = out

    return Compact(x1=x1, x2=x2, second=second, labels=y, lengths=frames, subjects=sid,
                   partners=np.where(second >= 0, partners, 0), names=pl.names, test_subjects=pl.test_subjects)


def to_arrays(comp: Compact) -> dict[str, Any]:
    """The plain-numpy dictionary of a generated set (see :mod:`stdcl.data.synthetic`)."""
    test = np.isin(comp.subjects, comp.test_subjects)
    return {
        "x": comp.full(),
        "y": comp.labels.astype(np.int64),
        "names": np.array(comp.names),
        "class_names": np.array(class_names()),
        "layout": np.array(NTU25.name),
        "lengths": comp.lengths.astype(np.int64),
        "subjects": comp.subjects.astype(np.int64),
        "split_train": np.flatnonzero(~test).astype(np.int64),
        "split_test": np.flatnonzero(test).astype(np.int64),
        "class_meta": np.array(json.dumps(class_meta())),
    }
