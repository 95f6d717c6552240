"""Training-time probes (stdcl.train.probes): the schedule, the compact storage, that probing never
changes training, that the last snapshot's predictions are the final test evaluation's, resume,
and that damaged probe files give a one-line DataError."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stdcl.errors import DataError
from stdcl.train.engine import train
from stdcl.train.probes import has_probes, probe_epochs, read_probes, reduce_rows
from stdcl.train.run_dir import read_metrics
from tests.data.test_fuzz_readers import BYTE_EDITS, edit_bytes
from tests.support.training import assert_same_tensors, tensors, tiny_config


def test_probe_epochs_thin_the_evaluations_evenly_and_keep_the_last() -> None:
    assert probe_epochs(5, 1, 16) == [1, 2, 3, 4, 5]
    assert probe_epochs(65, 1, 16)[-1] == 65 and len(probe_epochs(65, 1, 16)) == 16
    gaps = np.diff(probe_epochs(65, 1, 16))
    assert gaps.max() - gaps.min() <= 1  # evenly spaced
    assert probe_epochs(10, 3, 16) == [3, 6, 9, 10]
    assert probe_epochs(10, 0, 16) == [10]
    assert probe_epochs(10, 1, 1) == [10]
    assert probe_epochs(0, 1, 4) == []


def test_reduce_rows_keeps_narrow_spaces_whole_and_wide_ones_as_their_best_rank_k_code() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)) * rng.uniform(0.1, 5, size=(40, 1))
    x[3] = 0
    coords, energy = reduce_rows(x, 16)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    assert coords.dtype == np.float16 and coords.shape == (40, 8) and energy == 1.0
    np.testing.assert_allclose(coords, unit, atol=1e-3)
    assert not coords[3].any()
    for n, width in ((30, 200), (300, 50)):  # Gram (N <= width) and covariance (N > width) routes
        w = rng.normal(size=(n, width)) @ np.diag(np.linspace(3, 0.1, width))
        coords, energy = reduce_rows(w, 10)
        u = w / np.linalg.norm(w, axis=1, keepdims=True)
        s = np.linalg.svd(u, compute_uv=False)
        assert coords.shape == (n, 10)
        assert energy == pytest.approx((s[:10] ** 2).sum() / n, rel=1e-6)
        best = u @ np.linalg.svd(u, full_matrices=False)[2][:10].T  # Eckart-Young: the best rank-10 Gram
        np.testing.assert_allclose(coords.astype(np.float64) @ coords.T, best @ best.T, atol=5e-3)


def test_probes_do_not_change_training_and_the_last_snapshot_is_the_final_test_evaluation(tmp_path) -> None:
    torch.set_num_threads(1)
    extra = ("train.epochs=2",)
    train(tiny_config(*extra), tmp_path / "on")
    train(tiny_config(*extra, "probe.enabled=false"), tmp_path / "off")
    assert_same_tensors(tensors(tmp_path / "on" / "last.safetensors"), tensors(tmp_path / "off" / "last.safetensors"))
    assert not has_probes(tmp_path / "off") and has_probes(tmp_path / "on")

    s = read_probes(tmp_path / "on")
    assert [x.step for x in s.snapshots] == [0, 16, 32] and s.epochs == [0.0, 1.0, 2.0]
    assert s.split == "test" and len(s.labels) == 57 and s.stdcl and s.encoder == "hcn"
    assert s.spaces == ["spatial", "temporal", "spatial_pooled", "temporal_pooled", "global"]
    for snap in s.snapshots:
        assert all(v.shape == (57, min(32, snap.width[k])) for k, v in snap.spaces.items())
        unit = np.linalg.norm(snap.spaces["spatial"], axis=1)  # head dim 32 = probe dim: whole unit rows
        np.testing.assert_allclose(unit, 1.0, atol=2e-3)
    final = [r for r in read_metrics(tmp_path / "on") if r["kind"] == "final"][0]
    assert s.accuracy(2) == pytest.approx(final["test_top1"])  # the whole test split, same predictions
    assert s.class_meta and len(s.class_meta) == len(s.class_names) == 13


def test_probe_subset_of_the_validation_split_is_stratified_and_baselines_have_no_head_spaces(tmp_path) -> None:
    torch.set_num_threads(1)
    train(tiny_config("train.max_steps=3", "probe.split=val", "probe.max_samples=1000", stdcl="off"), tmp_path / "v")
    s = read_probes(tmp_path / "v")
    assert s.split == "val" and len(s.labels) == 13 and not s.stdcl
    assert s.spaces == ["spatial_pooled", "temporal_pooled", "global"]
    assert [x.step for x in s.snapshots] == [0, 3] and s.epochs[1] == pytest.approx(3 / 16)
    train(tiny_config("train.max_steps=1", "probe.max_samples=26"), tmp_path / "t")
    s = read_probes(tmp_path / "t")
    counts = np.bincount(s.labels, minlength=13)
    assert counts.sum() in range(24, 29) and counts.min() >= 1  # every class, in proportion


def test_resumed_run_writes_the_same_probes(tmp_path) -> None:
    from stdcl.cli import main

    torch.set_num_threads(1)
    extra = ("train.epochs=2",)
    train(tiny_config(*extra), tmp_path / "full")
    train(tiny_config(*extra, "debug.stop_after_steps=20"), tmp_path / "cut")
    # a snapshot written after the saved state (killed before the save) is dropped and written again
    (tmp_path / "cut" / "probes" / "step-00000032.npz").write_bytes(b"stale")
    assert main(["-q", "train", "--resume", str(tmp_path / "cut")]) == 0
    a, b = read_probes(tmp_path / "full"), read_probes(tmp_path / "cut")
    assert [x.step for x in a.snapshots] == [x.step for x in b.snapshots] == [0, 16, 32]
    for x, y in zip(a.snapshots, b.snapshots):
        assert np.array_equal(x.pred, y.pred)
        assert all(np.array_equal(x.spaces[k], y.spaces[k]) for k in x.spaces)


# -- damaged files -------------------------------------------------------------------------------

_FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("probes") / "run"
    train(tiny_config("train.max_steps=2", "probe.max_samples=20"), run)
    return run


def _copy(run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(run / "probes", out / "probes")
    return out


@given(edits=BYTE_EDITS, which=st.sampled_from(["index.json", "step-00000002.npz"]))
@_FUZZ
def test_damaged_probe_files_give_a_data_error_or_a_valid_series(probe_run, tmp_path, edits, which) -> None:
    run = _copy(probe_run, tmp_path)
    f = run / "probes" / which
    f.write_bytes(edit_bytes(f.read_bytes(), edits))
    try:
        s = read_probes(run)
    except DataError as e:
        assert str(e).splitlines()[0] == str(e)
        return
    assert len(s.snapshots) == 2 and all(len(x.pred) == len(s.labels) for x in s.snapshots)


_INDEX_EDITS = [("format", "other"), ("labels", [0, 99]), ("labels", "x"), ("names", [1, 2]), ("dim", 0),
                ("dim", True), ("class_names", []), ("class_meta", [{}]), ("indices", [-1]), ("split", None)]


@pytest.mark.parametrize("key,value", _INDEX_EDITS)
def test_index_fields_are_checked(probe_run, tmp_path, key, value) -> None:
    run = _copy(probe_run, tmp_path)
    f = run / "probes" / "index.json"
    idx = json.loads(f.read_text())
    idx[key] = value
    f.write_text(json.dumps(idx))
    with pytest.raises(DataError, match="index.json"):
        read_probes(run)


@given(key=st.sampled_from(["epoch", "step", "pred", "space:spatial", "energy:spatial", "width:global"]),
       value=st.sampled_from([np.float64(np.nan), np.int64(-1), np.zeros((3, 3), np.float16), np.array("x"),
                              np.full((20, 40), np.inf, np.float16), np.zeros(20, np.float32)]))
@_FUZZ
def test_snapshot_members_of_the_wrong_type_or_shape(probe_run, tmp_path, key, value) -> None:
    run = _copy(probe_run, tmp_path)
    f = run / "probes" / "step-00000002.npz"
    with np.load(f) as z:
        a = {k: z[k] for k in z.files}
    a[key] = value
    buf = io.BytesIO()
    np.savez(buf, **a)
    f.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="step-00000002.npz"):
        read_probes(run)


def test_missing_probes_name_the_run(tmp_path) -> None:
    with pytest.raises(DataError, match="has no training probes"):
        read_probes(tmp_path)


def test_export_with_probes_puts_them_beside_the_checkpoint(probe_run, tmp_path) -> None:
    from stdcl.cli import main
    from stdcl.train.probes import probe_folder

    out = tmp_path / "exp" / "demo.safetensors"
    assert main(["-q", "export", str(probe_run), "--which", "last", "--with-probes", "--out", str(out)]) == 0
    assert probe_folder(out) == tmp_path / "exp" / "demo.probes"
    assert probe_folder(probe_run / "last.safetensors") == probe_run / "probes"
    a, b = read_probes(probe_run), read_probes(out)
    assert a.names == b.names and [x.step for x in a.snapshots] == [x.step for x in b.snapshots]
    assert all(np.array_equal(x.spaces[k], y.spaces[k]) for x, y in zip(a.snapshots, b.snapshots) for k in x.spaces)
    assert not [p for p in (tmp_path / "exp").iterdir() if p.name.startswith(".")]  # no temporary left
