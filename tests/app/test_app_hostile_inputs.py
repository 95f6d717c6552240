"""Hostile and careless input on every page that takes some (AppTest): each problem is one red line naming the
file (as the user knows it) and what is wrong, never a traceback nor a result computed from garbage.

Uploads of broken checkpoint parts and official weights, .npy sequences whose header lies or whose values
overflow the network, typed paths no file can have (a NUL character, ``~unknown_user``, a name too long for the
system), extreme synthetic-data options on the Fine-tune page and a damaged fine-tuning job record.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("streamlit")

from tests.support.app import bundled_model, module_env, open_app  # noqa: E402

#: Paths no file can have, and the line each one gives.
BAD_PATHS = {"a\x00b": "a\\0b: a path cannot contain a NUL character",
             "~no_such_user_x/runs": "~no_such_user_x/runs: cannot expand '~no_such_user_x': no such user",
             "x" * 5000: "x" * 5000 + ": File name too long"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from module_env(tmp_path_factory, ("cache", "runs", "uploads"), umap_warm_up=False)


@pytest.fixture(scope="module")
def ckpt(env):
    """The bundled STD-CL demo checkpoint's three files (bytes) and its metadata."""
    src = bundled_model("A").path
    return {"weights": src.read_bytes(), "meta": json.loads(src.with_suffix(".json").read_text()),
            "head": src.with_name(src.stem + ".head.safetensors").read_bytes()}


@pytest.fixture(scope="module")
def models(env):
    """One Models-and-data page for the tests that do not upload a sequence (its error would stay on screen)."""
    return open_app("models")


def _errors(at) -> list[str]:
    assert not at.exception, at.exception
    return [e.value for e in at.error]


def _add_checkpoint(at, files: list[tuple[str, bytes]]):
    at.file_uploader(key="models_ckpt_files").set_value([(n, b, "application/octet-stream") for n, b in files]).run()
    return at.button(key="models_ckpt_add").click().run()


def test_uploaded_checkpoint_with_a_broken_or_foreign_head_is_refused(models, ckpt):
    """The head is checked at upload (not only once the model is chosen), named as uploaded."""
    meta = json.dumps(ckpt["meta"]).encode()
    at = _add_checkpoint(models, [("gh.safetensors", ckpt["weights"]), ("gh.json", meta), ("gh.head.safetensors", b"xx")])
    assert any(e.startswith("gh.head.safetensors: not a readable safetensors file") for e in _errors(at))
    at = _add_checkpoint(at, [("oh.safetensors", ckpt["weights"]), ("oh.json", meta),
                              ("oh.head.safetensors", ckpt["weights"])])  # the encoder's file posing as the head
    assert any(e.startswith("oh.head.safetensors: state dict does not fit") for e in _errors(at))
    big = json.loads(meta)
    big["head"]["head"]["dim"] = 10**6  # would allocate 800 MB before the weights are even read
    at = _add_checkpoint(at, [("hd.safetensors", ckpt["weights"]), ("hd.json", json.dumps(big).encode()),
                              ("hd.head.safetensors", ckpt["head"])])
    assert "hd.json: 'head.head.dim' = 1000000 is outside 1..65536" in _errors(at)
    assert not {"upload: gh", "upload: oh", "upload: hd"} & set(at.session_state["extra_models"])


def test_official_import_error_names_the_uploaded_file(models):
    at = models
    at.file_uploader(key="models_off_file").set_value(("garbage.pt", b"garbage" * 10, "application/octet-stream"))
    at.run()
    at.button(key="models_off_import").click().run()
    errors = _errors(at)
    assert any(e.startswith("garbage.pt: not a PyTorch checkpoint") for e in errors), errors
    assert not any("uploads" in e for e in errors)  # not the copy in the upload folder


@pytest.mark.parametrize("where", ["runs folder", "data path"])
def test_typed_paths_no_file_can_have_are_one_line(models, where):
    at = models
    if where == "data path":
        at.radio(key="models_data_kind").set_value("plain numpy (.npz)").run()
    key = "models_runs_folder" if where == "runs folder" else "models_data_path"
    for text, line in BAD_PATHS.items():
        at.text_input(key=key).set_value(text).run()
        assert line in _errors(at), text[:20]
    at.text_input(key=key).set_value("").run()
    if where == "data path":
        assert at.session_state["data_choice"] == {"split": "test"}  # never taken up
        at.radio(key="models_data_kind").set_value("the model's own").run()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no overflow warning on its way to the refusal
def test_sequence_whose_header_lies_or_whose_values_overflow(env):
    at = open_app("models")

    def upload(name: str, data: bytes):
        return at.file_uploader(key="models_seq_file").set_value((name, data, "application/octet-stream")).run()

    header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000, 3), }".ljust(117)
              + "\n").encode()
    upload("lie.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)  # 12 PB, 0 bytes of data
    assert ("lie.npy: its header declares shape (100000, 100000, 100000, 3) (12,000,000,000,000,000 bytes) but 0 "
            "bytes follow it; truncated file?") in _errors(at)
    rng = np.random.default_rng(1)
    upload("far.npy", _npy((rng.normal(size=(3, 40, 25, 2)) * 1e37).astype(np.float32)))
    errors = _errors(at)
    assert any(e.startswith("far.npy: synthetic_hcn_stdcl gives non-finite logits") for e in errors), errors
    upload("still.npy", _npy(np.full((3, 40, 25, 2), 1e20, np.float32)))  # one point, far away: drawn, no 0-size axes
    assert not _errors(at)
    assert at.metric[0].label == "Predicted class"


def test_results_page_typed_paths(env):
    at = open_app("results")
    at.selectbox(key="results_grid").set_value("a results folder only").run()
    for text, line in list(BAD_PATHS.items())[:2]:
        at.text_input(key="results_folder").set_value(text).run()
        assert line in _errors(at)
    at.text_input(key="results_folder").set_value("").run()
    at.selectbox(key="results_grid").set_value("another grid file…").run()
    at.text_input(key="results_grid_path").set_value("a\x00b").run()
    assert BAD_PATHS["a\x00b"] in _errors(at)


def test_finetune_extreme_synthetic_options_and_paths(env):
    at = open_app("finetune")
    for override, line in (("data.source={num_samples: 1000000000000}",
                            "synthetic: num_samples must be in 1..200,000, got 1000000000000"),
                           ("data.source={num_samples: abc}", "synthetic: num_samples must be a whole number, got 'abc'"),
                           ("data.source={max_frames: 1000000000}", "synthetic: max_frames must be in 2..1,024, got "
                                                                     "1000000000"),
                           ("data.source={seed: -1}", "synthetic: seed must be in 0..9,223,372,036,854,775,807, got -1")):
        at.text_area(key="ft_overrides").set_value(override).run()
        assert _errors(at) == [line]
    at.text_area(key="ft_overrides").set_value("").run()
    at.radio(key="ft_dataset").set_value("other").run()
    at.text_input(key="ft_other_path").set_value("~no_such_user_x/runs").run()
    assert _errors(at) == [BAD_PATHS["~no_such_user_x/runs"]]
    assert at.button(key="ft_start").disabled


def test_finetune_damaged_job_record_is_a_line_and_can_be_cleared(env):
    record = env["runs"] / ".jobs" / "job.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("{bad")
    at = open_app("finetune")
    (line,) = _errors(at)
    assert line.startswith(f"{record}: line 1: not valid job record") and line.endswith("clear the job to start afresh")
    at.button(key="ft_clear_damaged").click().run()
    assert not _errors(at) and not record.exists()
    assert any("No fine-tuning job yet" in i.value for i in at.info)
