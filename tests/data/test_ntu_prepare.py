"""``prepare_ntu``: end to end, parity with CTR-GCN's scripts, missing lists, split order."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.ntu_skeleton import MISSING_NAME, synth_files, texts_sha256, write_files
from stdcl.data.ntu_prepare import (BENCHMARKS, missing_names, parse_sample_name, prepare_ntu, sample_names,
                                    split_indices)
from stdcl.errors import DataError
from tests.support.paths import FIXTURES, SHARED_DATA

DATA = SHARED_DATA
REAL_DIRS = [DATA / "ntu_skeleton_levelca", DATA / "ntu_skeleton_gardiens"]
needs_data = pytest.mark.skipif(
    not all(d.is_dir() for d in REAL_DIRS),
    reason="real NTU samples are not here: ../shared/data/ntu_skeleton_levelca and ntu_skeleton_gardiens "
           "are absent (they are read in place and never shipped with the project)")
FIXTURES = FIXTURES / "ntu_prepare"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
STEMS = {"ntu60": ("NTU60_CS", "NTU60_CV"), "ntu120": ("NTU120_CSub", "NTU120_CSet")}


@functools.lru_cache(maxsize=None)
def _synth(benchmark: str) -> dict[str, str]:
    return synth_files(benchmark)


def _write_synth(benchmark: str, root: Path) -> list[Path]:
    """The synthetic set on disk; NTU120 setups >= 18 go to a second folder, as in the real layout."""
    write_files(_synth(benchmark), root / "nturgb+d_skeletons", root / "nturgb+d_skeletons120")
    return [d for d in (root / "nturgb+d_skeletons", root / "nturgb+d_skeletons120") if d.is_dir()]


@functools.lru_cache(maxsize=None)
def _prepared_real(benchmark: str, out: str) -> str:
    prepare_ntu(benchmark, REAL_DIRS, out, progress=False)
    return out


@pytest.fixture(scope="module")
def real60(tmp_path_factory) -> Path:
    return Path(_prepared_real("ntu60", str(tmp_path_factory.mktemp("real60"))))


@pytest.fixture(scope="module")
def real120(tmp_path_factory) -> Path:
    return Path(_prepared_real("ntu120", str(tmp_path_factory.mktemp("real120"))))


def first_body_xyz(path: Path) -> tuple[np.ndarray, list[str]]:
    """Independent reading: (frames with bodies, 25, 3) float32 of each frame's first body + all body ids."""
    lines = path.read_text().splitlines()
    out, ids, i = [], [], 1
    for _ in range(int(lines[0])):
        nb = int(lines[i])
        i += 1
        for b in range(nb):
            ids.append(lines[i].split()[0])
            if b == 0:
                out.append(np.array([lines[i + 2 + j].split()[:3] for j in range(25)], dtype=np.float32))
            i += 27
    return np.stack(out), ids


# ---------------------------------------------------------------- real files, end to end

@needs_data
def test_real_ntu60_end_to_end(real60):
    summary_names = json.loads((real60 / "NTU60_CS.names.json").read_text())
    with np.load(real60 / "NTU60_CS.npz") as z:
        assert z.files == ["x_train", "y_train", "x_test", "y_test"]
        arrays = {k: z[k] for k in z.files}
    for part in ("train", "test"):
        x, y, names = arrays[f"x_{part}"], arrays[f"y_{part}"], summary_names[part]
        assert x.shape == (len(names), 300, 150) and x.dtype == np.float32
        assert y.shape == (len(names), 60) and y.dtype == np.float64
        assert np.array_equal(y.sum(axis=1), np.ones(len(names)))
        assert [int(np.argmax(r)) + 1 for r in y] == [parse_sample_name(n).action for n in names]
        for xi, name in zip(x, names):
            path = next(d / f"{name}.skeleton" for d in REAL_DIRS if (d / f"{name}.skeleton").exists())
            raw, ids = first_body_xyz(path)
            t = len(raw)
            assert not xi[t:].any(), "zero padding beyond the valid frames"
            a1 = xi[:t, :75].reshape(t, 25, 3)
            assert np.allclose(a1[0, 1], 0, atol=1e-7), "joint 2 of actor 1's first frame is the origin"
            if len(set(ids)) == 1:
                assert np.array_equal(a1, raw - raw[0, 1]), name
                assert not xi[:, 75:].any(), "NTU60: the second actor of a one-actor sample is zero"
            else:
                assert xi[:t, 75:].any()
    assert sorted(summary_names["train"] + summary_names["test"]) == sorted(REAL_NAMES)


REAL_NAMES = EXPECTED["real_files"]["names"]  # the six real files, sorted


@needs_data
def test_real_two_person_actor_order(real60):
    """Actor 1 is the body with the larger float32 motion (sum of per-axis variances)."""
    path = REAL_DIRS[0] / "S001C003P008R002A058.skeleton"
    lines = path.read_text().splitlines()
    per_body: dict[str, list[np.ndarray]] = {}
    i = 1
    for _ in range(int(lines[0])):
        nb = int(lines[i])
        i += 1
        for _ in range(nb):
            per_body.setdefault(lines[i].split()[0], []).append(
                np.array([lines[i + 2 + j].split()[:3] for j in range(25)], dtype=np.float32))
            i += 27
    bodies = {k: np.stack(v) for k, v in per_body.items()}
    motion = {k: np.sum(np.var(v.reshape(-1, 3), axis=0)) for k, v in bodies.items()}
    first, second = sorted(motion, key=motion.get, reverse=True)
    names = json.loads((real60 / "NTU60_CS.names.json").read_text())["train"]
    with np.load(real60 / "NTU60_CS.npz") as z:
        x = z["x_train"][names.index("S001C003P008R002A058")]
    origin = bodies[first][0, 1]
    assert np.array_equal(x[:70, :75].reshape(70, 25, 3), bodies[first] - origin)
    assert np.array_equal(x[:70, 75:].reshape(70, 25, 3), bodies[second] - origin)


@needs_data
def test_real_ntu120_duplicates_single_actor(real120, real60):
    names = json.loads((real120 / "NTU120_CSub.names.json").read_text())
    with np.load(real120 / "NTU120_CSub.npz") as z, np.load(real60 / "NTU60_CS.npz") as z60:
        for part in ("train", "test"):
            x, x60 = z[f"x_{part}"], z60[f"x_{part}"]
            assert z[f"y_{part}"].shape == (len(names[part]), 120)
            for xi, xi60, name in zip(x, x60, names[part]):
                assert np.array_equal(xi[:, :75], xi60[:, :75])
                if name.endswith("A058"):
                    assert np.array_equal(xi, xi60)
                else:
                    assert np.array_equal(xi[:, 75:], xi[:, :75]), "NTU120 copies actor 1 into slot 2"


@needs_data
@pytest.mark.parametrize("bench", ["ntu60", "ntu120"])
def test_real_parity_hashes(bench, real60, real120):
    """SHA-256 of CTR-GCN's own output arrays on the real files (fixtures/ntu_prepare/README.md)."""
    out = real60 if bench == "ntu60" else real120
    expected = EXPECTED["real"][bench]
    for stem in STEMS[bench]:
        with np.load(out / f"{stem}.npz") as z:
            for key in z.files:
                a = z[key]
                exp = expected[f"{stem}/{key}"]
                assert list(a.shape) == exp["shape"] and a.dtype.str == exp["dtype"], (stem, key)
                assert hashlib.sha256(a.tobytes()).hexdigest() == exp["sha256"], (stem, key)


# ---------------------------------------------------------------- synthetic parity

@pytest.mark.parametrize("bench", ["ntu60", "ntu120"])
def test_synthetic_parity_with_reference(bench, tmp_path):
    files = _synth(bench)
    assert texts_sha256(files) == EXPECTED["synthetic"][bench]["texts_sha256"], \
        "the synthetic generator changed: regenerate the reference fixtures (fixtures/ntu_prepare/README.md)"
    dirs = _write_synth(bench, tmp_path / "raw")
    out = tmp_path / "out"
    summary = prepare_ntu(bench, dirs, out, workers=2 if bench == "ntu120" else 1, progress=False)
    with np.load(FIXTURES / f"synth_{bench}_reference.npz") as ref:
        for stem in STEMS[bench]:
            with np.load(out / f"{stem}.npz") as z:
                assert z.files == ["x_train", "y_train", "x_test", "y_test"]
                for key in z.files:
                    ours, theirs = z[key], ref[f"{stem}__{key}"]
                    assert ours.dtype == theirs.dtype, (stem, key)
                    if key.startswith("x"):
                        t = theirs.shape[1]  # the reference pads to the longest sample, we to 300
                        assert ours.shape == (len(theirs), 300, 150)
                        assert np.array_equal(ours[:, :t], theirs), (stem, key)
                        assert not ours[:, t:].any()
                    else:
                        assert np.array_equal(ours, theirs), (stem, key)
    assert summary.files_found == len(files)
    assert summary.skipped_files["in the missing-skeleton list"] == 1
    assert summary.dropped_bodies == {"length <= 11 frames": 3 + (bench == "ntu120"),
                                      "spread ratio >= 0.69754": 2 + (bench == "ntu120"),
                                      "overlaps both actors": 3 + (bench == "ntu120")}
    assert summary.dropped_frames["no body in frame"] == 6


# ---------------------------------------------------------------- missing lists, splits, format

def test_missing_lists_are_shipped():
    m60, m120 = missing_names("ntu60"), missing_names("ntu120")
    assert len(m60) == 302 and len(m120) == 535 and m60 <= m120
    assert MISSING_NAME in m60
    assert all(parse_sample_name(n) is not None for n in m120)


def test_missing_and_foreign_names_are_skipped(tmp_path):
    dirs = _write_synth("ntu120", tmp_path / "raw")
    names = sample_names(dirs, "ntu60")
    assert MISSING_NAME not in names and names == sorted(names)
    assert all(parse_sample_name(n).action <= 60 and parse_sample_name(n).setup <= 17 for n in names)
    (dirs[0] / "notes.txt").write_text("ignored")
    (dirs[0] / "bad_name.skeleton").write_text("1\n0\n")
    summary = prepare_ntu("ntu60", dirs, tmp_path / "out", progress=False)
    assert summary.skipped_files == {"not an NTU sample name": 1, "in the missing-skeleton list": 1,
                                     "not part of ntu60": 6}
    got = json.loads((tmp_path / "out" / "NTU60_CS.names.json").read_text())
    assert sorted(got["train"] + got["test"]) == names
    with np.load(tmp_path / "out" / "NTU60_CS.npz") as z:
        assert z["y_train"].shape[1] == 60  # classes without samples are still columns


def _rule_order(names: list[str], key: str, ids: tuple[int, ...]) -> list[str]:
    return [n for i in ids for n in sorted(names) if getattr(parse_sample_name(n), key) == i]


def test_split_order_follows_the_id_lists():
    names = sorted(f"S{s:03d}C{c:03d}P{p:03d}R001A{a:03d}" for s, c, p, a in
                   [(1, 1, 3, 1), (1, 2, 1, 2), (2, 3, 1, 1), (2, 1, 2, 5), (3, 2, 38, 1), (3, 3, 3, 9), (4, 1, 45, 70),
                    (18, 2, 106, 61), (17, 1, 40, 60), (5, 3, 2, 7)])
    cs = BENCHMARKS["ntu60"].evaluations[0]
    train, test = split_indices(names, cs)
    assert [names[i] for i in train] == _rule_order(names, "performer", cs.train_ids)
    # performer 1's samples come first whatever their setup: grouped by id, then name order
    assert [names[i] for i in train][:2] == ["S001C002P001R001A002", "S002C003P001R001A001"]
    assert [names[i] for i in test] == _rule_order(names, "performer", cs.test_ids)
    cv = BENCHMARKS["ntu60"].evaluations[1]
    train, test = split_indices(names, cv)
    assert [names[i] for i in train] == [n for n in names if "C002" in n] + [n for n in names if "C003" in n]
    assert [names[i] for i in test] == [n for n in names if "C001" in n]
    csub, cset = BENCHMARKS["ntu120"].evaluations
    train, test = split_indices(names, csub)
    assert sorted(train + test) == list(range(len(names)))
    assert [names[i] for i in train] == _rule_order(names, "performer", csub.train_ids)
    train, test = split_indices(names, cset)
    assert [parse_sample_name(names[i]).setup % 2 for i in train] == [0] * len(train)
    assert [names[i] for i in test] == _rule_order(names, "setup", cset.test_ids)
    assert csub.test_ids == tuple(i for i in range(1, 107) if i not in csub.train_ids)
    assert len(cs.train_ids) == 20 and len(csub.train_ids) == 53


@needs_data
def test_real_split_order(real60, real120):
    for out, stem, key, bench in [(real60, "NTU60_CS", "performer", "ntu60"), (real60, "NTU60_CV", "camera", "ntu60"),
                                  (real120, "NTU120_CSub", "performer", "ntu120"),
                                  (real120, "NTU120_CSet", "setup", "ntu120")]:
        ev = next(e for e in BENCHMARKS[bench].evaluations if stem.endswith(e.name))
        got = json.loads((out / f"{stem}.names.json").read_text())
        assert got["train"] == _rule_order(REAL_NAMES, key, ev.train_ids), stem
        assert got["test"] == _rule_order(REAL_NAMES, key, ev.test_ids), stem


def test_npz_is_byte_compatible_with_np_savez(tmp_path):
    dirs = _write_synth("ntu60", tmp_path / "raw")
    prepare_ntu("ntu60", dirs, tmp_path / "out", progress=False)
    ours = tmp_path / "out" / "NTU60_CV.npz"
    with np.load(ours) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "theirs.npz", **arrays)
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(tmp_path / "theirs.npz") as b:
        assert a.namelist() == b.namelist() == ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"]
        for name in a.namelist():
            assert a.getinfo(name).compress_type == zipfile.ZIP_STORED
            assert a.read(name) == b.read(name), name


def test_no_partial_output_on_error(tmp_path):
    dirs = _write_synth("ntu60", tmp_path / "raw")
    bad = dirs[0] / "S009C003P014R001A060.skeleton"
    lines = bad.read_text().splitlines()
    lines[40] = "x " + lines[40]  # a joint line of frame 2
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "NTU60_CS.npz").write_text("old")
    for workers in (1, 2):
        with pytest.raises(DataError, match=r"S009C003P014R001A060\.skeleton: line 41: joint line has 13 fields"):
            prepare_ntu("ntu60", dirs, out, workers=workers, progress=False)
        assert sorted(os.listdir(out)) == ["NTU60_CS.npz"]
        assert (out / "NTU60_CS.npz").read_text() == "old"


def test_unusable_samples_are_skipped_and_reported(tmp_path, caplog):
    dirs = _write_synth("ntu60", tmp_path / "raw")
    # two bodies of 5 frames each: the reference scripts crash on such a file
    src = (dirs[0] / "S001C001P001R001A001.skeleton").read_text().splitlines()
    frame = src[1:29]
    other = [frame[0], frame[1].replace(frame[1].split()[0], "72057594037999999")] + frame[2:]
    lines = ["5"] + [ln for _ in range(5) for ln in ["2"] + frame[1:] + other[1:]]
    (dirs[0] / "S002C002P002R002A002.skeleton").write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="stdcl.data.ntu_prepare"):
        summary = prepare_ntu("ntu60", dirs, tmp_path / "out", progress=False)
    assert summary.skipped_files["unusable (the reference pipeline fails on it)"] == 1
    assert "S002C002P002R002A002.skeleton: skipped: all 2 bodies are 11 frames or shorter" in caplog.text
    names = json.loads((tmp_path / "out" / "NTU60_CS.names.json").read_text())
    assert "S002C002P002R002A002" not in names["train"] + names["test"]
    assert summary.files_processed == sum(summary.samples["NTU60_CS"].values())
    text = str(summary)
    assert "files processed" in text and "NTU60_CV test" in text and "in the missing-skeleton list" in text


def test_no_files_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no ntu60 .skeleton files"):
        prepare_ntu("ntu60", [tmp_path], tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="raw skeleton folder not found"):
        prepare_ntu("ntu60", [tmp_path / "nope"], tmp_path / "out", progress=False)


def test_bench_prepare_smoke(tmp_path):
    from stdcl.bench.prepare import bench_prepare, make_bench_folder

    src = tmp_path / "src"
    write_files({n: t for n, t in _synth("ntu60").items() if n != MISSING_NAME}, src)
    names = make_bench_folder(sorted(src.glob("*.skeleton")), 30, tmp_path / "copies")
    assert len(set(names)) == 30 and not set(names) & missing_names("ntu60")
    res = bench_prepare(src, copies=12, verbose=False)
    assert res["runs"][0]["files"] == 12 and res["files_per_s"] > 0 and res["rss_peak_mb"] > 0


def test_interrupt_leaves_nothing_behind(tmp_path, monkeypatch):
    from stdcl.data import ntu_prepare

    dirs = _write_synth("ntu60", tmp_path / "raw")
    calls = []

    def interrupted(self, k, x, info):
        calls.append(k)
        if len(calls) == 4:
            raise KeyboardInterrupt
    monkeypatch.setattr(ntu_prepare._Collector, "add", interrupted)
    out = tmp_path / "out"
    for workers in (1, 2):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            prepare_ntu("ntu60", dirs, out, workers=workers, progress=False)
        assert os.listdir(out) == []


def test_too_long_sample_is_an_error(tmp_path):
    lines = _synth("ntu60")["S001C001P001R001A001"].replace("\r\n", "\n").splitlines()
    frame = lines[1:29]
    p = tmp_path / "raw" / "S001C001P001R001A001.skeleton"
    p.parent.mkdir()
    p.write_text("\n".join(["301"] + frame * 301) + "\n")
    (tmp_path / "raw" / "S001C002P002R001A002.skeleton").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"S001C001P001R001A001\.skeleton: 301 frames after denoising"):
        prepare_ntu("ntu60", [tmp_path / "raw"], tmp_path / "out", progress=False)


def test_dropped_details_are_logged(tmp_path, caplog):
    dirs = _write_synth("ntu60", tmp_path / "raw")
    with caplog.at_level("DEBUG", logger="stdcl.data.ntu_prepare"):
        prepare_ntu("ntu60", dirs + dirs, tmp_path / "out", progress=False)  # a folder given twice counts once
    text = caplog.text
    assert "S010C001P006R002A058: body " in text and "dropped (length <= 11 frames; 11 frames" in text
    assert "dropped (spread ratio >= 0.69754" in text and "dropped (overlaps both actors" in text
    assert "S004C002P003R002A003: 6 frames without bodies dropped: [0, 1, 9, 10, 22, 23]" in text
    assert "frames with both actors missing removed" in text
    assert "duplicate name" not in text
