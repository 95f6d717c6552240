"""analysis.query: one user sequence read exactly as the datasets read it, its prediction and neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import query as up
from analysis.datasets import open_analysis_data
from analysis.models import LoadedModel, load_model
from stdcl.data.base import SkeletonDataset
from stdcl.data.classes import UCLA_CLASSES, ntu_classes
from stdcl.data.ntu_prepare import prepare_ntu
from stdcl.data.registry import open_dataset
from stdcl.encoders import build_encoder
from stdcl.errors import DataError
from tests.support.app import bundled_model, module_env, subset_embeddings
from tests.support.ntu_skeleton import synth_files, write_files


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory, ("cache", "uploads"))


@pytest.fixture(scope="module")
def model(env) -> LoadedModel:
    return bundled_model("A")


@pytest.fixture(scope="module")
def data(model):
    return open_analysis_data(model, "test")


@pytest.fixture(scope="module")
def emb(model, data):
    return subset_embeddings(model, data, 100)


def _one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


# -- .npy ---------------------------------------------------------------------------------------------

def test_npy_of_a_synthetic_sample_round_trips_to_the_dataset_input(tmp_path, model, data):
    for i in (0, 12, 200):  # one-person and two-person classes
        raw = data.dataset.raw(i)
        p = tmp_path / f"sample{i}.npy"
        np.save(p, raw)
        seq = up.sequence_input(p, model)
        assert seq.x.dtype == np.float32 and seq.x.shape == (3, 32, 25, 2)
        assert np.array_equal(seq.x, data.dataset[i][0])
        assert np.array_equal(seq.raw, raw) and seq.dataset == "synthetic" and seq.label is None
    # (T, V, C) of a one-person sample: the missing person is zero, as in the dataset's array
    raw = data.dataset.raw(0)
    assert not np.abs(raw[..., 1]).any()
    p = tmp_path / "tvc.npy"
    np.save(p, raw[..., 0].transpose(1, 2, 0).astype(np.float64))
    assert np.array_equal(up.sequence_input(p, model).x, data.dataset[0][0])
    # an already preprocessed input is taken as is
    p = tmp_path / "pre.npy"
    np.save(p, data.dataset[5][0])
    assert np.array_equal(up.sequence_input(p, model, transformed=True).x, data.dataset[5][0])


def test_modality_is_applied_like_the_dataset(tmp_path, model, data):
    ds = data.dataset
    bone = SkeletonDataset(ds.source, ds.transform, modality="bone")
    p = tmp_path / "s.npy"
    np.save(p, ds.raw(7))
    seq = up.sequence_input(p, model, modality="bone")
    assert seq.modality == "bone" and np.array_equal(seq.x, bone[7][0])
    assert not np.array_equal(seq.x, ds[7][0])


# -- raw NTU .skeleton ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bench, dataset", [("ntu60", "ntu60-xsub"), ("ntu120", "ntu120-xsub")])
def test_skeleton_equals_the_prepare_pipeline_plus_transform(tmp_path, model, bench, dataset):
    raw, raw120, out = tmp_path / "raw", tmp_path / "raw120", tmp_path / "out"
    write_files(synth_files(bench), raw, raw120 if bench == "ntu120" else None)
    prepare_ntu(bench, [raw, raw120] if bench == "ntu120" else [raw], out, progress=False)
    ref = open_dataset(dataset, out, "test", window=model.encoder.window)
    assert len(ref) > 5
    one_actor = 0
    for i, name in enumerate(ref.names):
        path = next(p for d in (raw, raw120) if (p := d / f"{name}.skeleton").is_file())
        seq = up.sequence_input(path, model, dataset=dataset)
        assert seq.format == "skeleton" and seq.dataset == dataset
        assert np.array_equal(seq.x, ref[i][0]), name
        one_actor += int(not np.abs(ref.raw(i)[..., 1]).any() or np.array_equal(ref.raw(i)[..., 0],
                                                                                  ref.raw(i)[..., 1]))
    assert one_actor  # the one-actor convention (zero or duplicated actor 2) is covered


def test_a_sequence_from_another_benchmark_than_the_model_is_flagged(tmp_path, model):
    import dataclasses

    raw = tmp_path / "raw"
    write_files(synth_files("ntu60"), raw, None)
    path = sorted(raw.glob("*.skeleton"))[0]
    seq = up.sequence_input(path, model)
    note = up.origin_notice(seq, model)  # a synthetic-data model reading a real NTU recording
    assert note is not None and note.startswith(f"{seq.name} is a NTU RGB+D (ntu25 skeleton) recording")
    assert "learned synthetic with its own 13 classes" in note and "not as a recognition" in note
    ntu_model = dataclasses.replace(model, meta=dict(model.meta, dataset="ntu60-xsub", class_names=ntu_classes(60)))
    assert up.origin_notice(seq, ntu_model) is None  # the model's own benchmark
    npy = dataclasses.replace(seq, format="npy")
    assert up.origin_notice(npy, model) is None  # a bare array says nothing of where it comes from
    ucla = dataclasses.replace(seq, format="json")  # NW-UCLA's layout against an NTU-layout model
    note = up.origin_notice(ucla, ntu_model)
    assert note is not None and "NW-UCLA (ucla20 skeleton)" in note and "the ntu25 skeleton layout of ntu60-xsub" in note


# -- NW-UCLA .json --------------------------------------------------------------------------------------

def _ucla_json(rng: np.random.Generator, frames: int, label: int) -> dict:
    sk = (rng.standard_normal((frames, 20, 3)) * 0.3 + np.array([0.0, 0.5, 3.0])).round(5)
    return {"file_name": "x", "skeletons": sk.tolist(), "label": label}


def _ucla_model() -> LoadedModel:
    torch.manual_seed(0)
    enc = build_encoder("hcn", num_classes=10, layout="ucla20", num_person=1, window=52).eval()
    meta = {"dataset": "ucla", "class_names": list(UCLA_CLASSES), "modality": "joint"}
    return LoadedModel(enc, None, meta, Path("ucla_hcn.safetensors"), "ucla-test", "ucla_hcn", "file")


def test_ucla_json_equals_the_dataset_item(tmp_path, env):
    folder = tmp_path / "ucla" / "all_sqe"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = {"a01_s01_e00_v03": 1, "a06_s02_e01_v03": 6, "a12_s03_e02_v03": 10, "a01_s01_e00_v01": 1}
    for i, (name, label) in enumerate(names.items()):
        (folder / f"{name}.json").write_text(json.dumps(_ucla_json(rng, 20 + 17 * i, label)))
    model = _ucla_model()
    ref = open_dataset("ucla", tmp_path / "ucla", "test")
    assert len(ref) == 3
    for i, name in enumerate(ref.names):
        seq = up.sequence_input(folder / f"{name}.json", model)
        assert seq.x.shape == (3, 52, 20, 1) and seq.dataset == "ucla"
        assert np.array_equal(seq.x, ref[i][0]), name
        assert seq.label == int(ref.labels[i])


# -- bad files ----------------------------------------------------------------------------------------------

def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, model):
    cases = {
        "garbage.npy": b"not an array",
        "text.txt": b"1 2 3",
        "trunc.skeleton": b"3\n1\n",
        "bad.json": b'{"skeletons": [[[0, 0, 0]',
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(DataError) as exc:
            up.sequence_input(p, model)
        _one_line(exc, p)

    def npy(name: str, arr: np.ndarray, **kw) -> Path:
        p = tmp_path / name
        np.save(p, arr, **kw)
        return p

    for p, problem in [
        (npy("obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True), "holds Python objects"),
        (npy("five.npy", np.zeros((1, 3, 10, 25, 2))), "expected (C, T, V, M) or (T, V, C)"),
        (npy("nan.npy", np.full((3, 10, 25, 2), np.nan)), "non-finite"),
        (npy("joints.npy", np.ones((3, 10, 20, 1))), "20 joints; synthetic_hcn_stdcl uses layout 'ntu25'"),
        (npy("persons.npy", np.ones((3, 10, 25, 3))), "3 persons; synthetic_hcn_stdcl reads at most 2"),
        (npy("chan.npy", np.ones((2, 10, 25, 2))), "2 coordinates per joint"),
        (npy("frames.npy", np.ones((3, 10, 25, 2))), None),
    ]:
        if problem is None:  # fine raw, but not a preprocessed input of 32 frames
            with pytest.raises(DataError) as exc:
                up.sequence_input(p, model, transformed=True)
            assert "10 frames" in _one_line(exc, p)
            continue
        with pytest.raises(DataError) as exc:
            up.sequence_input(p, model)
        assert problem in _one_line(exc, p)
    p = tmp_path / "x.json"
    p.write_text(json.dumps(_ucla_json(np.random.default_rng(0), 5, 1)))
    with pytest.raises(DataError) as exc:
        up.sequence_input(p, model, transformed=True)
    assert "only a .npy" in _one_line(exc, p)


# -- where it falls -----------------------------------------------------------------------------------------

def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_analysis_of_a_sequence_matches_brute_force(model, data, emb):
    x = data.dataset[int(emb.indices[3])][0]
    res = up.analyse_sequence(model, x, emb, k=4)
    with torch.no_grad():
        logits = model.encoder(torch.as_tensor(x)[None]).double().numpy()[0]
    prob = np.exp(logits - logits.max())
    prob /= prob.sum()
    np.testing.assert_allclose(res.probabilities, prob, atol=1e-6)
    assert [r.index for r in res.top] == list(np.argsort(-prob)[:5])
    assert res.top[0].name == model.class_names[res.prediction] and res.top[0].rank == 1
    # the same sample's embeddings equal its row in the split's embeddings
    np.testing.assert_allclose(res.spaces["spatial"], emb.space("spatial")[3], atol=1e-4)
    for space in ("spatial", "temporal", "global"):
        sims = _unit(emb.space(space)) @ _unit(res.spaces[space])
        order = sorted(range(len(emb)), key=lambda r: (-sims[r], r))[:4]
        got = res.neighbours[space]
        assert [r["row"] for r in got] == order
        np.testing.assert_allclose([r["cosine"] for r in got], sims[order], atol=1e-9)
        assert [r["same_class"] for r in got] == [bool(emb.labels[r] == res.prediction) for r in order]
    assert got[0]["row"] == 3  # its own copy in the split is the nearest


def test_place_by_neighbours_is_the_weighted_mean_of_neighbour_positions(emb):
    coords = np.random.default_rng(0).normal(size=(len(emb), 2))
    vec = emb.space("temporal")[10] + 0.01
    xy = up.place_by_neighbours(coords, emb, "temporal", vec, k=6)
    sims = _unit(emb.space("temporal")) @ _unit(vec)
    rows = sorted(range(len(emb)), key=lambda r: (-sims[r], r))[:6]
    w = np.clip(sims[rows], 0, None)
    np.testing.assert_allclose(xy, (coords[rows] * w[:, None]).sum(0) / w.sum(), atol=1e-9)
