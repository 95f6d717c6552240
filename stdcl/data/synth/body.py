"""Body model of the synthetic generator: the ``ntu25`` bone tree, vector helpers, a
vectorised pose builder (:class:`Rig`) with forward and two-bone inverse kinematics.

Everything here works on batches: ``(B, T, 3)`` vectors for B samples and T frames, in a
*body-local* frame whose components are ``(r, u, f)``: the person's right, up, and the
direction the person faces. The generator maps that frame to Kinect camera space later.

A pose is a unit *direction* per joint (from its parent to it, along the layout's bone
tree, :attr:`stdcl.data.layouts.Layout.parents`); positions come from forward kinematics
with one fixed length per bone and subject, so bone lengths are constant over time by
construction.
"""

from __future__ import annotations

import numpy as np

from stdcl.data.layouts import NTU25

V = NTU25.num_joints
PARENTS = NTU25.parents
ROOT = NTU25.center  # spine_shoulder

J = {name: i for i, name in enumerate(NTU25.joints)}
SB, SM, NECK, HEAD, SS = J["spine_base"], J["spine_mid"], J["neck"], J["head"], J["spine_shoulder"]

#: per side (-1 left, +1 right): the joints of one arm and one leg
SIDE = {
    s: {k: J[f"{p}_{k}"] for k in ("shoulder", "elbow", "wrist", "hand", "hand_tip", "thumb",
                                    "hip", "knee", "ankle", "foot")}
    for s, p in ((-1, "l"), (1, "r"))
}

#: left <-> right joint permutation (mirror twins)
SWAP = np.arange(V)
for _k in SIDE[-1]:
    SWAP[SIDE[-1][_k]], SWAP[SIDE[1][_k]] = SIDE[1][_k], SIDE[-1][_k]

#: FK order: every joint after its parent
ORDER: list[int] = []
_frontier = [ROOT]
while _frontier:
    _j = _frontier.pop(0)
    ORDER.append(_j)
    _frontier.extend(int(c) for c in np.flatnonzero(PARENTS == _j))
FK_ORDER = ORDER[1:]

R = np.array([1.0, 0.0, 0.0])
U = np.array([0.0, 1.0, 0.0])
F = np.array([0.0, 0.0, 1.0])

#: mean bone length per joint (bone to its parent), metres, Kinect v2-like proportions
BONE_MEAN = np.zeros(V)
for _name, _len in {"spine_base": 0.27, "spine_mid": 0.20, "neck": 0.07, "head": 0.13, "shoulder": 0.15,
                    "elbow": 0.26, "wrist": 0.235, "hand": 0.07, "thumb": 0.045, "hand_tip": 0.042,
                    "hip": 0.075, "knee": 0.35, "ankle": 0.36, "foot": 0.11}.items():
    if _name in J:
        BONE_MEAN[J[_name]] = _len
    else:
        for _s in (-1, 1):
            BONE_MEAN[SIDE[_s][_name]] = _len
ANKLE_HEIGHT = 0.075  # ankle joint above the floor for a scale-1 body


def rad(deg):
    """Degrees to radians (works on arrays)."""
    return np.deg2rad(deg)


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(a, b)
    return np.einsum("...i,...i->...", a, b)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, dtype=np.result_type(a, b))
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    out[..., 0] = a1 * b2 - a2 * b1
    out[..., 1] = a2 * b0 - a0 * b2
    out[..., 2] = a0 * b1 - a1 * b0
    return out


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.sqrt(dot(a, a))[..., None]


def vec(r, u, f) -> np.ndarray:
    """Stack broadcastable components into (..., 3) vectors."""
    r, u, f = np.broadcast_arrays(np.asarray(r, float), np.asarray(u, float), np.asarray(f, float))
    return np.stack([r, u, f], -1)


def limb(flex, abd, side: int) -> np.ndarray:
    """Unit limb direction: from straight down, ``flex`` radians towards the front, then
    ``abd`` radians towards the person's ``side`` (-1 left, +1 right); 180 deg is straight up."""
    flex, abd = np.asarray(flex, float), np.asarray(abd, float)
    c = np.cos(flex)
    return vec(side * c * np.sin(abd), -c * np.cos(abd), np.sin(flex))


def rotate_min(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rotate ``x`` by the smallest rotation taking unit ``a`` to unit ``b`` (a != -b)."""
    v = cross(a, b)
    c = dot(a, b)[..., None]
    return x * c + cross(v, x) + v * (dot(v, x)[..., None] / (1.0 + c))


def rotate_axis(x: np.ndarray, axis: np.ndarray, angle) -> np.ndarray:
    """Rotate ``x`` about unit ``axis`` by ``angle`` (Rodrigues)."""
    ang = np.asarray(angle, float)[..., None]
    cs, sn = np.cos(ang), np.sin(ang)
    return x * cs + cross(axis, x) * sn + axis * dot(axis, x)[..., None] * (1 - cs)


def keyframes(tau: np.ndarray, times, values) -> np.ndarray:
    """Smooth (smoothstep) interpolation of keyframe ``values`` at ``times`` for ``tau`` (B, T).

    ``values`` is ``(K,)`` (shared) or ``(B, K)`` (per sample); ``times`` ascending in [0, 1].
    """
    times = np.asarray(times, float)
    values = np.asarray(values, float)
    k = np.clip(np.searchsorted(times, tau, side="right") - 1, 0, len(times) - 2)
    t0, t1 = times[k], times[k + 1]
    s = np.clip((tau - t0) / (t1 - t0), 0.0, 1.0)
    s = s * s * (3 - 2 * s)
    if values.ndim == 1:
        v0, v1 = values[k], values[k + 1]
    else:
        v0 = np.take_along_axis(values, k, 1)
        v1 = np.take_along_axis(values, k + 1, 1)
    return v0 + (v1 - v0) * s


# --- hands and feet: rigid offsets transported along the limb ---------------------------
_THUMB_ANGLE = rad(35.0)


def _hand_rest(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Thumb and hand-tip bone directions for the T-pose arm of ``side`` (palm down)."""
    out = side * R
    thumb = np.cos(_THUMB_ANGLE) * out + np.sin(_THUMB_ANGLE) * F
    tip_pos = BONE_MEAN[J["l_hand"]] * out
    tip = unit(tip_pos - BONE_MEAN[J["l_thumb"]] * thumb)
    return thumb, tip


_HAND_REST = {s: _hand_rest(s) for s in (-1, 1)}


class Rig:
    """A batch of poses under construction: unit bone directions ``d`` (V, B, T, 3).

    Joint-major storage keeps each joint's (B, T, 3) block contiguous. Hands (thumb, hand
    tip) and feet follow the forearm and shin and are filled in by :meth:`positions`.

    Args:
        lengths: (B, V) bone length per joint and sample (the root's is ignored).
        T: number of frames.
        stance: (B,) leg abduction (radians) of the neutral standing pose.
        arm_abd: (B,) arm abduction (radians) of the neutral standing pose.
    """

    def __init__(self, lengths: np.ndarray, T: int, stance: np.ndarray, arm_abd: np.ndarray):
        self.lengths = np.asarray(lengths, float)
        B = self.lengths.shape[0]
        self.B, self.T = B, T
        self.stance = np.asarray(stance, float)[:, None]
        self.arm_abd = np.asarray(arm_abd, float)[:, None]
        self.d = np.zeros((V, B, T, 3))
        self.supination = {-1: 0.0, 1: 0.0}
        self.torso(np.zeros((B, T)), np.zeros((B, T)))
        for s in (-1, 1):
            self.set_arm(s, *self.rest_arm(s))
            self.set_leg(s, *self.rest_leg(s))

    # -- neutral pose ---------------------------------------------------------------------
    def rest_arm(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Hanging arm: upper-arm and forearm directions, (B, T, 3) each."""
        shape = (self.B, self.T)
        upper = limb(np.full(shape, rad(3.0)), np.broadcast_to(self.arm_abd, shape), side)
        fore = limb(np.full(shape, rad(12.0)), np.broadcast_to(self.arm_abd * 0.5, shape), side)
        return upper, fore

    def rest_leg(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Straight standing leg: thigh and shin directions, (B, T, 3) each."""
        shape = (self.B, self.T)
        d = limb(np.zeros(shape), np.broadcast_to(self.stance, shape), side)
        return d, d

    # -- body parts -----------------------------------------------------------------------
    def torso(self, pitch: np.ndarray, roll: np.ndarray, head_pitch: np.ndarray | float = 0.0) -> None:
        """Bend the trunk ``pitch`` radians forward and ``roll`` towards the right; the pelvis
        follows 70 % of the pitch, shoulders, neck and head all of it."""
        pitch, roll = np.asarray(pitch, float), np.asarray(roll, float)

        def up(p, r):
            cp = np.cos(p)
            return vec(np.sin(r) * cp, np.cos(r) * cp, np.sin(p))

        tu = up(pitch, roll)
        pu = up(0.7 * pitch, 0.7 * roll)
        lat = vec(np.cos(roll), -np.sin(roll), np.zeros_like(roll))
        self.d[SM] = -tu
        self.d[SB] = -pu
        self.d[NECK] = tu
        self.d[HEAD] = up(pitch + head_pitch, roll) if np.any(head_pitch) else tu
        for s in (-1, 1):
            self.d[SIDE[s]["shoulder"]] = unit(s * lat - 0.2 * tu)
            self.d[SIDE[s]["hip"]] = unit(0.9 * s * lat - 0.45 * pu)

    def set_arm(self, side: int, upper: np.ndarray, fore: np.ndarray, supination=0.0) -> None:
        """Set one arm from upper-arm and forearm directions (B, T, 3); the hand continues
        the forearm (``supination``, radians, turns the thumb up)."""
        j = SIDE[side]
        self.d[j["elbow"]] = upper
        self.d[j["wrist"]] = fore
        self.d[j["hand"]] = fore
        self.supination[side] = supination

    def set_leg(self, side: int, thigh: np.ndarray, shin: np.ndarray) -> None:
        """Set one leg from thigh and shin directions (B, T, 3); the foot follows the shin."""
        j = SIDE[side]
        self.d[j["knee"]] = thigh
        self.d[j["ankle"]] = shin

    def _extremities(self) -> None:
        """Thumb, hand tip and foot directions carried along from the limb directions."""
        for side in (-1, 1):
            j = SIDE[side]
            upper, fore = self.d[j["elbow"]], self.d[j["wrist"]]
            thumb, tip = _HAND_REST[side]
            out = side * R
            sup = np.broadcast_to(np.asarray(self.supination[side], float), upper.shape[:-1])
            if np.any(sup):
                thumb = rotate_axis(np.broadcast_to(thumb, upper.shape), out, -side * sup)
                tip = rotate_axis(np.broadcast_to(tip, upper.shape), out, -side * sup)
            # T-pose -> upper arm (never the medial direction), then the elbow bend (< 180 deg)
            x = np.stack(np.broadcast_arrays(thumb, tip, upper)[:2])  # (2, B, T, 3)
            x = rotate_min(out, upper, x)
            x = rotate_min(upper, fore, x)
            self.d[j["thumb"]], self.d[j["hand_tip"]] = x[0], x[1]
            foot_rest = unit(F - 0.35 * U + 0.1 * side * R)
            self.d[j["foot"]] = rotate_min(-U, self.d[j["ankle"]], foot_rest)

    # -- kinematics -----------------------------------------------------------------------
    def positions(self, extremities: bool = True) -> np.ndarray:
        """Forward kinematics: (V, B, T, 3) positions with the root (spine shoulder) at 0.
        ``extremities=False`` skips hands and feet (their positions are then meaningless)."""
        if extremities:
            self._extremities()
        P = np.zeros_like(self.d)
        ln = self.lengths.T[:, :, None, None]
        for j in FK_ORDER:
            np.multiply(ln[j], self.d[j], out=P[j])
            P[j] += P[PARENTS[j]]
        return P

    def reach(self, side: int, target: np.ndarray, pole: np.ndarray, supination=0.0,
              P: np.ndarray | None = None) -> None:
        """Two-bone IK: put the wrist of ``side`` at ``target`` (B, T, 3, root-relative),
        the elbow bending towards ``pole``. Unreachable targets are approached as far as the arm goes."""
        j = SIDE[side]
        P = self.positions(False) if P is None else P
        S = P[j["shoulder"]]
        a = self.lengths[:, None, j["elbow"]]
        b = self.lengths[:, None, j["wrist"]]
        upper, fore = two_bone(S, target, a, b, pole)
        self.set_arm(side, upper, fore, supination)

    def mirrored(self) -> "Rig":
        """The left-right mirror image of the pose (same bone lengths per joint)."""
        out = object.__new__(Rig)
        out.__dict__.update(self.__dict__)
        out.d = self.d[SWAP]
        out.d[..., 0] *= -1.0
        out.supination = {-1: self.supination[1], 1: self.supination[-1]}
        return out


def two_bone(S: np.ndarray, target: np.ndarray, a: np.ndarray, b: np.ndarray,
             pole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions (upper, lower) of a two-bone chain from ``S`` reaching ``target``.

    ``a``, ``b``: bone lengths broadcastable to (B, T); ``pole``: where the middle joint points.
    """
    d = target - S
    dist = np.linalg.norm(d, axis=-1)
    e = d / np.maximum(dist, 1e-9)[..., None]
    dc = np.clip(dist, np.abs(a - b) + 1e-3, (a + b) * 0.999)
    cos_a = np.clip((a * a + dc * dc - b * b) / (2 * a * dc), -1.0, 1.0)
    sin_a = np.sqrt(1.0 - cos_a * cos_a)
    pole = np.broadcast_to(pole, d.shape)
    m = pole - dot(pole, e)[..., None] * e
    m = m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-9)
    upper = cos_a[..., None] * e + sin_a[..., None] * m
    mid = S + a[..., None] * upper
    lower = unit(S + dc[..., None] * e - mid)
    return unit(upper), lower
