"""Parser of raw NTU RGB+D ``.skeleton`` files (Kinect v2 text format, CRLF or LF).

Format (whitespace separated): the frame count, then per frame a body count ``B`` (may
be 0) and per body a 10-field info line (bodyID first), a joint-count line (25) and 25
joint lines of 12 fields (x y z depthX depthY colorX colorY orientW orientX orientY
orientZ trackingState).

:func:`parse_skeleton` reads a file with one read and one split and converts the numbers
with numpy in one batch. Every body occurrence is one *record*; records are stored flat in
file order (frame-major), :meth:`SkeletonFile.frame` gives the per-frame view. Malformed
input raises :class:`stdcl.errors.DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stdcl.errors import DataError

NUM_JOINTS = 25
JOINT_FIELDS = 12
BODY_FIELDS = 10
#: names of the 9 numeric body-info fields kept in :attr:`SkeletonFile.body_info`
BODY_INFO_FIELDS = ("clippedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
                    "handRightState", "isRestricted", "leanX", "leanY", "trackingState")
#: names of the 8 extra per-joint fields kept in :attr:`SkeletonFile.joint_extra`
JOINT_EXTRA_FIELDS = ("depthX", "depthY", "colorX", "colorY", "orientationW", "orientationX",
                      "orientationY", "orientationZ")


@dataclass(frozen=True)
class Body:
    """One body in one frame (views into the :class:`SkeletonFile` arrays)."""

    body_id: str
    joints: np.ndarray  # (25, 3) float32 camera-space x, y, z in metres
    tracking: np.ndarray  # (25,) int8 joint trackingState: 0 not tracked, 1 inferred, 2 tracked
    info: np.ndarray  # (9,) float64, BODY_INFO_FIELDS
    extra: np.ndarray | None  # (25, 8) float32, JOINT_EXTRA_FIELDS (when parsed with all_fields)

    @property
    def tracking_state(self) -> int:
        """The body's own trackingState (last field of its info line)."""
        return int(self.info[8])


@dataclass
class SkeletonFile:
    """A parsed ``.skeleton`` file; ``R`` is the number of body records over all frames."""

    path: Path
    num_frames: int  # frames declared in the header (zero-body frames included)
    body_counts: np.ndarray  # (num_frames,) int32 bodies per frame
    body_ids: list[str]  # (R,) bodyID of each record, as written in the file
    frame_of: np.ndarray  # (R,) int32 frame index of each record
    joints: np.ndarray  # (R, 25, 3) float32 x, y, z
    tracking: np.ndarray  # (R, 25) int8 joint trackingState
    body_info: np.ndarray  # (R, 9) float64, BODY_INFO_FIELDS
    record_line: np.ndarray  # (R,) int64 1-based line of each record's first joint
    joint_extra: np.ndarray | None = None  # (R, 25, 8) float32 when parsed with all_fields

    @property
    def name(self) -> str:
        """The sample name (file name without ``.skeleton``)."""
        return self.path.name[: -len(".skeleton")] if self.path.name.endswith(".skeleton") else self.path.stem

    @property
    def num_records(self) -> int:
        return len(self.body_ids)

    @property
    def max_bodies(self) -> int:
        """Largest body count of any frame."""
        return int(self.body_counts.max()) if self.num_frames else 0

    @property
    def unique_body_ids(self) -> list[str]:
        """Body IDs in order of first appearance."""
        return list(dict.fromkeys(self.body_ids))

    def frame(self, f: int) -> list[Body]:
        """The bodies of frame ``f`` (0-based), in file order."""
        start = int(self._offsets[f])
        return [self._body(r) for r in range(start, start + int(self.body_counts[f]))]

    def frames(self) -> list[list[Body]]:
        """All frames as lists of bodies (zero-body frames give empty lists)."""
        return [self.frame(f) for f in range(self.num_frames)]

    def _body(self, r: int) -> Body:
        extra = None if self.joint_extra is None else self.joint_extra[r]
        return Body(self.body_ids[r], self.joints[r], self.tracking[r], self.body_info[r], extra)

    @property
    def _offsets(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.body_counts)[:-1])) if self.num_frames else np.zeros(0, int)


def _fail(path: Path, line_index: int, problem: str) -> DataError:
    return DataError(path, problem, where=line_index + 1)


def _show(raw: bytes) -> str:
    text = raw.strip().decode("utf-8", "replace")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _read_count(path: Path, lines: list[bytes], i: int, end: int, what: str, context: str) -> int:
    """The non-negative integer on line ``i`` (``end`` = number of meaningful lines)."""
    if i >= end:
        raise _fail(path, end - 1 if end else 0,
                    f"file ends here but {context} is still expected ({what}); truncated file?")
    try:
        value = int(lines[i])
    except ValueError:
        raise _fail(path, i, f"expected {what} (an integer) for {context}, found {_show(lines[i])}") from None
    if value < 0:
        raise _fail(path, i, f"{what} is negative ({value}) for {context}")
    return value


def _bad_joint_line(path: Path, jl: list[bytes], line_no: np.ndarray) -> DataError:
    """Find the first joint line with a wrong field count or a non-numeric field."""
    for k, raw in enumerate(jl):
        fields = raw.split()
        if len(fields) != JOINT_FIELDS:
            return DataError(path, f"joint line has {len(fields)} fields, expected {JOINT_FIELDS}"
                             + (" (truncated file?)" if k == len(jl) - 1 else ""), where=int(line_no[k]))
        for c, tok in enumerate(fields):
            try:
                float(tok)
            except ValueError:
                return DataError(path, f"joint field {c + 1} is not a number: {_show(tok)}",
                                 where=int(line_no[k]))
    return DataError(path, "joint lines could not be parsed", where=int(line_no[0]) if len(line_no) else None)


def _joint_fields(path: Path, jl: list[bytes], line_no: np.ndarray, all_fields: bool) -> np.ndarray:
    """``(L, 4)`` x, y, z, trackingState (+ the 8 other fields with ``all_fields``) as float64.

    One join + split of all joint lines and one numpy conversion per column; a
    :class:`DataError` names the first bad line when the batch fails.
    """
    if not jl:
        return np.zeros((0, 12 if all_fields else 4))
    tokens = b" ".join(jl).split()
    # a line holding exactly 11 spaces has at most 12 fields; with 12 * L fields in total
    # every line then has exactly 12 (the cheap check for well-formed files)
    if len(tokens) != JOINT_FIELDS * len(jl) or set(map(bytes.count, jl, itertools.repeat(b" "))) - {11}:
        if any(len(raw.split()) != JOINT_FIELDS for raw in jl):
            raise _bad_joint_line(path, jl, line_no)
    out = np.empty((len(jl), 12 if all_fields else 4), dtype=np.float64)
    try:
        for c in range(3):
            out[:, c] = np.array(tokens[c::JOINT_FIELDS], dtype=np.float64)
        states = b"".join(tokens[11::JOINT_FIELDS])
        if len(states) == len(jl) and states.isdigit():  # the usual single digits 0/1/2
            out[:, 3] = np.frombuffer(states, dtype=np.uint8) - 48.0
        else:
            out[:, 3] = np.array(tokens[11::JOINT_FIELDS], dtype=np.float64)
        if all_fields:
            for c in range(8):
                out[:, 4 + c] = np.array(tokens[3 + c::JOINT_FIELDS], dtype=np.float64)
    except ValueError:
        raise _bad_joint_line(path, jl, line_no) from None
    return out


def parse_skeleton(path: str | os.PathLike, all_fields: bool = False) -> SkeletonFile:
    """Parse one ``.skeleton`` file.

    ``all_fields`` also keeps depth/colour/orientation per joint (``joint_extra``); the
    x, y, z joints, joint tracking states and body-info fields are always kept. Raises
    :class:`DataError` (``"<file>: line N: problem"``) on a wrong joint or field count,
    a non-numeric field, NaN/inf coordinates or a file shorter than its counts declare.
    Frames with zero bodies are valid (``body_counts[f] == 0``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror})") from None
    lines = data.split(b"\n")
    end = len(lines)  # ignore trailing blank lines when reporting truncation
    while end and not lines[end - 1].strip():
        end -= 1

    if end == 0:
        raise DataError(path, "empty file")
    num_frames = _read_count(path, lines, 0, end, "the frame count", "the header")
    if num_frames > end - 1:  # every frame needs at least its body-count line
        raise _fail(path, end - 1, f"file ends here but the header declares {num_frames} frames "
                                   f"({end - 1} lines follow it); truncated file?")
    body_counts = np.zeros(num_frames, dtype=np.int32)
    info_idx: list[int] = []  # line index of each record's info line
    i = 1
    for f in range(num_frames):
        ctx = f"frame {f + 1} of {num_frames}"
        nb = _read_count(path, lines, i, end, "the body count", ctx)
        i += 1
        if nb > end - i:  # an absurd count (a body takes 27 lines); it would overflow body_counts
            raise _fail(path, end - 1, f"file ends here but {ctx} declares {nb} bodies "
                                       f"({end - i} lines follow); truncated file?")
        body_counts[f] = nb
        for _ in range(nb):
            if i >= end:
                raise _fail(path, end - 1, f"file ends here but {ctx} declares {nb} bodies; truncated file?")
            info_idx.append(i)
            nj = _read_count(path, lines, i + 1, end, "the joint count", ctx)
            if nj != NUM_JOINTS:
                raise _fail(path, i + 1, f"joint count is {nj}, expected {NUM_JOINTS} ({ctx})")
            i += 2 + NUM_JOINTS
            if i > end:
                raise _fail(path, end - 1, f"file ends inside a body of {ctx} ({i - end} joint lines "
                                           "missing); truncated file?")
    # content after the declared frames is ignored, as the reference parser does

    n_rec = len(info_idx)
    # body info lines: bodyID (kept as text) + 9 numbers
    body_ids: list[str] = []
    info_tokens: list[bytes] = []
    for li in info_idx:
        fields = lines[li].split()
        if len(fields) != BODY_FIELDS:
            raise _fail(path, li, f"body info line has {len(fields)} fields, expected {BODY_FIELDS}")
        body_ids.append(fields[0].decode("ascii", "replace"))
        info_tokens.extend(fields[1:])
    try:
        body_info = np.array(info_tokens, dtype=np.float64).reshape(n_rec, BODY_FIELDS - 1)
    except ValueError:
        for li in info_idx:
            for c, tok in enumerate(lines[li].split()[1:]):
                try:
                    float(tok)
                except ValueError:
                    raise _fail(path, li, f"body info field {c + 2} is not a number: {_show(tok)}") from None
        raise  # pragma: no cover - a failing token is always found above

    # joint lines, converted in one batch
    starts = np.asarray(info_idx, dtype=np.int64) + 2  # 0-based index of each record's first joint line
    jl = list(itertools.chain.from_iterable(lines[s:s + NUM_JOINTS] for s in starts.tolist()))
    line_no = (starts[:, None] + np.arange(NUM_JOINTS)).reshape(-1) + 1
    values = _joint_fields(path, jl, line_no, all_fields)
    xyz, tracking = values[:, :3], values[:, 3]
    extra = values[:, 4:] if all_fields else None
    joints = xyz.astype(np.float32)
    bad = ~np.isfinite(joints)
    if bad.any():
        k, c = np.argwhere(bad)[0]
        raise DataError(path, f"joint coordinate {'xyz'[c]} is {jl[k].split()[c].decode(errors='replace')!r} "
                        "(not a finite float32 number)", where=int(line_no[k]))

    frame_of = np.repeat(np.arange(num_frames, dtype=np.int32), body_counts)
    return SkeletonFile(
        path=path,
        num_frames=num_frames,
        body_counts=body_counts,
        body_ids=body_ids,
        frame_of=frame_of,
        joints=joints.reshape(n_rec, NUM_JOINTS, 3),
        tracking=np.clip(tracking, -128, 127).astype(np.int8).reshape(n_rec, NUM_JOINTS),
        body_info=body_info,
        record_line=starts + 1,
        joint_extra=None if extra is None else extra.astype(np.float32).reshape(n_rec, NUM_JOINTS, 8),
    )
