"""Deterministic synthetic NTU ``.skeleton`` files that exercise every denoising rule.

``synth_files(benchmark)`` returns ``{sample name: file text}``; the same seed always
gives the same bytes (``texts_sha256`` pins them, so a changed generator is told apart
from a changed pipeline). The scenarios cover: one body; zero-body frames; two people;
short bodies (<= 11 frames); noisy bodies (x-extent > 0.8 y-extent) dropped or only
partly noisy; tracking-id switches with and without a shared frame; a third body that
overlaps both actors; actor 2's virtual ``[0, 0]`` start; a body leaving and coming
back; motion ties; all-zero joint frames; actor 1 starting late; and a name from the
missing-skeleton list.
"""

from __future__ import annotations

import hashlib

import numpy as np

# a standing skeleton in metres (x right, y up), joint order of NTU RGB+D
_POSE = np.array([
    (0.0, 0.0), (0.0, 0.3), (0.0, 0.55), (0.0, 0.7), (-0.18, 0.5), (-0.25, 0.25), (-0.28, 0.05),
    (-0.29, 0.0), (0.18, 0.5), (0.25, 0.25), (0.28, 0.05), (0.29, 0.0), (-0.1, -0.05), (-0.1, -0.45),
    (-0.1, -0.85), (-0.1, -0.9), (0.1, -0.05), (0.1, -0.45), (0.1, -0.85), (0.1, -0.9), (0.0, 0.48),
    (-0.3, -0.05), (-0.27, -0.02), (0.3, -0.05), (0.27, -0.02)])
_ARMS = np.array([5, 6, 7, 9, 10, 11, 21, 22, 23, 24])

#: a name from the published missing-skeleton lists (both NTU60 and NTU120)
MISSING_NAME = "S001C002P005R002A008"


class _Track:
    """One body ID: the frames it appears in and how its joints move."""

    def __init__(self, rng: np.random.Generator, body_id: str, frames: list[int], noisy: float = 0.0,
                 amplitude: float = 0.2, zero_frames: tuple[int, ...] = (), clone_of: "_Track | None" = None,
                 shift: int = 0):
        self.body_id, self.frames = body_id, list(frames)
        self.rng = rng
        self.noisy_frames = set(rng.choice(self.frames, size=int(round(noisy * len(self.frames))),
                                           replace=False).tolist()) if noisy else set()
        self.zero_frames = set(zero_frames)
        self.clone_of, self.shift = clone_of, shift  # a clone replays clone_of's joints ``shift`` frames later
        self.digits = 7  # significant digits of x, y, z in the file (7 like the real files)
        self.offset = np.array([rng.uniform(-0.8, 0.8), rng.uniform(0.0, 0.3), rng.uniform(2.5, 4.0)])
        self.amplitude = amplitude * rng.uniform(0.5, 1.5)
        self.phase = rng.uniform(0, 2 * np.pi)
        self.cache: dict[int, np.ndarray] = {}

    def joints(self, f: int) -> np.ndarray:
        if self.clone_of is not None:
            return self.clone_of.joints(f - self.shift)
        if f not in self.cache:
            xy = _POSE.copy()
            wave = self.amplitude * np.sin(0.4 * f + self.phase)
            xy[_ARMS, 1] += wave
            xy[_ARMS, 0] += 0.5 * wave * np.sign(xy[_ARMS, 0])
            if f in self.noisy_frames:  # lying sideways: x-extent > 0.8 y-extent
                xy = xy[:, ::-1] * np.array([1.0, 0.5]) + np.array([1.0, 0.0])
            j = np.empty((25, 3))
            j[:, :2] = xy + self.offset[:2] + 0.01 * f
            j[:, 2] = self.offset[2] + 0.05 * xy[:, 0]
            j += self.rng.normal(0, 0.004, size=(25, 3))
            if f in self.zero_frames:
                j[:] = 0.0
            self.cache[f] = j
        return self.cache[f]


class _BorderTrack(_Track):
    """A body whose x-extent is float32(0.8) * its y-extent in every frame.

    ``1.20000005 <= float32(0.8) * 1.5`` holds in float32 (NumPy >= 2 running the
    reference) but not in float64 (NumPy 1.x): the body is clean here, noisy there.
    """

    def __init__(self, rng: np.random.Generator, body_id: str, frames: list[int]):
        super().__init__(rng, body_id, frames)
        self.digits = 9  # enough to round-trip float32

    def joints(self, f: int) -> np.ndarray:
        if f not in self.cache:
            xr, yr = np.float32(0.8) * np.float32(1.5), np.float32(1.5)
            xy = (_POSE - _POSE.min(axis=0)) / np.ptp(_POSE, axis=0)  # extremes exactly 0 and 1
            inner = (xy > 0.05) & (xy < 0.95)
            xy = np.where(inner, np.clip(xy + self.rng.normal(0, 0.01, xy.shape), 0.05, 0.95), xy)
            j = np.zeros((25, 3), dtype=np.float32)
            j[:, 0] = xy[:, 0].astype(np.float32) * xr
            j[:, 1] = xy[:, 1].astype(np.float32) * yr
            j[:, 2] = 3.0
            self.cache[f] = j.astype(np.float64)
        return self.cache[f]


def _body_id(rng: np.random.Generator) -> str:
    return str(72057594037920000 + int(rng.integers(0, 30000)))


def _render(tracks: list[_Track], num_frames: int, rng: np.random.Generator, crlf: bool) -> str:
    nl = "\r\n" if crlf else "\n"
    out = [str(num_frames)]
    for f in range(num_frames):
        present = [t for t in tracks if f in t.frames]
        out.append(str(len(present)))
        for t in present:
            info = [t.body_id, "0", str(rng.integers(0, 2)), str(rng.integers(0, 4)), str(rng.integers(0, 2)),
                    str(rng.integers(0, 4)), "0", f"{rng.uniform(-0.3, 0.3):.7g}", f"{rng.uniform(-0.3, 0.3):.7g}", "2"]
            out.append(" ".join(info))
            out.append("25")
            j = t.joints(f)
            z = np.maximum(j[:, 2:3], 0.1)
            depth = np.array([256.0, 212.0]) + np.array([300.0, -300.0]) * j[:, :2] / z
            color = np.array([960.0, 540.0]) + np.array([1000.0, -1000.0]) * j[:, :2] / z
            rest = np.hstack([depth, color, rng.normal(0, 0.5, (25, 4))])
            states = rng.integers(1, 3, size=25)
            xyz_fmt = f"{{:.{t.digits}g}}"
            out.extend(" ".join([xyz_fmt.format(v) for v in xyz] + [f"{v:.7g}" for v in row] + [str(st)])
                       for xyz, row, st in zip(j.tolist(), rest.tolist(), states.tolist()))
    return nl.join(out) + nl


def _scenarios(rng: np.random.Generator) -> list[tuple[str, int, list[_Track]]]:
    """``(kind, num_frames, tracks)``; kind "one" or "two" picks a one/two-person action."""
    def ids(n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            b = _body_id(rng)
            if b not in out:
                out.append(b)
        return out

    def r(a: int, b: int) -> list[int]:
        return list(range(a, b))

    sc = []
    a, = ids(1)
    sc.append(("one", 20, [_Track(rng, a, r(0, 20))]))  # one body, all frames
    a, = ids(1)
    sc.append(("one", 24, [_Track(rng, a, r(2, 9) + r(11, 22))]))  # zero-body frames at start, middle, end
    a, b = ids(2)
    sc.append(("two", 22, [_Track(rng, a, r(0, 22)), _Track(rng, b, r(0, 22))]))  # two people
    a, b, c = ids(3)
    sc.append(("two", 26, [_Track(rng, a, r(0, 26)), _Track(rng, b, r(1, 25)),
                           _Track(rng, c, r(5, 16), amplitude=0.6)]))  # + a short body (11 frames, the limit)
    a, b, c = ids(3)
    sc.append(("two", 24, [_Track(rng, c, r(0, 24), noisy=0.8, amplitude=0.6), _Track(rng, a, r(0, 24)),
                           _Track(rng, b, r(0, 24))]))  # + a noisy body (ratio 0.8), listed first
    a, b = ids(2)
    sc.append(("one", 30, [_Track(rng, a, r(0, 16)), _Track(rng, b, r(16, 30))]))  # id switch, no overlap
    a, b = ids(2)
    sc.append(("one", 30, [_Track(rng, a, r(0, 16), amplitude=0.5), _Track(rng, b, r(15, 30))]))  # one shared frame
    a, b, c = ids(3)
    sc.append(("two", 28, [_Track(rng, a, r(0, 28), amplitude=0.5), _Track(rng, b, r(0, 28)),
                           _Track(rng, c, r(6, 22), amplitude=0.05)]))  # third body overlaps both actors
    a, b, c, d = ids(4)
    sc.append(("two", 44, [_Track(rng, a, r(0, 44), amplitude=0.6), _Track(rng, b, r(14, 28), amplitude=0.3),
                           _Track(rng, c, r(30, 44), amplitude=0.2),
                           _Track(rng, d, r(0, 13), amplitude=0.1)]))  # actor 2's start stays 0: d discarded
    a, b = ids(2)
    sc.append(("two", 32, [_Track(rng, a, r(0, 8) + r(14, 32), amplitude=0.5),
                           _Track(rng, b, r(0, 32))]))  # a body leaves and comes back (interval quirk)
    a, b = ids(2)
    sc.append(("one", 26, [_Track(rng, a, r(0, 20)), _Track(rng, b, r(20, 26), amplitude=0.6)]))  # 2nd body short
    a, b = ids(2)
    sc.append(("one", 22, [_Track(rng, a, r(0, 22), noisy=0.75), _Track(rng, b, r(0, 22), noisy=0.9)]))  # both noisy
    a, b = ids(2)
    sc.append(("two", 26, [_Track(rng, a, r(0, 26), noisy=0.3, amplitude=0.02),
                           _Track(rng, b, r(0, 26), amplitude=0.3)]))  # partly noisy: motion lowered, order flips
    a, b = ids(2)
    sc.append(("two", 24, [_Track(rng, b, r(0, 24), amplitude=0.1),
                           _Track(rng, a, r(5, 24), amplitude=0.6, zero_frames=(9,))]))  # actor 1 starts late
    a, b = ids(2)
    t1 = _Track(rng, a, r(0, 20))
    sc.append(("two", 22, [t1, _Track(rng, b, r(2, 22), clone_of=t1, shift=2)]))  # motion tie: stable order
    a, b = ids(2)
    sc.append(("two", 16, [_BorderTrack(rng, a, r(0, 16)), _Track(rng, b, r(0, 16), amplitude=0.05)]))
    a, = ids(1)
    sc.append(("one", 18, [_Track(rng, a, r(0, 18), zero_frames=(0, 7))]))  # one body with all-zero frames
    a, b = ids(2)
    sc.append(("two", 20, [_Track(rng, a, r(0, 6)), _Track(rng, b, r(4, 20), zero_frames=(4, 5))]))
    a, b, c = ids(3)
    sc.append(("two", 30, [_Track(rng, a, r(0, 12), amplitude=0.5), _Track(rng, b, r(12, 30), amplitude=0.5),
                           _Track(rng, c, r(0, 30), amplitude=0.2)]))  # actor 1 built from two ids + actor 2
    return sc


def synth_files(benchmark: str = "ntu60", seed: int = 20240601) -> dict[str, str]:
    """``{name: text}`` for ``benchmark``; the ntu120 set is the ntu60 set plus NTU120-only names."""
    rng = np.random.default_rng(seed)
    scen = _scenarios(rng)
    files: dict[str, str] = {}
    one_actions, two_actions = [1, 3, 8, 14, 22, 31, 43, 49], [50, 52, 55, 58, 60]
    for i, (kind, n, tracks) in enumerate(scen):
        action = (one_actions if kind == "one" else two_actions)[i % (8 if kind == "one" else 5)]
        setup, camera = 1 + (3 * i) % 17, 1 + i % 3
        performer = (1, 3, 2, 6, 4, 7, 5, 10, 8, 11, 9, 12, 13, 20, 14, 21)[i % 16] + (i // 16) * 20
        name = f"S{setup:03d}C{camera:03d}P{performer:03d}R{1 + i % 2:03d}A{action:03d}"
        files[name] = _render(tracks, n, rng, crlf=i % 2 == 0)
    files[MISSING_NAME] = _render([_Track(rng, _body_id(rng), list(range(15)))], 15, rng, crlf=True)
    if benchmark == "ntu120":
        scen120 = _scenarios(rng)[2:8]
        for i, (kind, n, tracks) in enumerate(scen120):
            action = (61, 75, 106, 111, 120, 99)[i]
            setup = (18, 19, 24, 27, 32, 3)[i]
            performer = (45, 41, 103, 104, 70, 60)[i]
            name = f"S{setup:03d}C{1 + i % 3:03d}P{performer:03d}R{1 + i % 2:03d}A{action:03d}"
            files[name] = _render(tracks, n, rng, crlf=i % 2 == 1)
    return files


def texts_sha256(files: dict[str, str]) -> str:
    """One hash over all names and texts (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()


def write_files(files: dict[str, str], folder, folder120=None) -> None:
    """Write the files (NTU120 setups >= 18 into ``folder120`` when given), bytes as generated."""
    from pathlib import Path

    for name, text in files.items():
        dest = Path(folder120) if folder120 is not None and int(name[1:4]) >= 18 else Path(folder)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f"{name}.skeleton").write_bytes(text.encode())
