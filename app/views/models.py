"""Models and data: choose checkpoints A and B and the data every page analyses; bring your own.

Checkpoints: bundled, run directories under a folder the user names, uploaded ``.safetensors``
(+ ``.json``, optionally ``.head.safetensors``) and official ``.pt`` weights imported with
``weights_only=True`` (stored by :mod:`app.uploads`). Data: the model's own split or a named dataset.
One uploaded sequence is read, transformed and analysed by :mod:`analysis.query` and shown by
:mod:`app.own_sequence`; this page only arranges the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis.models import ModelRef, discover_models
from app import own_sequence, state
from app import uploads as up
from app.widgets import publish_widget, sync_widget
from stdcl.data.layouts import available_layouts
from stdcl.encoders import available as available_encoders
from stdcl.errors import DataError, StdclError, user_error_line
from stdcl.io import user_path

NONE = "(none)"
MODALITIES = ("joint", "bone", "joint_motion", "bone_motion")
#: Dataset choices: label -> (dataset names offered, what the path is; None: no path).
DATA_KINDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "the model's own": ((), None),
    "synthetic (generated)": (("synthetic",), None),
    "prepared NTU (.npz folder)": (("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset", "ntu-npz"),
                                   "folder holding the prepared .npz (or the .npz file)"),
    "NW-UCLA (json folder)": (("ucla",), "folder holding all_sqe/ (or all_sqe itself)"),
    "pyskl pickle": (("pyskl",), "annotation .pkl file"),
    "plain numpy (.npz)": (("numpy",), ".npz file (or a folder with exactly one)"),
}


# -- session helpers ----------------------------------------------------------------------------------

def _upload_dir(kind: str) -> Path:
    """This session's upload folder (one per browser session) for ``kind`` of file."""
    return up.session_folder(st.session_state, kind)


def _register(label: str, path: Path) -> None:
    st.session_state["extra_models"] = dict(st.session_state.get("extra_models", {})) | {label: str(path)}


def _flash(message: str) -> None:
    """Show ``message`` after a rerun (so the lists above include what was just added)."""
    st.session_state["_models_flash"] = message
    st.rerun()


# -- checkpoints --------------------------------------------------------------------------------------

def _runs_folder() -> None:
    """The folder searched for run directories; its runs join the model list (a bad path is a message)."""
    if "models_runs_folder" not in st.session_state:  # widget state is dropped on other pages: keep our own copy
        st.session_state["models_runs_folder"] = st.session_state.get("_runs_folder", str(state.RUNS_DIR))
    text = st.text_input("Run directories folder", key="models_runs_folder",
                         help="Searched (3 levels deep) for `stdcl train` run directories and loose checkpoints.")
    st.session_state["_runs_folder"] = text
    old = st.session_state.get("_runs_entries", [])
    extra = {k: v for k, v in st.session_state.get("extra_models", {}).items() if k not in old}
    found: list[ModelRef] = []
    folder = None
    if not text.strip():
        st.caption("No folder given: only the bundled and uploaded checkpoints are listed.")
    else:
        try:
            folder = user_path(text.strip())
        except DataError as e:  # a path no file can have (a NUL character, too long, ~unknown_user)
            st.error(str(e))
    if folder is None:
        pass
    elif not folder.exists() and folder.resolve() == state.RUNS_DIR.resolve():
        st.caption(f"No run directories yet: {folder.resolve()} does not exist (fine-tuning, the last page, "
                   "creates it; the STDCL_RUNS environment variable sets the folder).")
    elif not folder.exists():
        st.error(f"{folder}: no such folder")
    elif not folder.is_dir():
        st.error(f"{folder}: not a folder")
    else:
        try:
            found = discover_models(folder)
        except (StdclError, OSError) as e:
            line = user_error_line(e)
            if line is None:
                raise
            st.error(line)
        same = folder.resolve() == state.RUNS_DIR.resolve()
        st.caption(f"{len(found)} run director{'y' if len(found) == 1 else 'ies'} or checkpoint"
                   f"{'' if len(found) == 1 else 's'} found in {folder}." + ("" if found else
                   f" Fine-tuning (last page) writes its runs to {state.RUNS_DIR.resolve()} (the STDCL_RUNS "
                   "environment variable sets it)."))
        if not same:
            prefix = f"runs ({folder.name or folder})"
            entries = {f"{prefix}: {r.label}": str(r.path) for r in found}
            extra |= entries
            st.session_state["_runs_entries"] = list(entries)
            st.session_state["extra_models"] = extra
            return
    st.session_state["_runs_entries"] = []
    st.session_state["extra_models"] = extra


def _upload_checkpoint() -> None:
    files = st.file_uploader("Upload a checkpoint: the .safetensors, its .json and (STD-CL) its .head.safetensors",
                             type=["safetensors", "json"], accept_multiple_files=True, key="models_ckpt_files")
    if not st.button("Add the uploaded checkpoint", key="models_ckpt_add", disabled=not files):
        return
    try:
        for f in files:
            up.check_upload_size(f.name, f.size)
        path = up.save_checkpoint_upload(_upload_dir("checkpoints"), {f.name: f.getvalue() for f in files})
    except StdclError as e:
        st.error(str(e))
        return
    label = f"upload: {path.stem}"
    _register(label, path)
    _flash(f"Added **{label}**: choose it as checkpoint A or B above.")


def _preset_changed() -> None:
    preset = up.OFFICIAL_PRESETS.get(st.session_state["models_off_dataset"])
    if preset:
        st.session_state["models_off_classes"] = preset["num_classes"]
        st.session_state["models_off_layout"] = preset["layout"]
        st.session_state["models_off_window"] = preset["window"]
        st.session_state["models_off_persons"] = preset["num_person"]


def _import_official() -> None:
    st.caption("Official weights of HCN, 2s-AGCN, CTR-GCN or Hyperformer (`.pt`). They are read with "
               "`torch.load(weights_only=True)`: tensors only, nothing is unpickled. The imported model is "
               "saved as a safetensors checkpoint and added to the list.")
    pt = st.file_uploader("Official weights (.pt)", type=["pt", "pth"], key="models_off_file")
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Encoder", available_encoders(), key="models_off_encoder")
    datasets = [*up.OFFICIAL_PRESETS, NONE]
    c2.selectbox("Trained on", datasets, key="models_off_dataset", on_change=_preset_changed,
                 help="Sets classes, layout, window and persons to the benchmark's, and names the classes.")
    st.session_state.setdefault("models_off_classes", 60)
    st.session_state.setdefault("models_off_layout", "ntu25")
    st.session_state.setdefault("models_off_window", 64)
    st.session_state.setdefault("models_off_persons", 2)
    c3.number_input("Classes", 1, 10000, key="models_off_classes")
    c4, c5, c6 = st.columns(3)
    layouts = available_layouts()
    if st.session_state["models_off_layout"] not in layouts:
        st.session_state["models_off_layout"] = layouts[0]
    c4.selectbox("Layout", layouts, key="models_off_layout")
    c5.number_input("Window (frames)", 1, 1000, key="models_off_window")
    c6.number_input("Persons", 1, 4, key="models_off_persons")
    if not st.button("Import", key="models_off_import", disabled=pt is None):
        return
    ss = st.session_state
    dataset = None if ss["models_off_dataset"] == NONE else ss["models_off_dataset"]
    saved = None
    try:
        up.check_upload_size(pt.name, pt.size)
        folder = _upload_dir("official")
        saved = up.save_upload(folder, pt.name, pt.getvalue())
        with st.spinner("Importing…"):
            path = up.import_official(saved, folder, ss["models_off_encoder"], int(ss["models_off_classes"]),
                                      ss["models_off_layout"], int(ss["models_off_window"]),
                                      int(ss["models_off_persons"]), dataset)
    except DataError as e:  # name the file as uploaded, not its copy in the upload folder
        st.error(str(up.as_uploaded(e, {saved: pt.name})))
        return
    except StdclError as e:
        st.error(str(e))
        return
    label = f"imported: {path.stem}"
    _register(label, path)
    _flash(f"Imported **{label}** ({ss['models_off_encoder']}, a baseline: official weights have no STD-CL head). "
           "Choose it as checkpoint A or B above.")


def _describe(which: str, key: str | None, refs: dict[str, ModelRef]) -> None:
    """One checkpoint's description and recorded metadata (a broken file is a message)."""
    if key is None:
        st.caption(f"No checkpoint {which}: the pages show model A alone.")
        return
    try:
        model = state.get_model(str(refs[key].path))
    except StdclError as e:
        st.error(str(e))
        return
    meta = model.meta
    st.markdown(f"**{which}: {model.describe()}**")
    rec = meta.get("best") or meta.get("metrics") or {}
    rows = {"kind": model.kind, "dataset": meta.get("dataset") or "not recorded",
            "modality": meta.get("modality") or "joint", "epochs trained": meta.get("epoch", "not recorded"),
            "recorded test top-1": f"{rec['test_top1']:.2%}" if isinstance(rec.get("test_top1"), (int, float))
            else "not recorded",
            "recorded val top-1": f"{rec['val_top1']:.2%}" if isinstance(rec.get("val_top1"), (int, float))
            else "not recorded",
            "STD-CL head": (f"yes (D = {model.head.dim}, r = {model.head.reduction}, {model.head.pooling} pooling)"
                            if model.head is not None else "no (baseline)")}
    st.dataframe(pd.DataFrame({"": list(rows), "value": [str(v) for v in rows.values()]}), hide_index=True,
                 width="stretch")
    st.caption(f"File: `{model.path}`")  # a path wraps in text; in a table cell it would be cut


def _follow_a() -> None:
    """A changed: make B the other half of A's baseline / STD-CL pair, when there is one."""
    pair = state.paired_key(st.session_state["models_a"], state.model_options())
    if pair is not None and pair != st.session_state.get("model_b"):
        st.session_state["models_b"] = st.session_state["model_b"] = pair
        half = "baseline" if any(off in pair for _, off in state.PAIR_MARKS) else "STD-CL"
        st.session_state["_models_flash_b"] = (f"B is now **{pair}**, the {half} counterpart of A; choose "
                                               "another B below if you like.")


def _checkpoints() -> None:
    st.header("Checkpoints")
    st.markdown("**A** is the model every page analyses; **B** (optional) is the one it is compared with, e.g. "
                "the baseline of the same encoder.")
    flash = st.session_state.pop("_models_flash", None)
    if flash:
        st.success(flash)
    _runs_folder()
    refs = state.model_options()
    if not refs:
        st.error("No checkpoints found: the bundled demo folder `checkpoints/` is empty.")
        st.stop()
    keys = list(refs)
    a_default, b_default = state.default_pair(refs)
    sync_widget("models_a", st.session_state.get("model_a", a_default), keys, a_default)
    b_keys = [NONE, *keys]
    b_shared = st.session_state.get("model_b", b_default)
    sync_widget("models_b", NONE if b_shared is None else b_shared, b_keys, b_default or NONE)
    c1, c2 = st.columns(2)
    c1.selectbox("Checkpoint A (main)", keys, key="models_a", on_change=_follow_a,
                 help="Choosing A also makes B its paired baseline (or STD-CL) checkpoint when there is one.")
    c2.selectbox("Checkpoint B (comparison)", b_keys, key="models_b")
    publish_widget("models_a", "model_a", st.session_state["models_a"])
    b = st.session_state["models_b"]
    publish_widget("models_b", "model_b", None if b == NONE else b)
    flash_b = st.session_state.pop("_models_flash_b", None)
    if flash_b:
        st.info(flash_b, icon=":material/compare_arrows:")
    if b != NONE and b == st.session_state["models_a"]:
        st.warning("A and B are the same checkpoint: nothing to compare.")
    d1, d2 = st.columns(2)
    with d1:
        _describe("A", st.session_state["model_a"], refs)
    with d2:
        _describe("B", st.session_state["model_b"], refs)
    with st.expander("Add a checkpoint: upload .safetensors"):
        _upload_checkpoint()
    with st.expander("Add a checkpoint: import official .pt weights"):
        _import_official()


# -- data ---------------------------------------------------------------------------------------------

def _init_data_widgets() -> None:
    """First visit: the widgets start from the stored choice."""
    if "models_data_kind" in st.session_state:
        return
    spec = state.data_choice()
    ds = spec.get("dataset")
    kind = next((k for k, (names, _p) in DATA_KINDS.items() if ds in names), "the model's own")
    st.session_state["models_data_kind"] = kind
    if ds:
        st.session_state[f"models_ds_{kind}"] = ds
    st.session_state["models_data_path"] = spec.get("path") or ""
    st.session_state["models_split"] = spec.get("split", "test")
    st.session_state["models_modality"] = spec.get("modality") or "the model's own"
    st.session_state["models_max_samples"] = int(st.session_state.get("max_samples", state.DEFAULT_MAX_SAMPLES))


def _data() -> None:
    st.header("Data")
    st.markdown("Which split every page analyses. By default each checkpoint's own dataset (recorded in its "
                "metadata); choose another to see how a model does on different data.")
    _init_data_widgets()
    kind = st.radio("Dataset", list(DATA_KINDS), key="models_data_kind", horizontal=True)
    names, path_help = DATA_KINDS[kind]
    spec: dict[str, Any] = {}
    ok = True
    if names:
        c1, c2 = st.columns([1, 2])
        ds = c1.selectbox("Name", names, key=f"models_ds_{kind}") if len(names) > 1 else names[0]
        spec["dataset"] = ds
        if path_help is not None:
            text = c2.text_input("Path", key="models_data_path", help=path_help).strip()
            try:
                p = user_path(text) if text else None
            except DataError as e:  # a path no file can have (a NUL character, too long, ~unknown_user)
                problem = str(e)
            else:
                problem = (f"{ds}: enter the path of the data ({path_help})" if p is None
                           else f"{p}: no such file or folder" if not p.exists() else None)
            if problem:
                st.error(problem)
                ok = False
            else:
                spec["path"] = str(p)
    c1, c2, c3 = st.columns(3)
    spec["split"] = c1.radio("Split", ["test", "val"], key="models_split", horizontal=True,
                             help="val: the validation part carved from the training split (as in training).")
    modality = c2.selectbox("Modality", ["the model's own", *MODALITIES], key="models_modality")
    if modality != "the model's own":
        spec["modality"] = modality
    max_samples = c3.number_input("Max samples analysed", 10, 1_000_000, step=500, key="models_max_samples",
                                  help="Larger splits are analysed on a stratified, seeded subset of this size.")
    st.session_state["max_samples"] = int(max_samples)
    if ok:
        st.session_state["data_choice"] = spec
    else:
        st.caption("The previous data choice stays in use until the path is fixed.")


def _check() -> state.Selection:
    """Load the selection; an incompatible checkpoint / dataset pair is a message (and stops the page)."""
    st.subheader("Does it fit?")
    sel = state.current_selection()
    lines = [f":material/check_circle: **A** {sel.model.label} reads **{sel.data.describe()}**."]
    if sel.other is not None:
        lines.append(f":material/check_circle: **B** {sel.other.label} reads the same data.")
    st.success("  \n".join(lines))
    state.subset_notice(sel)
    return sel


# -- the page -----------------------------------------------------------------------------------------

st.title("Models and data")
_checkpoints()
_data()
selection = _check()
own_sequence.sequence_section(selection)
