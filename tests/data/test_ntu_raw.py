"""Raw NTU ``.skeleton`` parsing: real files, CRLF/LF, the txt2npy cross-check, bad input."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from tests.support.ntu_skeleton import synth_files
from stdcl.data.ntu_denoise import UnusableSample, skeleton_to_array
from stdcl.data.ntu_raw import parse_skeleton
from stdcl.errors import DataError
from tests.support.paths import SHARED_DATA

DATA = SHARED_DATA
LEVELCA = DATA / "ntu_skeleton_levelca"
GARDIENS = DATA / "ntu_skeleton_gardiens"
needs_data = pytest.mark.skipif(
    not (LEVELCA.is_dir() and GARDIENS.is_dir()),
    reason="real NTU samples are not here: ../shared/data/ntu_skeleton_levelca and ntu_skeleton_gardiens "
           "are absent (they are read in place and never shipped with the project)")

# name -> (frames, bodies in every frame), from the folders' SOURCE.txt
REAL = {"S001C001P001R001A011": (82, 1), "S001C003P008R002A058": (70, 2), "S002C001P003R001A003": (100, 1),
        "S003C001P015R001A034": (71, 1), "S004C002P003R001A017": (124, 1), "S001C001P001R001A001": (103, 1)}


def real_path(name: str) -> Path:
    return (GARDIENS if name == "S001C001P001R001A001" else LEVELCA) / f"{name}.skeleton"


def naive_parse(path: Path) -> list[list[tuple[str, np.ndarray, list[str]]]]:
    """An independent line-by-line reading: per frame, (bodyID, xyz (25, 3) float32, joint fields)."""
    lines = path.read_text().splitlines()
    frames, i = [], 1
    for _ in range(int(lines[0])):
        nb = int(lines[i])
        i += 1
        bodies = []
        for _ in range(nb):
            bid = lines[i].split()[0]
            rows = [lines[i + 2 + j].split() for j in range(int(lines[i + 1]))]
            bodies.append((bid, np.array([r[:3] for r in rows], dtype=np.float32), rows))
            i += 2 + len(rows)
        frames.append(bodies)
    return frames


@needs_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_parse(name):
    frames, bodies = REAL[name]
    path = real_path(name)
    sk = parse_skeleton(path, all_fields=True)
    assert sk.name == name
    assert sk.num_frames == frames
    assert sk.body_counts.tolist() == [bodies] * frames
    assert sk.joints.shape == (frames * bodies, 25, 3) and sk.joints.dtype == np.float32
    assert len(sk.unique_body_ids) == bodies
    assert all(len(b) == 17 and b.isdigit() for b in sk.body_ids)
    assert path.read_bytes().count(b"\n") == 1 + frames * (1 + bodies * 27)
    naive = naive_parse(path)
    assert [[b[0] for b in f] for f in naive] == [[b.body_id for b in sk.frame(f)] for f in range(frames)]
    assert np.array_equal(np.stack([b[1] for f in naive for b in f]), sk.joints)
    # the other per-joint fields and the tracking state of one body
    bid, _, rows = naive[frames // 2][-1]
    body = sk.frame(frames // 2)[-1]
    assert body.body_id == bid
    assert np.array_equal(body.extra, np.array([r[3:11] for r in rows], dtype=np.float32))
    assert body.tracking.tolist() == [int(r[11]) for r in rows]
    assert set(np.unique(sk.tracking)) <= {0, 1, 2}
    assert body.tracking_state == 2


@needs_data
def test_two_person_file_gives_two_actors():
    x = skeleton_to_array(real_path("S001C003P008R002A058"))
    assert x.shape == (3, 70, 25, 2) and x.dtype == np.float32
    assert np.abs(x[..., 0]).sum() > 0 and np.abs(x[..., 1]).sum() > 0
    one = skeleton_to_array(real_path("S001C001P001R001A011"))
    assert one.shape == (3, 82, 25, 2) and not one[..., 1].any()
    assert np.allclose(one[:, 0, 1, 0], 0)  # centred on joint 2 of the first frame
    dup = skeleton_to_array(real_path("S001C001P001R001A011"), duplicate_single=True)
    assert np.array_equal(dup[..., 1], dup[..., 0])
    raw = skeleton_to_array(real_path("S001C001P001R001A011"), center=False)
    sk = parse_skeleton(real_path("S001C001P001R001A011"))
    assert np.array_equal(raw[..., 0].transpose(1, 2, 0), sk.joints)


@needs_data
def test_crlf_and_lf_parse_the_same(tmp_path):
    src = real_path("S001C003P008R002A058")
    assert b"\r\n" in src.read_bytes()
    lf = tmp_path / src.name
    lf.write_bytes(src.read_bytes().replace(b"\r\n", b"\n"))
    a, b = parse_skeleton(src, all_fields=True), parse_skeleton(lf, all_fields=True)
    assert a.body_ids == b.body_ids and np.array_equal(a.body_counts, b.body_counts)
    for key in ("joints", "tracking", "body_info", "joint_extra", "record_line"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


@needs_data
def test_matches_the_txt2npy_array():
    """The ``.npy`` in ntu_skeleton_gardiens is the txt2npy dict of the same file (see SOURCE.txt)."""
    ref = np.load(GARDIENS / "S001C001P001R001A001.skeleton.npy", allow_pickle=True).item()
    sk = parse_skeleton(GARDIENS / "S001C001P001R001A001.skeleton")
    assert ref["file_name"] == sk.name
    assert ref["njoints"] == 25
    assert list(ref["nbodys"]) == sk.body_counts.tolist()
    body0 = ref["skel_body0"]  # float64 (103, 25, 3): the decimal text parsed as double
    assert body0.shape == sk.joints.shape
    assert np.array_equal(sk.joints, body0.astype(np.float32))
    np.testing.assert_allclose(sk.joints, body0, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- bad input

@functools.lru_cache(maxsize=1)
def _good_text() -> str:
    return synth_files("ntu60")["S001C001P001R001A001"]


@pytest.fixture()
def good_lines() -> list[str]:
    """A valid 20-frame, one-body file (synthetic), as LF lines."""
    return _good_text().replace("\r\n", "\n").splitlines()


def write(tmp_path: Path, lines: list[str], name: str = "S001C001P001R001A001.skeleton", crlf: bool = False) -> Path:
    p = tmp_path / name
    p.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + (b"\r\n" if crlf else b"\n"))
    return p


def error_of(path: Path) -> str:
    with pytest.raises(DataError) as ei:
        parse_skeleton(path)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_synthetic_file_parses(tmp_path, good_lines):
    sk = parse_skeleton(write(tmp_path, good_lines, crlf=True))
    assert sk.num_frames == 20 and sk.body_counts.tolist() == [1] * 20
    assert parse_skeleton(write(tmp_path, good_lines)).joints.tobytes() == sk.joints.tobytes()


def test_truncated_file(tmp_path, good_lines):
    text = "\n".join(good_lines)
    p = tmp_path / "cut.skeleton"
    p.write_text(text[: len(text) // 2])  # cut inside a joint line
    msg = error_of(p)
    n_lines = text[: len(text) // 2].count("\n") + 1
    assert msg.startswith(f"{p}: line {n_lines}: ") and "truncated" in msg


def test_fewer_lines_than_declared(tmp_path, good_lines):
    p = write(tmp_path, ["25"] + good_lines[1:])  # the header claims 25 frames, the file holds 20
    msg = error_of(p)
    assert msg.startswith(f"{p}: line {len(good_lines)}: ")
    assert "frame 21 of 25" in msg and "truncated" in msg


def test_file_ends_inside_a_body(tmp_path, good_lines):
    p = write(tmp_path, good_lines[:-3])
    msg = error_of(p)
    assert msg.startswith(f"{p}: line {len(good_lines) - 3}: ") and "3 joint lines missing" in msg


def test_wrong_joint_count(tmp_path, good_lines):
    lines = list(good_lines)
    k = 1 + 28 * 4 + 2  # frame 5: body count, body info, joint count (0-based line index)
    assert lines[k] == "25"
    lines[k] = "24"
    msg = error_of(write(tmp_path, lines))
    path = tmp_path / "S001C001P001R001A001.skeleton"
    assert msg == f"{path}: line {k + 1}: joint count is 24, expected 25 (frame 5 of 20)"


def test_non_numeric_field(tmp_path, good_lines):
    lines = list(good_lines)
    k = 1 + 28 * 2 + 3 + 7  # frame 3, joint 8
    fields = lines[k].split()
    fields[1] = "1.2.3"
    lines[k] = " ".join(fields)
    msg = error_of(write(tmp_path, lines, crlf=True))
    assert msg.startswith(f"{tmp_path / 'S001C001P001R001A001.skeleton'}: line {k + 1}: ")
    assert "joint field 2 is not a number: '1.2.3'" in msg


def test_non_numeric_count(tmp_path, good_lines):
    lines = list(good_lines)
    lines[1 + 28 * 6] = "one"
    msg = error_of(write(tmp_path, lines))
    assert f": line {1 + 28 * 6 + 1}: expected the body count (an integer) for frame 7 of 20, found 'one'" in msg


def test_wrong_field_count(tmp_path, good_lines):
    lines = list(good_lines)
    k = 1 + 28 * 10 + 3 + 24  # frame 11, joint 25
    lines[k] = " ".join(lines[k].split()[:11])
    msg = error_of(write(tmp_path, lines))
    assert msg.endswith(f": line {k + 1}: joint line has 11 fields, expected 12")
    lines = list(good_lines)
    lines[1 + 28 * 3 + 1] += " 7"  # body info line of frame 4
    msg = error_of(write(tmp_path, lines))
    assert msg.endswith(f": line {1 + 28 * 3 + 2}: body info line has 11 fields, expected 10")


def test_nan_coordinates(tmp_path, good_lines):
    lines = list(good_lines)
    k = 1 + 28 * 7 + 3 + 12  # frame 8, joint 13
    fields = lines[k].split()
    fields[1] = "NaN"
    lines[k] = " ".join(fields)
    msg = error_of(write(tmp_path, lines))
    assert msg.endswith(f": line {k + 1}: joint coordinate y is 'NaN' (not a finite float32 number)")


def test_zero_body_frames_are_valid_and_dropped_later(tmp_path, good_lines):
    # frames 1 and 5 of 22 have no body: the file is valid, the sample drops those frames
    lines = ["22", "0"] + good_lines[1:1 + 28 * 3] + ["0"] + good_lines[1 + 28 * 3:]
    p = write(tmp_path, lines)
    sk = parse_skeleton(p)
    assert sk.num_frames == 22 and sk.body_counts.tolist() == [0] + [1] * 3 + [0] + [1] * 17
    assert sk.frame(0) == [] and len(sk.frame(1)) == 1
    assert np.array_equal(skeleton_to_array(p, center=False),
                          skeleton_to_array(write(tmp_path, good_lines, name="b.skeleton"), center=False))
    empty = write(tmp_path, ["3", "0", "0", "0"], name="empty.skeleton")
    assert parse_skeleton(empty).num_records == 0
    with pytest.raises(UnusableSample, match=r"empty\.skeleton: none of the 3 frames has a body"):
        skeleton_to_array(empty)


def test_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="cannot read file"):
        parse_skeleton(tmp_path / "nope.skeleton")


def test_empty_file_and_absurd_header(tmp_path, good_lines):
    empty = tmp_path / "empty.skeleton"
    empty.write_bytes(b"\r\n")
    assert error_of(empty) == f"{empty}: empty file"
    p = write(tmp_path, ["999999999999"] + good_lines[1:])
    msg = error_of(p)
    assert msg.startswith(f"{p}: line {len(good_lines)}: ") and "declares 999999999999 frames" in msg
