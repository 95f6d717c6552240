"""The Start (walkthrough) and Models-and-data pages on the bundled demo (AppTest)."""

from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")

from analysis import walkthrough as wt  # noqa: E402
from analysis.embeddings import POOLED_DEFINITION, embed_batch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from safetensors.torch import save as save  # noqa: E402
from stdcl.encoders import build_encoder  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402
from tests.support.app import module_env, open_app, reference, tables  # noqa: E402

STDCL, BASELINE = "bundled: synthetic_hcn_stdcl", "bundled: synthetic_hcn_baseline"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory, ("cache", "runs", "uploads"))


@pytest.fixture(scope="module")
def demo(env):
    """The STD-CL demo model, its data and the embeddings the pages analyse (same subset)."""
    return reference("A")


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


# -- Start ------------------------------------------------------------------------------------------------

def test_start_walks_one_sample_through_the_method(demo):
    model, _, emb = demo
    at = open_app()  # the default page
    assert _texts(at.title) == ["Spatial-temporal decoupling, step by step"]
    heads = _texts(at.subheader)
    assert len(heads) == 6 and heads[0].startswith("1 · The input") and heads[5].startswith("6 · Why two spaces")
    metrics = {m.label: m.value for m in at.metric}
    c, t, v = model.encoder.feature_shape(model.encoder.window)
    assert (metrics["channels C'"], metrics["frames T'"], metrics["joints V'"]) == (str(c), str(t), str(v))
    assert len(at.get("plotly_chart")) == 6  # skeleton, activity, per joint, per frame, strips, class similarity
    row = int(np.flatnonzero(emb.labels == 0)[0])  # first sample of the first class
    assert at.session_state["start_row"] == row
    partners = tables(at, "sample", "class", "cosine", "predicted")
    assert len(partners) == 4  # positives and negatives, spatial then temporal
    for i, space in enumerate(("spatial", "temporal")):
        ref = wt.contrast_partners(emb, row, space, k=5)
        pos, neg = partners[2 * i], partners[2 * i + 1]
        assert pos["sample"].tolist() == [r["name"] for r in ref["positives"]]
        assert neg["sample"].tolist() == [r["name"] for r in ref["negatives"]]
        assert (pos["class"] == emb.class_names[0]).all() and (neg["class"] != emb.class_names[0]).all()
        assert pos["cosine"].is_monotonic_increasing and neg["cosine"].is_monotonic_decreasing
    ref = wt.twin_contrast(emb, row)
    (twin,) = tables(at, "space", "to own class", "to wave right hand", "margin (own − twin)")
    assert twin["space"].tolist() == ["spatial", "temporal"]
    margins = [ref["spaces"][s]["margin"] for s in ("spatial", "temporal")]
    np.testing.assert_allclose(twin["margin (own − twin)"], margins, atol=1e-4)
    assert any("are **spatial twins**" in m for m in _texts(at.markdown))
    # the jargon is explained where it first appears, and the glossary lists every term
    from app.glossary import GLOSSARY

    shown = " ".join(_texts(at.markdown) + _texts(at.caption))
    for name in ("pooling", "L2-normalised", "memory bank", "cosine", "InfoNCE", "P / K"):
        assert GLOSSARY[name] in shown, name
    (glossary,) = [m for m in _texts(at.markdown) if m.startswith("- **pooling**")]
    assert all(f"- **{k}**: {v}." in glossary for k, v in GLOSSARY.items())


def test_start_temporal_twin_and_a_baseline(demo):
    _, _, emb = demo
    at = open_app()
    at.selectbox(key="start_class").set_value(6).run()  # sit down, temporal twin of stand up
    assert not at.exception
    row = at.session_state["start_row"]
    at.switch_page("views/models.py")
    at.run()
    at.switch_page("views/start.py")
    at.run()  # back on the page: the same sample
    assert at.session_state["start_class"] == 6 and at.session_state["start_row"] == row
    assert emb.labels[row] == 6
    ref = wt.twin_contrast(emb, row)
    (twin,) = tables(at, "space", "to own class", "to stand up", "margin (own − twin)")
    np.testing.assert_allclose(twin["to stand up"], [ref["spaces"][s]["twin"] for s in ("spatial", "temporal")],
                               atol=1e-4)
    best = max(ref["spaces"], key=lambda s: ref["spaces"][s]["margin"])
    assert any(f"The larger margin is in the **{best}** space" in c for c in _texts(at.caption))

    at.selectbox(key="start_model").set_value(BASELINE).run()
    assert not at.exception
    assert POOLED_DEFINITION in _texts(at.info)
    assert any("is a baseline" in m for m in _texts(at.markdown))
    assert at.session_state["model_a"] == STDCL  # explaining another checkpoint leaves model A as it was


# -- Models and data --------------------------------------------------------------------------------------

def test_models_page_shows_and_switches_checkpoints(demo):
    at = open_app("models")
    assert _texts(at.header) == ["Checkpoints", "Data", "Your own sequence"]
    assert at.session_state["model_a"] == STDCL and at.session_state["model_b"] == BASELINE
    desc = [m for m in _texts(at.markdown) if m.startswith("**A: ") or m.startswith("**B: ")]
    assert desc == ["**A: synthetic_hcn_stdcl: hcn, STD-CL, synthetic, 13 classes, window 32**",
                    "**B: synthetic_hcn_baseline: hcn, baseline, synthetic, 13 classes, window 32**"]
    meta, meta_b = tables(at, "", "value")
    facts = dict(zip(meta.iloc[:, 0], meta["value"]))
    assert facts["dataset"] == "synthetic" and facts["epochs trained"] == str(demo.model.meta["epoch"])
    assert facts["recorded test top-1"] == f"{demo.model.meta['best']['test_top1']:.2%}"
    assert dict(zip(meta_b.iloc[:, 0], meta_b["value"]))["STD-CL head"] == "no (baseline)"
    assert any("synthetic test (joint, 858 samples, 13 classes)" in s for s in _texts(at.success))

    # choosing A brings its pair as B: the CTR-GCN STD-CL checkpoint with the CTR-GCN baseline
    at.selectbox(key="models_a").set_value("bundled: synthetic_ctrgcn_stdcl").run()
    assert not at.exception
    assert at.session_state["model_b"] == at.selectbox(key="models_b").value == "bundled: synthetic_ctrgcn_baseline"
    assert any("B is now **bundled: synthetic_ctrgcn_baseline**, the baseline counterpart of A" in i
               for i in _texts(at.info))
    at.selectbox(key="models_a").set_value(BASELINE).run()
    assert at.session_state["model_b"] == STDCL  # a baseline's counterpart is its STD-CL checkpoint
    at.selectbox(key="models_b").set_value("(none)").run()
    assert not at.exception
    assert at.session_state["model_a"] == BASELINE and at.session_state["model_b"] is None
    desc = [m for m in _texts(at.markdown) if m.startswith("**A: ")]
    assert desc == ["**A: synthetic_hcn_baseline: hcn, baseline, synthetic, 13 classes, window 32**"]
    assert any("No checkpoint B" in c for c in _texts(at.caption))
    at.switch_page("views/start.py")
    at.run()
    assert not at.exception
    assert at.session_state["start_model"] == BASELINE  # the walkthrough follows model A
    assert POOLED_DEFINITION in _texts(at.info)


def test_runs_folder_is_validated_and_searched(demo, tmp_path):
    at = open_app("models")
    missing = tmp_path / "nope"
    at.text_input(key="models_runs_folder").set_value(str(missing)).run()
    assert not at.exception
    assert f"{missing}: no such folder" in _texts(at.error)
    (tmp_path / "empty").mkdir()
    at.text_input(key="models_runs_folder").set_value(str(tmp_path / "empty")).run()
    from app.state import RUNS_DIR  # where fine-tuning writes is named, not "the default folder"

    assert any(f"writes its runs to {RUNS_DIR.resolve()}" in c for c in _texts(at.caption))
    src = demo.model.path
    run = tmp_path / "myruns" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: {}\n")
    for suffix in (".safetensors", ".json", ".head.safetensors"):
        shutil.copy(src.with_name(src.stem + suffix), run / f"best{suffix}")
    at.text_input(key="models_runs_folder").set_value(str(tmp_path / "myruns")).run()
    assert not at.exception and not at.error
    assert "runs (myruns): r1" in at.selectbox(key="models_a").options
    at.selectbox(key="models_a").set_value("runs (myruns): r1").run()
    assert not at.exception
    assert any(m.startswith("**A: r1/best: hcn, STD-CL") for m in _texts(at.markdown))
    at.switch_page("views/start.py")
    at.run()
    assert at.session_state["start_model"] == "runs (myruns): r1" and not at.exception
    at.switch_page("views/models.py")
    at.run()  # back again: the folder and the choice are kept
    assert at.text_input(key="models_runs_folder").value == str(tmp_path / "myruns")
    assert at.selectbox(key="models_a").value == "runs (myruns): r1"


def test_data_choice_paths_and_incompatible_data_are_messages(demo, tmp_path):
    at = open_app("models")
    at.radio(key="models_data_kind").set_value("prepared NTU (.npz folder)").run()
    assert not at.exception
    assert any(e.startswith("ntu60-xsub: enter the path") for e in _texts(at.error))
    assert at.session_state["data_choice"] == {"split": "test"}  # unchanged until the path is valid
    at.text_input(key="models_data_path").set_value(str(tmp_path / "absent")).run()
    assert f"{tmp_path / 'absent'}: no such file or folder" in _texts(at.error)
    assert at.session_state["data_choice"] == {"split": "test"}

    folder = tmp_path / "ucla" / "all_sqe"
    folder.mkdir(parents=True)
    sk = np.random.default_rng(0).normal(size=(12, 20, 3)).round(4).tolist()
    (folder / "a01_s01_e00_v03.json").write_text(json.dumps({"file_name": "x", "skeletons": sk, "label": 1}))
    at.radio(key="models_data_kind").set_value("NW-UCLA (json folder)").run()
    at.text_input(key="models_data_path").set_value(str(tmp_path / "ucla")).run()
    assert not at.exception
    assert at.session_state["data_choice"] == {"dataset": "ucla", "path": str(tmp_path / "ucla"), "split": "test"}
    errors = _texts(at.error)
    assert any("layout 'ntu25' (25 joints)" in e and "'ucla20' (20 joints)" in e for e in errors), errors
    at.radio(key="models_data_kind").set_value("synthetic (generated)").run()
    assert not at.exception and not at.error
    assert at.session_state["data_choice"] == {"dataset": "synthetic", "split": "test"}


def test_upload_one_sequence(demo):
    model, data, emb = demo
    at = open_app("models")
    i = int(emb.indices[20])
    buf = io.BytesIO()
    np.save(buf, data.dataset.raw(i))
    at.file_uploader(key="models_seq_file").set_value(("mine.npy", buf.getvalue(), "application/octet-stream")).run()
    assert not at.exception and not at.error
    with torch.no_grad():
        out = embed_batch(model, torch.as_tensor(data.dataset[i][0])[None])
    pred = int(out["logits"].argmax())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predicted class"] == model.class_names[pred]
    (top,) = tables(at, "class", "probability")
    assert top["class"].iloc[0] == model.class_names[pred] and top["probability"].is_monotonic_decreasing
    near, _ = tables(at, "sample", "class", "cosine", "same as prediction")
    assert near["sample"].iloc[0] == emb.names[20]  # its own copy in the split
    assert near["cosine"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert len([c for c in at.get("plotly_chart") if "models_seq" in c.proto.id]) >= 5
    at.file_uploader(key="models_seq_file").set_value(("bad.npy", b"not numpy", "application/octet-stream")).run()
    assert not at.exception
    assert "bad.npy: not a .npy file (no NumPy header)" in _texts(at.error)


def test_upload_of_a_real_ntu_recording_says_where_it_comes_from(demo, tmp_path):
    from tests.support.ntu_skeleton import synth_files, write_files

    write_files(synth_files("ntu60"), tmp_path / "raw", None)
    path = sorted((tmp_path / "raw").glob("*.skeleton"))[0]
    at = open_app("models")
    at.file_uploader(key="models_seq_file").set_value((path.name, path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception and not at.error
    assert any(w.startswith(f"{path.stem} is a NTU RGB+D (ntu25 skeleton) recording") for w in _texts(at.warning))
    # the attribution parts are checked against the cosine they split, as on the Attention page
    checks = [m for m in _texts(at.markdown) if m.startswith("**Check (")]
    assert [c.split(")")[0] for c in checks] == ["**Check (spatial", "**Check (temporal"]
    totals = []
    for c in checks:
        m = re.search(r"contributions = (-?[\d.]+), plus the bias part (-?[\d.]+), gives \*\*(-?[\d.]+) = cos", c)
        assert m, c
        parts, bias, total = (float(g) for g in m.groups())
        assert parts + bias == pytest.approx(total, abs=2e-4)
        totals.append(total)
    negative = [x for x in _texts(at.caption) if x.startswith("The cosine is negative")]
    assert len(negative) == sum(t < 0 for t in totals)


def test_upload_checkpoint_and_import_official(demo, tmp_path):
    src = demo.model.path
    at = open_app("models")
    files = [(f"mine{s}", src.with_name(src.stem + s).read_bytes(), "application/octet-stream")
             for s in (".safetensors", ".json", ".head.safetensors")]
    at.file_uploader(key="models_ckpt_files").set_value(files).run()
    at.button(key="models_ckpt_add").click().run()
    assert not at.exception and not at.error
    assert "upload: mine" in at.session_state["extra_models"]
    assert any(m.startswith("Added **upload: mine**") for m in _texts(at.success))
    assert "upload: mine" in at.selectbox(key="models_a").options
    at.file_uploader(key="models_ckpt_files").set_value([files[0]]).run()
    at.button(key="models_ckpt_add").click().run()
    assert not at.exception
    assert "mine.safetensors: its metadata mine.json is missing: upload the .json written beside it" in _texts(at.error)

    torch.manual_seed(0)
    enc = build_encoder("hcn", num_classes=13, layout="ntu25", window=32)
    buf = io.BytesIO()
    torch.save(enc.state_dict(), buf)
    at.file_uploader(key="models_off_file").set_value(("hcn_official.pt", buf.getvalue(), "application/octet-stream"))
    at.selectbox(key="models_off_encoder").set_value("hcn")
    at.selectbox(key="models_off_dataset").set_value("(none)")
    at.number_input(key="models_off_classes").set_value(13)
    at.number_input(key="models_off_window").set_value(32)
    at.run()
    at.button(key="models_off_import").click().run()
    assert not at.exception and not at.error
    assert "imported: hcn_official" in at.session_state["extra_models"]
    at.selectbox(key="models_b").set_value("imported: hcn_official").run()
    assert not at.exception
    assert any(m.startswith("**B: hcn_official: hcn, baseline") for m in _texts(at.markdown))
    # imported without naming its dataset: which data it reads is a message, not a traceback
    assert "hcn_official: records no dataset; choose one" in _texts(at.error)


def test_sum_check_explains_a_negative_cosine():
    def page(cos):
        import numpy as np

        from app.widgets import sum_check

        sum_check({"contributions": np.array([0.1, -0.4]), "bias_contribution": cos + 0.3, "cosine": cos,
                   "axis": "joint"}, "spatial", "s", "wave")

    for cos, explained in ((-0.25, True), (0.25, False)):
        at = AppTest.from_function(page, args=(cos,)).run()
        assert not at.exception
        assert f"gives **{cos:.4f} = cos(s, centroid of “wave”)**" in at.markdown[0].value
        assert any("The cosine is negative" in c.value for c in at.caption) == explained


def test_paired_keys_of_bundled_checkpoints_and_grid_runs():
    from app.state import paired_key

    refs = dict.fromkeys(["bundled: synthetic_hcn_stdcl", "bundled: synthetic_hcn_baseline", "bundled: solo_stdcl",
                          "runs: g/encoder-hcn_stdcl-on_seed-1", "runs: g/encoder-hcn_stdcl-off_seed-1",
                          "runs: g/encoder-agcn_stdcl-on_seed-1"])
    assert paired_key("bundled: synthetic_hcn_stdcl", refs) == "bundled: synthetic_hcn_baseline"
    assert paired_key("bundled: synthetic_hcn_baseline", refs) == "bundled: synthetic_hcn_stdcl"
    assert paired_key("runs: g/encoder-hcn_stdcl-on_seed-1", refs) == "runs: g/encoder-hcn_stdcl-off_seed-1"
    assert paired_key("runs: g/encoder-hcn_stdcl-off_seed-1", refs) == "runs: g/encoder-hcn_stdcl-on_seed-1"
    assert paired_key("runs: g/encoder-agcn_stdcl-on_seed-1", refs) is None  # its baseline is not there
    assert paired_key("bundled: solo_stdcl", refs) is None


def test_uploaded_checkpoint_with_bad_metadata_or_nan_weights_is_one_line(demo):
    """The upload shows the schema's line naming the uploaded file and field; nothing is added."""
    src = demo.model.path
    meta = json.loads(src.with_suffix(".json").read_text())
    del meta["encoder"]["num_classes"]
    at = open_app("models")
    files = [("bad.safetensors", src.read_bytes(), "application/octet-stream"),
             ("bad.json", json.dumps(meta).encode(), "application/json")]
    at.file_uploader(key="models_ckpt_files").set_value(files).run()
    at.button(key="models_ckpt_add").click().run()
    assert not at.exception
    assert "bad.json: 'encoder.num_classes' is missing" in _texts(at.error)
    assert "upload: bad" not in at.session_state["extra_models"]

    sd = load_file(str(src))
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = torch.full_like(sd[key], float("nan"))
    files = [("nan.safetensors", save(sd), "application/octet-stream"),
             ("nan.json", src.with_suffix(".json").read_bytes(), "application/json")]
    at.file_uploader(key="models_ckpt_files").set_value(files).run()
    at.button(key="models_ckpt_add").click().run()
    assert not at.exception
    assert any(e.startswith(f"nan.safetensors: tensor {key!r} holds") for e in _texts(at.error))
    assert "upload: nan" not in at.session_state["extra_models"]
