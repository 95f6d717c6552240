"""The action library of the synthetic teaching set: 13 classes built as 6 twin pairs + 1.

Every motion is a function of the *action time* ``tau`` in [0, 1] (per sample and frame)
and a few per-sample parameters (amplitude, a handful of uniforms), returning one
:class:`~stdcl.data.synth.body.Rig` per person. Twins are derived, never re-written:

- a *spatial* twin renders its partner's motion mirrored left <-> right (same timing,
  other side of the body);
- a *temporal* twin renders its partner's motion with ``tau -> 1 - tau`` (same poses,
  reversed direction or swapped order) or with another tempo (same poses, more cycles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from stdcl.data.synth.body import ANKLE_HEIGHT, HEAD, SIDE, SS, F, R, Rig, U, keyframes, limb, rad, unit, vec

LEFT, RIGHT = -1, 1


@dataclass
class Ctx:
    """Per-sample inputs of a motion (B samples, T frames)."""

    tau: np.ndarray  # (B, T) action time in [0, 1]
    seconds: np.ndarray  # (B, T) frame time in seconds (30 fps)
    amp: np.ndarray  # (B,) amplitude factor around 1
    u: np.ndarray  # (B, 4) uniforms in [0, 1) for class-specific choices
    lengths: np.ndarray  # (B, V) bone lengths
    scale: np.ndarray  # (B,) body height factor
    stance: np.ndarray  # (B,) leg abduction, radians
    arm_abd: np.ndarray  # (B,) arm abduction at rest, radians
    lean: np.ndarray  # (B,) habitual forward lean, radians
    sway: np.ndarray  # (B, 4): pitch amp, roll amp (radians), phase, frequency (Hz)
    frames: np.ndarray  # (B,) valid frames of each sample
    partner: "Ctx | None" = None  # the second person of interactions

    @property
    def B(self) -> int:
        return self.tau.shape[0]

    @property
    def T(self) -> int:
        return self.tau.shape[1]

    def rig(self) -> Rig:
        return Rig(self.lengths, self.T, self.stance, self.arm_abd)

    def idle(self) -> tuple[np.ndarray, np.ndarray]:
        """Habitual lean plus a slow postural sway: (pitch, roll), (B, T) each."""
        ph = 2 * np.pi * (self.sway[:, 3:4] * self.seconds) + 2 * np.pi * self.sway[:, 2:3]
        pitch = self.lean[:, None] + self.sway[:, 0:1] * np.sin(ph)
        roll = self.sway[:, 1:2] * np.sin(0.7 * ph + 1.0)
        return pitch, roll

    def col(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, float)[:, None]


@dataclass
class Person:
    """One rendered person: pose, the joints that stay on the ground, and placement in the
    group frame (``origin``: (B, 3) floor point; ``facing``: +1 as the first person, -1 turned
    to face the first person)."""

    rig: Rig
    anchor: tuple[int, ...]
    origin: np.ndarray | None = None
    facing: int = 1


Motion = Callable[..., list[Person]]
FEET = (SIDE[LEFT]["ankle"], SIDE[RIGHT]["ankle"])


def _arm_pole(side: int, back: float = 0.4, down: float = 0.8, out: float = 0.5) -> np.ndarray:
    return unit(side * out * R - down * U - back * F)


# --------------------------------------------------------------------------------------------
# motions (primary side: left)
# --------------------------------------------------------------------------------------------
def wave(c: Ctx) -> list[Person]:
    """Raise the left forearm beside the head and wave it 3-4 times, then lower it."""
    rig = c.rig()
    pitch, roll = c.idle()
    rig.torso(pitch, roll)
    w = keyframes(c.tau, [0, 0.22, 0.8, 1], [0, 1, 1, 0])
    tw = np.clip((c.tau - 0.22) / 0.58, 0, 1)
    k = c.col(3 + (c.u[:, 0] > 0.5))
    osc = np.sin(2 * np.pi * k * tw)
    amp = c.col(c.amp)
    upper = limb(rad(5 + 15 * w), rad(8 + 72 * w * np.clip(amp, 0.8, 1.15)), LEFT)
    fore = limb(rad(12 - 2 * w), rad(4 + 161 * w + 24 * amp * osc * w), LEFT)
    rig.set_arm(LEFT, upper, fore, supination=rad(90) * w)
    return [Person(rig, FEET)]


def kick(c: Ctx) -> list[Person]:
    """Chamber the left knee, snap the lower leg forward, re-chamber, put the foot down."""
    rig = c.rig()
    pitch, roll = c.idle()
    amp = c.col(np.clip(c.amp, 0.8, 1.2))
    times = [0, 0.3, 0.45, 0.6, 0.85, 1]
    thigh = keyframes(c.tau, times, [0, 55, 75, 55, 0, 0]) * amp
    knee = keyframes(c.tau, times, [0, 95, 5, 90, 0, 0])
    w = keyframes(c.tau, [0, 0.3, 0.6, 0.85, 1], [0, 1, 1, 0, 0])
    rig.torso(pitch - rad(10) * w, roll)
    rig.set_leg(LEFT, limb(rad(thigh), c.col(c.stance), LEFT), limb(rad(thigh - knee), c.col(c.stance), LEFT))
    for s in (LEFT, RIGHT):  # arms out for balance
        upper = limb(rad(3 + 10 * w), c.col(c.arm_abd) + rad(22) * w, s)
        fore = limb(rad(12 + 30 * w), c.col(c.arm_abd) * 0.5 + rad(25) * w, s)
        rig.set_arm(s, upper, fore)
    return [Person(rig, (SIDE[RIGHT]["ankle"],))]


def raise_arm(c: Ctx) -> list[Person]:
    """Lift the straight left arm sideways above the head, hold it, lower it."""
    rig = c.rig()
    pitch, roll = c.idle()
    rig.torso(pitch, roll)
    w = keyframes(c.tau, [0, 0.4, 0.6, 1], [0, 1, 1, 0])
    top = np.clip(150 + 20 * (c.col(c.amp) - 1) / 0.15, 140, 172)
    abd = c.col(c.arm_abd) + (rad(top) - c.col(c.arm_abd)) * w
    rig.set_arm(LEFT, limb(rad(3 + 4 * w), abd, LEFT), limb(rad(12 - 6 * w), abd * (0.5 + 0.5 * w) + rad(4) * w, LEFT))
    return [Person(rig, FEET)]


def sit_down(c: Ctx) -> list[Person]:
    """From standing, lower the hips onto an (invisible) chair, leaning forward on the way;
    hands come to rest on the thighs."""
    rig = c.rig()
    pitch, roll = c.idle()
    s = keyframes(c.tau, [0, 0.1, 0.9, 1], [0, 0, 1, 1])
    mid = np.sin(np.pi * s)
    depth = c.col(np.clip(c.amp, 0.85, 1.15))
    thigh = rad(86) * depth * s
    shin = rad(4) * s + rad(12) * mid
    rig.torso(pitch + rad(8) * s + rad(32) * mid, roll)
    for side in (LEFT, RIGHT):
        st = c.col(c.stance)
        rig.set_leg(side, limb(thigh, st, side), limb(shin, st, side))
        upper = limb(rad(3) + rad(22) * s + rad(35) * mid, c.col(c.arm_abd), side)
        fore = limb(rad(12) + rad(60) * s + rad(25) * mid, c.col(c.arm_abd) * 0.5, side)
        rig.set_arm(side, upper, fore)
    return [Person(rig, FEET)]


def clap(c: Ctx, fast: bool = False) -> list[Person]:
    """Bring both hands in front of the chest and clap 2-3 times (``fast``: 5-7 times in the
    same time), then lower the arms."""
    rig = c.rig()
    pitch, roll = c.idle()
    rig.torso(pitch, roll)
    P = rig.positions(False)
    rest = {s: P[SIDE[s]["wrist"]] for s in (LEFT, RIGHT)}
    w = keyframes(c.tau, [0, 0.15, 0.85, 1], [0, 1, 1, 0])[..., None]
    tc = np.clip((c.tau - 0.15) / 0.7, 0, 1)
    k = c.col(2 + ((c.u[:, 0] > 0.5) & (c.frames >= 75)))  # 2 or 3 slow claps (3 only in long clips)
    if fast:
        k = 2 * k + 1  # 5 or 7: same poses, ~2.5x the tempo
    sep = (1 + np.cos(2 * np.pi * k * tc)) / 2  # 1 open, 0 hands together
    sc = c.col(c.scale)[..., None]
    centre = P[SS] + vec(0, -0.16, 0.30) * sc
    width = (0.055 + 0.2 * sep * c.col(np.clip(c.amp, 0.8, 1.2)))[..., None] * sc
    for s in (LEFT, RIGHT):
        target = (1 - w) * rest[s] + w * (centre + width * (s * R))
        rig.reach(s, target, _arm_pole(s, back=0.3, down=0.8, out=0.6), supination=rad(70) * w[..., 0], P=P)
    return [Person(rig, FEET)]


def touch_head_knees(c: Ctx) -> list[Person]:
    """Put both hands on top of the head, then bend forward and put them on the knees,
    then stand up straight again."""
    rig = c.rig()
    pitch, roll = c.idle()
    times = [0, 0.18, 0.36, 0.64, 0.82, 1]
    w_head = keyframes(c.tau, times, [0, 1, 1, 0, 0, 0])
    w_knee = keyframes(c.tau, times, [0, 0, 0, 1, 1, 0])
    w_rest = 1 - w_head - w_knee
    bend = rad(68) * c.col(np.clip(c.amp, 0.85, 1.1))
    rig.torso(pitch + bend * w_knee - rad(4) * w_head, roll, head_pitch=-rad(25) * w_knee)
    for s in (LEFT, RIGHT):
        st = c.col(c.stance)
        rig.set_leg(s, limb(rad(18) * w_knee, st, s), limb(-rad(10) * w_knee, st, s))
    P = rig.positions(False)
    sc = c.col(c.scale)[..., None]
    for s in (LEFT, RIGHT):
        j = SIDE[s]
        rest = P[j["wrist"]]  # the arm hanging straight down
        head = P[HEAD] + vec(s * 0.09, 0.07, -0.01) * sc
        knee = P[j["knee"]] + vec(s * 0.01, 0.11, 0.06) * sc
        target = w_rest[..., None] * rest + w_head[..., None] * head + w_knee[..., None] * knee
        pole = (w_rest[..., None] * _arm_pole(s, back=0.6, down=0.8, out=0.3)
                + w_head[..., None] * unit(s * R + 0.2 * U - 0.1 * F)
                + w_knee[..., None] * unit(s * 0.8 * R + 0.4 * U - 0.4 * F))
        rig.reach(s, target, pole, P=P)
    return [Person(rig, FEET)]


def handshake(c: Ctx) -> list[Person]:
    """Two people facing each other reach out with their right hands, shake three times
    and let go."""
    p = c.partner
    assert p is not None
    sc = (c.scale + p.scale) / 2
    dist = (0.70 + 0.12 * c.u[:, 2]) * sc
    height = (0.90 + 0.06 * (c.u[:, 3] - 0.5)) * sc
    lag = 0.08 * (c.u[:, 1] - 0.5)
    pumps = 3
    people = []
    for who, ctx, delay in ((0, c, np.zeros(c.B)), (1, p, lag)):
        tau = np.clip(ctx.tau - delay[:, None], 0, 1)
        rig = ctx.rig()
        pitch, roll = ctx.idle()
        w = keyframes(tau, [0, 0.3, 0.8, 1], [0, 1, 1, 0])
        rig.torso(pitch + rad(6) * w, roll)
        P = rig.positions(False)
        ts = np.clip((c.tau - 0.35) / 0.4, 0, 1)  # pumps share the first person's clock
        # meeting point in this person's own frame: half the distance ahead, on the midline
        meet = vec(np.zeros_like(ts), (height[:, None] + 0.045 * np.sin(2 * np.pi * pumps * ts)), dist[:, None] / 2)
        meet_rel = floor_to_root(ctx, P, meet)
        S = P[SIDE[RIGHT]["shoulder"]]
        to_meet = unit(meet_rel - S)
        grip = meet_rel - to_meet * ctx.lengths[:, None, SIDE[RIGHT]["hand"], None] * 0.8
        target = (1 - w[..., None]) * P[SIDE[RIGHT]["wrist"]] + w[..., None] * grip
        rig.reach(RIGHT, target, _arm_pole(RIGHT, back=0.5, down=0.8, out=0.4), supination=rad(90) * w, P=P)
        origin = np.zeros((c.B, 3))
        origin[:, 2] = -dist / 2 if who == 0 else dist / 2
        people.append(Person(rig, FEET, origin, 1 if who == 0 else -1))
    return people


def floor_to_root(c: Ctx, P: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Points ``X`` (B, T, 3) given in a feet-anchored person's floor frame (origin on the
    floor under the ankles), expressed relative to the root of the pose ``P`` (V, B, T, 3)."""
    mid = (P[SIDE[LEFT]["ankle"]] + P[SIDE[RIGHT]["ankle"]]) / 2
    return X + mid - vec(0.0, ANKLE_HEIGHT, 0.0) * c.col(c.scale)[..., None]


# --------------------------------------------------------------------------------------------
# the class table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActionClass:
    """One class: its motion and how it relates to its twin."""

    name: str
    motion: Motion
    description: str
    twin: int | None = None
    twin_type: str | None = None  # "spatial" | "temporal" | None
    contrast: str = ""  # what differs from the twin, in words
    persons: int = 1
    mirror: bool = False  # render ``motion`` mirrored left <-> right
    reverse: bool = False  # render ``motion`` with tau -> 1 - tau
    options: dict[str, Any] = field(default_factory=dict)
    duration: float = 1.0  # typical length relative to the default

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "twin": self.twin, "twin_type": self.twin_type, "persons": self.persons,
                "description": self.description, "contrast": self.contrast}


def _pair(a: dict, b: dict, twin_type: str, first: int) -> list[ActionClass]:
    return [ActionClass(**a, twin=first + 1, twin_type=twin_type),
            ActionClass(**b, twin=first, twin_type=twin_type)]


_SIDE = "only the side of the body differs: same motion and timing, mirrored"
CLASSES: tuple[ActionClass, ...] = tuple(
    _pair(dict(name="wave left hand", motion=wave, contrast=_SIDE,
               description="raises the left forearm beside the head and waves 3-4 times, then lowers it"),
          dict(name="wave right hand", motion=wave, mirror=True, contrast=_SIDE,
               description="raises the right forearm beside the head and waves 3-4 times, then lowers it"),
          "spatial", 0)
    + _pair(dict(name="kick left leg", motion=kick, contrast=_SIDE,
                 description="chambers the left knee, snaps the lower leg forward, re-chambers, steps back down"),
            dict(name="kick right leg", motion=kick, mirror=True, contrast=_SIDE,
                 description="chambers the right knee, snaps the lower leg forward, re-chambers, steps back down"),
            "spatial", 2)
    + _pair(dict(name="raise left arm", motion=raise_arm, contrast=_SIDE,
                 description="lifts the straight left arm sideways above the head, holds it, lowers it"),
            dict(name="raise right arm", motion=raise_arm, mirror=True, contrast=_SIDE,
                 description="lifts the straight right arm sideways above the head, holds it, lowers it"),
            "spatial", 4)
    + _pair(dict(name="sit down", motion=sit_down, contrast="same poses, reversed in time",
                 description="from standing, leans forward and lowers the hips onto a chair"),
            dict(name="stand up", motion=sit_down, reverse=True, contrast="same poses, reversed in time",
                 description="from sitting, leans forward and rises to standing"),
            "temporal", 6)
    + _pair(dict(name="clap slowly", motion=clap, duration=1.15, contrast="same poses, ~2.5x the tempo",
                 description="brings both hands before the chest and claps 2-3 times, then lowers the arms"),
            dict(name="clap fast", motion=clap, options={"fast": True}, duration=1.15,
                 contrast="same poses, ~2.5x the tempo",
                 description="brings both hands before the chest and claps 5-7 times, then lowers the arms"),
            "temporal", 8)
    + _pair(dict(name="touch head then knees", motion=touch_head_knees, duration=1.2,
                 contrast="same poses, in the opposite order",
                 description="puts both hands on the head, then bends to put them on the knees, then straightens"),
            dict(name="touch knees then head", motion=touch_head_knees, reverse=True, duration=1.2,
                 contrast="same poses, in the opposite order",
                 description="bends to put both hands on the knees, then straightens and puts them on the head"),
            "temporal", 10)
    + [ActionClass(name="shake hands", motion=handshake, persons=2, duration=1.15,
                   description="two people facing each other shake right hands (three pumps)")]
)


def class_names() -> list[str]:
    """Names of the synthetic classes, label order."""
    return [c.name for c in CLASSES]


def class_meta() -> list[dict[str, Any]]:
    """Per class: name, twin (class index or None), twin_type, persons, description, contrast."""
    return [c.meta() for c in CLASSES]


def render_motion(cls: ActionClass, ctx: Ctx) -> list[Person]:
    """Run a class's motion with its twin transform (mirror / reverse) applied."""
    if cls.reverse:
        ctx = _reversed(ctx)
    people = cls.motion(ctx, **cls.options)
    if cls.mirror:
        from stdcl.data.synth.body import SWAP

        out = []
        for p in people:
            origin = None if p.origin is None else p.origin * np.array([-1.0, 1.0, 1.0])
            out.append(Person(p.rig.mirrored(), tuple(int(SWAP[a]) for a in p.anchor), origin, p.facing))
        people = out
    return people


def _reversed(c: Ctx) -> Ctx:
    from dataclasses import replace

    partner = None if c.partner is None else _reversed(c.partner)
    return replace(c, tau=1.0 - c.tau, partner=partner)
