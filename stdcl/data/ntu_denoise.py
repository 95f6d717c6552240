"""CTR-GCN's (SGN's) body selection and centring for one NTU sample, reproduced exactly.

The steps and their quirks, all kept on purpose so that the output matches the
reference ``data/ntu/get_raw_*.py`` + ``seq_transformation.py`` bit for bit:

- zero-body frames are dropped; the remaining frames are renumbered 0..T-1;
- a body's *interval* starts at the frame it first appears and then counts one frame per
  occurrence, so a body that leaves and comes back is written contiguously from its first
  frame (the gap is closed, its later frames are shifted earlier);
- motion (only when the file has 2+ body IDs) is ``sum(var(joints))`` over all its joints
  and frames, in float32;
- denoising (2+ body IDs only), in order of first appearance: drop bodies of <= 11
  frames; then drop a body whose ratio of frames with x-extent > 0.8 y-extent is >=
  0.69754, stopping as soon as one body is left (the survivor is never checked); a body
  with some noisy frames gets its motion lowered to that of its clean frames; the rest are
  sorted by motion, descending (stable: ties keep their order of appearance);
- actor 1 is the first body; each further body goes into actor 1's slot when
  ``min(end1, end) - max(start1, start) <= 0`` (so intervals sharing one frame count as
  not overlapping and the later body overwrites that frame), else into actor 2's slot by
  the same test against actor 2's interval, which starts as the virtual ``[0, 0]`` and
  whose start therefore stays 0; otherwise the body is discarded;
- for files with 2+ body IDs, frames whose float32 coordinate *sum* is 0 are removed (all
  missing in practice); a file with one body ID is never filtered;
- centring subtracts joint 2 of the first frame where actor 1 has a non-zero coordinate;
  afterwards each actor's frames whose (pre-centring) sum was 0 are set back to zero.

The spread test multiplies the float32 y-extent by 0.8 in float32, as NumPy >= 2 does
when running the reference (NumPy 1.x promoted to float64; the two can only differ when
the x-extent is within one float32 ulp of 0.8 times the y-extent).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from stdcl.data.ntu_raw import NUM_JOINTS, SkeletonFile, parse_skeleton
from stdcl.errors import DataError

NOISE_LEN_THRES = 11
NOISE_SPR_THRES1 = 0.8
NOISE_SPR_THRES2 = 0.69754

#: dropped-body reasons, as reported in summaries
DROP_LENGTH = "length <= 11 frames"
DROP_SPREAD = "spread ratio >= 0.69754"
DROP_NO_SLOT = "overlaps both actors"


class UnusableSample(DataError):
    """A well-formed file the reference pipeline cannot turn into a sample (it crashes)."""


@dataclass
class BodyTrack:
    """All occurrences of one bodyID, as the reference keeps them."""

    body_id: str
    joints: np.ndarray  # (n * 25, 3) float32, C-contiguous
    start: int  # first valid frame; the interval is start .. start + n - 1
    n: int
    motion: np.float32 | None = None

    @property
    def end(self) -> int:
        return self.start + self.n - 1


@dataclass
class DenoiseResult:
    """One sample after body selection (and centring when requested)."""

    name: str
    joints: np.ndarray  # (T, 75) one actor or (T, 150) two actors, float32
    frames_declared: int
    zero_body_frames: list[int]  # 0-based frame indices in the file
    removed_frames: list[int]  # valid-frame indices removed because both actors were missing
    dropped_bodies: list[tuple[str, str, str]]  # (bodyID, reason, detail)
    discarded_bodies: list[str] = field(default_factory=list)  # kept bodies without a free slot
    actor1: list[str] = field(default_factory=list)
    actor2: list[str] = field(default_factory=list)
    num_body_ids: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.joints.shape[0])

    def log_lines(self) -> list[str]:
        """Human-readable details of what was dropped (empty when nothing was)."""
        out = []
        if self.zero_body_frames:
            out.append(f"{self.name}: {len(self.zero_body_frames)} frames without bodies dropped: "
                       f"{self.zero_body_frames}")
        for bid, reason, detail in self.dropped_bodies:
            out.append(f"{self.name}: body {bid} dropped ({reason}; {detail})")
        if self.removed_frames:
            out.append(f"{self.name}: {len(self.removed_frames)} frames with both actors missing removed: "
                       f"{self.removed_frames}")
        return out


def collect_bodies(sk: SkeletonFile) -> tuple[dict[str, BodyTrack], int, list[int]]:
    """Group records by bodyID (first-appearance order) after dropping zero-body frames.

    Returns ``(bodies, number of valid frames, zero-body frame indices)``; motion is set
    only when there are 2+ body IDs, as in the reference.
    """
    present = sk.body_counts > 0
    zero_frames = np.flatnonzero(~present).tolist()
    valid_index = np.cumsum(present) - 1  # valid-frame index of each file frame
    records: dict[str, list[int]] = {}
    for r, bid in enumerate(sk.body_ids):
        records.setdefault(bid, []).append(r)
    bodies = {}
    for bid, recs in records.items():
        joints = sk.joints[recs].reshape(-1, 3)  # fancy indexing: a C-contiguous copy
        bodies[bid] = BodyTrack(bid, joints, int(valid_index[sk.frame_of[recs[0]]]), len(recs))
    if len(bodies) > 1:
        for b in bodies.values():
            b.motion = np.sum(np.var(b.joints, axis=0))
    return bodies, int(present.sum()), zero_frames


def _noisy_frames(joints: np.ndarray) -> np.ndarray:
    """Per frame: x-extent > 0.8 * y-extent (float32 arithmetic)."""
    j = joints.reshape(-1, NUM_JOINTS, 3)
    xr = j[:, :, 0].max(axis=1) - j[:, :, 0].min(axis=1)
    yr = j[:, :, 1].max(axis=1) - j[:, :, 1].min(axis=1)
    return ~(xr <= np.float32(NOISE_SPR_THRES1) * yr)


def denoise_bodies(bodies: dict[str, BodyTrack],
                   dropped: list[tuple[str, str, str]]) -> list[BodyTrack]:
    """Length and spread denoising, then the motion sort (2+ body IDs only).

    ``bodies`` is modified in place; dropped bodies are appended to ``dropped``.
    """
    for bid in list(bodies):
        b = bodies[bid]
        if b.n <= NOISE_LEN_THRES:
            dropped.append((bid, DROP_LENGTH, f"{b.n} frames, motion {float(b.motion):.6f}"))
            del bodies[bid]
    if len(bodies) == 1:
        return list(bodies.values())
    for bid in list(bodies):
        if len(bodies) == 1:
            break
        b = bodies[bid]
        noisy = _noisy_frames(b.joints)
        num_noise = int(noisy.sum())
        if num_noise == 0:
            continue
        ratio = num_noise / float(b.n)
        if ratio >= NOISE_SPR_THRES2:
            dropped.append((bid, DROP_SPREAD, f"ratio {ratio:.6f}, motion {float(b.motion):.6f}"))
            del bodies[bid]
        else:
            clean = b.joints.reshape(-1, NUM_JOINTS, 3)[~noisy].reshape(-1, 3)
            b.motion = min(b.motion, np.sum(np.var(clean, axis=0)))
    if len(bodies) == 1:
        return list(bodies.values())
    return sorted(bodies.values(), key=lambda b: b.motion, reverse=True)


def _check_fits(source: object, b: BodyTrack, num_frames: int) -> None:
    if b.end >= num_frames:
        raise UnusableSample(source, f"body {b.body_id} occurs {b.n} times from frame {b.start} but the "
                             f"sample has {num_frames} frames (a body ID repeated within a frame?)")


def place_actors(ordered: list[BodyTrack], num_frames: int,
                 source: object = None) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Fill the actor slots: ``(joints (T, 75) or (T, 150), actor1 ids, actor2 ids, discarded ids)``."""
    if len(ordered) == 1:
        b = ordered[0]
        _check_fits(source, b, num_frames)
        joints = np.zeros((num_frames, 75), dtype=np.float32)
        joints[b.start:b.end + 1] = b.joints.reshape(-1, 75)
        return joints, [b.body_id], [], []
    joints = np.zeros((num_frames, 150), dtype=np.float32)
    first = ordered[0]
    _check_fits(source, first, num_frames)
    start1, end1 = first.start, first.end
    joints[start1:end1 + 1, :75] = first.joints.reshape(-1, 75)
    actor1, actor2, discarded = [first.body_id], [], []
    start2, end2 = 0, 0  # the reference's virtual initial interval of actor 2
    for b in ordered[1:]:
        start, end = b.start, b.end
        if min(end1, end) - max(start1, start) <= 0:
            _check_fits(source, b, num_frames)
            joints[start:end + 1, :75] = b.joints.reshape(-1, 75)
            actor1.append(b.body_id)
            start1, end1 = min(start, start1), max(end, end1)
        elif min(end2, end) - max(start2, start) <= 0:
            _check_fits(source, b, num_frames)
            joints[start:end + 1, 75:] = b.joints.reshape(-1, 75)
            actor2.append(b.body_id)
            start2, end2 = min(start, start2), max(end, end2)
        else:
            discarded.append(b.body_id)
    return joints, actor1, actor2, discarded


def center_on_actor1(joints: np.ndarray, source: object = None) -> np.ndarray:
    """Subtract joint 2 of actor 1's first non-zero frame (in place); keep missing frames zero."""
    two = joints.shape[1] == 150
    if two:
        missing1 = joints[:, :75].sum(axis=1) == 0
        missing2 = joints[:, 75:].sum(axis=1) == 0
    present = np.any(joints[:, :75] != 0, axis=1)
    if not present.any():
        raise UnusableSample(source, "actor 1 has no non-zero joint in any frame (nothing to centre on)")
    origin = joints[int(np.argmax(present)), 3:6].copy()
    joints -= np.tile(origin, joints.shape[1] // 3)
    if two:
        joints[missing1, :75] = 0
        joints[missing2, 75:] = 0
    return joints


def denoise_skeleton(sk: SkeletonFile, center: bool = True) -> DenoiseResult:
    """The CTR-GCN sample of one parsed file: ``(T, 75)`` or ``(T, 150)`` float32.

    Raises :class:`UnusableSample` where the reference pipeline would crash (no frame
    with a body, every body of a multi-body file 11 frames or shorter, ...).
    """
    name = sk.name
    bodies, num_frames, zero_frames = collect_bodies(sk)
    if num_frames == 0:
        raise UnusableSample(sk.path, f"none of the {sk.num_frames} frames has a body")
    res = DenoiseResult(name, np.zeros((0, 75), np.float32), sk.num_frames, zero_frames, [], [],
                        num_body_ids=len(bodies))
    if len(bodies) == 1:
        res.joints, res.actor1, _, _ = place_actors(list(bodies.values()), num_frames, sk.path)
    else:
        ordered = denoise_bodies(bodies, res.dropped_bodies)
        if not ordered:
            raise UnusableSample(sk.path, f"all {res.num_body_ids} bodies are {NOISE_LEN_THRES} frames "
                                          "or shorter (the reference pipeline fails on this file)")
        joints, res.actor1, res.actor2, res.discarded_bodies = place_actors(ordered, num_frames, sk.path)
        for bid in res.discarded_bodies:
            res.dropped_bodies.append((bid, DROP_NO_SLOT, "no free actor slot"))
        keep = joints.sum(axis=1) != 0
        res.removed_frames = np.flatnonzero(~keep).tolist()
        res.joints = joints[keep] if res.removed_frames else joints
    if center:
        if res.num_frames == 0:
            raise UnusableSample(sk.path, "every frame has both actors missing")
        center_on_actor1(res.joints, sk.path)
    return res


def to_two_actors(joints: np.ndarray, duplicate_single: bool = False) -> np.ndarray:
    """``(T, 150)``: a one-actor ``(T, 75)`` gets a zero second actor, or a copy of actor 1."""
    if joints.shape[1] == 150:
        return joints
    second = joints if duplicate_single else np.zeros_like(joints)
    return np.hstack((joints, second))


# -- one file, parsed and selected -----------------------------------------------------------

def skeleton_to_array(source: str | os.PathLike | SkeletonFile, center: bool = True,
                      duplicate_single: bool = False) -> np.ndarray:
    """The ``(3, T, 25, 2)`` float32 array of one file, for app uploads.

    The two actors are chosen with the CTR-GCN rules (module docstring):
    zero-body frames dropped, noisy bodies removed, bodies sorted by motion, frames where
    both actors are missing removed. ``center`` subtracts joint 2 of actor 1's first frame
    (as the NTU preparation does); ``T`` is the number of valid frames (no padding). A
    one-actor sample has a zero second actor, or a copy of actor 1 with
    ``duplicate_single`` (the NTU120 convention).
    """
    sk = source if isinstance(source, SkeletonFile) else parse_skeleton(source)
    result = denoise_skeleton(sk, center=center)
    x = to_two_actors(result.joints, duplicate_single)  # (T, 150)
    return np.ascontiguousarray(x.reshape(-1, 2, NUM_JOINTS, 3).transpose(3, 0, 2, 1))


def describe_skeleton_file(path: str | os.PathLike) -> str:
    """A short human-readable report of one ``.skeleton`` file (``stdcl data inspect``)."""
    sk = parse_skeleton(path)
    empty = int((sk.body_counts == 0).sum())
    lines = [f"{sk.path.name}: {sk.num_frames} frames ({empty} without bodies), "
             f"up to {sk.max_bodies} bodies per frame, {len(sk.unique_body_ids)} body IDs"]
    m = re.fullmatch(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})", sk.name)
    if m:
        s, c, p, r, a = map(int, m.groups())
        lines.append(f"  setup {s}, camera {c}, performer {p}, replication {r}, action {a}")
    for bid in sk.unique_body_ids:
        recs = [i for i, b in enumerate(sk.body_ids) if b == bid]
        fr = sk.frame_of[recs]
        tr = sk.tracking[recs]
        lines.append(f"  body {bid}: {len(recs)} frames ({int(fr[0]) + 1}-{int(fr[-1]) + 1}), joints tracked "
                     f"{100 * np.mean(tr == 2):.1f}%, inferred {100 * np.mean(tr == 1):.1f}%")
    if sk.num_records:
        lo, hi = sk.joints.reshape(-1, 3).min(axis=0), sk.joints.reshape(-1, 3).max(axis=0)
        lines.append("  coordinates: " + ", ".join(f"{ax} [{lo[i]:.3f}, {hi[i]:.3f}] m" for i, ax in enumerate("xyz")))
    try:
        res = denoise_skeleton(sk, center=False)
    except UnusableSample as e:
        lines.append(f"  CTR-GCN selection: unusable ({e.problem})")
    else:
        sel = f"  CTR-GCN selection: {res.num_frames} frames; actor 1 = {', '.join(res.actor1)}"
        if res.actor2:
            sel += f"; actor 2 = {', '.join(res.actor2)}"
        lines.append(sel)
        lines += [f"  dropped body {bid}: {reason} ({detail})" for bid, reason, detail in res.dropped_bodies]
        if res.removed_frames:
            lines.append(f"  frames with both actors missing removed: {len(res.removed_frames)}")
    return "\n".join(lines)
