"""What users bring to the app: one sequence of their own, checkpoint files, official ``.pt`` weights.

One sequence (:func:`sequence_input`): a raw NTU ``.skeleton`` (read with
:func:`stdcl.data.ntu_raw.skeleton_to_array`: the CTR-GCN actor selection and centring the NTU
preparation applies), an NW-UCLA ``.json`` (:func:`stdcl.data.ucla.read_ucla_json`) or a ``.npy``
``(C, T, V, M)`` or ``(T, V, C)``. The raw sequence goes through the same item path as a dataset
sample (:class:`stdcl.data.base.SkeletonDataset`: the dataset's evaluation transform with the
config's test-transform options and the model's window, then the modality), so the model input
equals what the dataset gives for the same file. A ``.npy`` may instead hold an already
preprocessed input (``transformed=True``: the transform is skipped, the modality is not applied).

Where it falls (:func:`analyse_sequence`): its prediction, its embeddings, and its nearest
neighbours in each space among the analysed split. Its place in a 2-D projection of the split
(:func:`place_by_neighbours`) is *not* a refit: it is the similarity-weighted mean of the
projected positions of its ``k`` nearest neighbours in that space, so the split's picture stays
exactly the one shown elsewhere.

Files are checked for size (:data:`MAX_UPLOAD_BYTES`) and written atomically under a
per-session folder (:func:`session_upload_dir`); checkpoint weights are never unpickled.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from analysis.datasets import analysis_config
from analysis.embeddings import Embeddings, embed_batch
from analysis.models import LoadedModel, load_model, load_official_model
from analysis.neighbours import nearest_neighbours, neighbour_records
from stdcl.checkpoint import save_encoder
from stdcl.data.base import SampleSource, SkeletonDataset
from stdcl.errors import ConfigError, DataError, first_line
from stdcl.head.checkpoint import head_path
from stdcl.io import atomic_path

#: Largest file the app accepts (checkpoints, weights, sequences).
MAX_UPLOAD_MB = 200
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
#: The sequence formats :func:`read_sequence` reads.
SEQUENCE_SUFFIXES = (".skeleton", ".json", ".npy")

#: Defaults of the official-weights import form per benchmark: classes, layout, window, persons.
OFFICIAL_PRESETS: dict[str, dict[str, Any]] = {
    "ntu60-xsub": {"num_classes": 60, "layout": "ntu25", "window": 64, "num_person": 2},
    "ntu60-xview": {"num_classes": 60, "layout": "ntu25", "window": 64, "num_person": 2},
    "ntu120-xsub": {"num_classes": 120, "layout": "ntu25", "window": 64, "num_person": 2},
    "ntu120-xset": {"num_classes": 120, "layout": "ntu25", "window": 64, "num_person": 2},
    "ucla": {"num_classes": 10, "layout": "ucla20", "window": 52, "num_person": 1},
}


# -- files ------------------------------------------------------------------------------------------

def check_upload_size(name: str, size: int, limit: int = MAX_UPLOAD_BYTES) -> None:
    """DataError naming the file when ``size`` bytes exceed ``limit``."""
    if int(size) > limit:
        raise DataError(name, f"{int(size) / 2**20:.0f} MB is over the {limit / 2**20:.0f} MB upload limit")


def safe_name(name: str) -> str:
    """``name`` without folders, with characters other than letters, digits, ``._-`` replaced by ``_``."""
    base = Path(str(name).replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    if not cleaned:
        raise DataError(name, "not a usable file name")
    return cleaned


UPLOAD_TTL_S = 3 * 86400  # a session's uploads are removed after this long without use


def session_upload_dir(token: str, ttl_s: float = UPLOAD_TTL_S) -> Path:
    """The upload folder of one app session: ``$STDCL_UPLOADS/<token>`` (default under the temp folder).

    Each call marks the folder as used now and removes other sessions' folders unused for ``ttl_s``
    seconds (``$STDCL_UPLOADS_TTL_S`` overrides), so uploads do not pile up.
    """
    root = Path(os.environ.get("STDCL_UPLOADS") or Path(tempfile.gettempdir()) / "stdcl-uploads")
    folder = root / safe_name(token)
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)
    ttl = float(os.environ.get("STDCL_UPLOADS_TTL_S") or ttl_s)
    prune_uploads(root, ttl, keep=folder)
    return folder


def prune_uploads(root: str | os.PathLike, ttl_s: float, keep: Path | None = None) -> list[Path]:
    """Remove the session folders under ``root`` last used more than ``ttl_s`` seconds ago; returns them."""
    cutoff = time.time() - ttl_s
    removed = []
    for sub in Path(root).iterdir():
        try:
            if sub.is_dir() and sub != keep and sub.stat().st_mtime < cutoff:
                shutil.rmtree(sub, ignore_errors=True)
                removed.append(sub)
        except OSError:  # another app process removed it first
            continue
    return removed


def save_upload(folder: str | os.PathLike, name: str, data: bytes) -> Path:
    """Write one uploaded file (size-checked, name sanitised) atomically into ``folder``."""
    check_upload_size(name, len(data))
    path = Path(folder) / safe_name(name)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def save_checkpoint_upload(folder: str | os.PathLike, files: Mapping[str, bytes]) -> Path:
    """Store an uploaded checkpoint (``X.safetensors`` + ``X.json`` [+ ``X.head.safetensors``]) in ``folder/X/``.

    The set is checked (exactly one encoder file, its metadata, nothing unrelated) and the stored
    checkpoint is loaded once; on any problem nothing is left behind. Returns the weights path.
    """
    names = {safe_name(n): n for n in files}
    weights = [n for n in names if n.endswith(".safetensors") and not n.endswith(".head.safetensors")]
    if len(weights) != 1:
        raise DataError(", ".join(files) or "<no files>",
                        "upload exactly one encoder .safetensors (with its .json, optionally its .head.safetensors)")
    stem = weights[0][: -len(".safetensors")]
    wanted = {f"{stem}.safetensors", f"{stem}.json", f"{stem}.head.safetensors"}
    for n, original in names.items():
        if n not in wanted:
            raise DataError(original, f"does not belong to {stem}.safetensors (expected {stem}.json or "
                                      f"{stem}.head.safetensors)")
    if f"{stem}.json" not in names:
        raise DataError(names[weights[0]], f"its metadata {stem}.json is missing: upload the .json written beside it")
    for n, original in names.items():
        check_upload_size(original, len(files[original]))
    target = Path(folder) / stem
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=folder))
    try:
        for n, original in names.items():
            save_upload(staging, n, files[original])
        try:
            load_model(staging / f"{stem}.safetensors")  # readable, shapes match the metadata
        except DataError as e:  # name the file as uploaded, not its staging copy
            name = Path(e.path).name if e.path else ""
            raise DataError(names.get(name, names[weights[0]]), e.problem, e.where) from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / f"{stem}.safetensors"


def import_official(pt_path: str | os.PathLike, out_dir: str | os.PathLike, encoder: str, num_classes: int,
                    layout: str = "ntu25", window: int = 64, num_person: int = 2, dataset: str | None = None,
                    class_names: list[str] | None = None, in_channels: int = 3) -> Path:
    """Official ``.pt`` weights (read with ``weights_only=True``) saved as a safetensors checkpoint in ``out_dir``.

    The metadata records the dataset (so the app opens its test split by default) and the class
    names (the dataset's own when known). Returns the weights path, loadable with ``load_model``.
    """
    pt_path = Path(pt_path)
    if class_names is None and dataset:
        class_names = dataset_class_names(dataset, num_classes)
    model = load_official_model(pt_path, encoder, num_classes, layout, window, num_person, in_channels,
                                class_names, dataset)
    out = Path(out_dir) / f"{safe_name(pt_path.stem)}.safetensors"
    save_encoder(out, model.encoder, class_names=class_names, dataset=dataset, protocol=dataset,
                 modality="joint", layout=model.layout.name, num_classes=num_classes, stdcl=False,
                 kind="official", imported_from=pt_path.name)
    head_path(out).unlink(missing_ok=True)  # a stale head from an earlier import would be read as this model's
    return out


def dataset_class_names(dataset: str, num_classes: int) -> list[str] | None:
    """The class names of a benchmark (NTU, NW-UCLA) when it has ``num_classes`` classes, else None."""
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes

    if dataset.startswith("ntu") and num_classes in (60, 120):
        return ntu_classes(num_classes)
    if dataset == "ucla" and num_classes == len(UCLA_CLASSES):
        return list(UCLA_CLASSES)
    return None


# -- one sequence -----------------------------------------------------------------------------------

def read_sequence(path: str | os.PathLike, duplicate_single: bool = False) -> np.ndarray:
    """The raw ``(C, T, V, M)`` float32 sequence of a ``.skeleton``, ``.json`` or ``.npy`` file.

    ``duplicate_single``: a one-actor ``.skeleton`` gets a copy of actor 1 as actor 2 (the NTU120
    preparation does this; NTU60 leaves the second actor zero). DataError naming the file otherwise.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".skeleton":
        from stdcl.data.ntu_raw import skeleton_to_array

        return skeleton_to_array(path, center=True, duplicate_single=duplicate_single)
    if suffix == ".json":
        from stdcl.data.ucla import read_ucla_json

        return read_ucla_json(path)
    if suffix == ".npy":
        return _read_npy(path)
    raise DataError(path, f"unsupported sequence file; expected one of {', '.join(SEQUENCE_SUFFIXES)}")


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            np.lib.format.read_magic(fh)
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror})") from None
    except ValueError:
        raise DataError(path, "not a .npy file (no NumPy header)") from None
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        problem = ("holds Python objects; only numeric arrays are read (nothing is unpickled)"
                   if "pickle" in str(e) else f"not a readable .npy array ({first_line(e)})")
        raise DataError(path, problem) from None
    except (OSError, EOFError) as e:
        raise DataError(path, f"not a readable .npy array ({type(e).__name__}: truncated file?)") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise DataError(path, f"holds {getattr(arr, 'dtype', type(arr))} values, expected numbers")
    if arr.ndim == 3:  # (T, V, C): one person
        if arr.shape[2] not in (2, 3):
            raise DataError(path, f"a 3-d array must be (T, V, C) with C 2 or 3, got shape {arr.shape}")
        arr = arr.transpose(2, 0, 1)[..., None]
    elif arr.ndim != 4:
        raise DataError(path, f"expected (C, T, V, M) or (T, V, C), got shape {arr.shape}")
    if min(arr.shape) == 0:
        raise DataError(path, f"empty array of shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} non-finite values (NaN or inf)")
    return arr


class _OneSequence(SampleSource):
    """A :class:`SampleSource` of one array, so the dataset's own item path applies to it."""

    format = "upload"

    def __init__(self, x: np.ndarray, name: str, label: int, class_names: list[str], layout):
        self.x, self.names, self.labels = x, [name], np.asarray([label], dtype=np.int64)
        self.class_names, self.layout = class_names, layout

    def read(self, i: int) -> np.ndarray:
        return self.x.copy()


@dataclass
class SequenceInput:
    """One user sequence, raw and as the model reads it."""

    name: str  # the file name without its suffix
    path: Path
    format: str  # "skeleton", "json" or "npy"
    raw: np.ndarray  # (C, T, V, M) as read
    x: np.ndarray  # (C, window, V, M) float32: the model input
    dataset: str  # whose evaluation transform was applied
    transform: str  # description of the transform
    modality: str
    label: int | None  # from an NTU / NW-UCLA file name when the model's classes are that benchmark's


def eval_transform(model: LoadedModel, dataset: str | None = None, modality: str | None = None):
    """``(transform, modality, dataset name)``: the evaluation transform the dataset applies for ``model``
    (kind of the dataset, the config's ``test_transform`` options, the model's window), as
    :func:`stdcl.data.registry.open_dataset` builds it."""
    from stdcl.data.registry import DATASETS
    from stdcl.data.transforms import build_transform
    from stdcl.train.data import default_window

    cfg = analysis_config(model, dataset, None, modality)
    d = cfg["data"]
    if d["dataset"] not in DATASETS:
        raise ConfigError(f"unknown dataset {d['dataset']!r}; choose from {', '.join(DATASETS)}")
    opts = dict(d.get("test_transform") or {})
    opts.setdefault("window", default_window(cfg))
    return build_transform(DATASETS[d["dataset"]].transform, False, **opts), d["modality"], d["dataset"]


def label_from_name(name: str, class_names: list[str]) -> int | None:
    """The true class encoded in an NTU (``S...A007``) or NW-UCLA (``a01_s..``) name, when ``class_names``
    are that benchmark's; None otherwise."""
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes
    from stdcl.data.ntu_prepare import parse_sample_name
    from stdcl.data.ucla import ACTION_TO_LABEL, NAME_RE

    k = len(class_names)
    ntu = parse_sample_name(name)
    if ntu is not None and k in (60, 120) and list(class_names) == ntu_classes(k) and ntu.action <= k:
        return ntu.action - 1
    m = NAME_RE.fullmatch(name)
    if m is not None and list(class_names) == list(UCLA_CLASSES):
        return ACTION_TO_LABEL.get(int(m.group(1)))
    return None


def sequence_input(path: str | os.PathLike, model: LoadedModel, dataset: str | None = None,
                   modality: str | None = None, transformed: bool = False) -> SequenceInput:
    """Read one sequence file and turn it into ``model``'s input (see the module docstring).

    ``dataset`` / ``modality`` default to the model's own. ``transformed``: a ``.npy`` that already is
    a model input ``(C, window, V, M)``; it is only checked. DataError naming the file when it does
    not fit the checkpoint (channels, joints, persons, frames).
    """
    path = Path(path)
    tf, modality, ds_name = eval_transform(model, dataset, modality)
    fmt = path.suffix.lower().lstrip(".")
    if transformed and fmt != "npy":
        raise DataError(path, "only a .npy can be an already preprocessed input")
    raw = read_sequence(path, duplicate_single=ds_name.startswith("ntu120"))
    enc = model.encoder
    c, t, v, m = raw.shape
    if c != enc.in_channels:
        raise DataError(path, f"{c} coordinates per joint; {model.label} expects {enc.in_channels}")
    if v != enc.layout.num_joints:
        raise DataError(path, f"{v} joints; {model.label} uses layout {enc.layout.name!r} with "
                              f"{enc.layout.num_joints} joints")
    if m > enc.num_person:
        raise DataError(path, f"{m} persons; {model.label} reads at most {enc.num_person}")
    if m < enc.num_person:  # missing persons are zero, as in the datasets' padded arrays
        raw = np.concatenate([raw, np.zeros((c, t, v, enc.num_person - m), np.float32)], axis=3)
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    label = label_from_name(name, model.class_names)
    if transformed:
        if t != enc.window:
            raise DataError(path, f"{t} frames; a preprocessed input for {model.label} has {enc.window}")
        x, desc = raw, "none (already preprocessed)"
    else:
        source = _OneSequence(raw, name, 0 if label is None else label, model.class_names, enc.layout)
        x = SkeletonDataset(source, tf, modality=modality)[0][0]
        desc = repr(tf) if tf is not None else "none"
    return SequenceInput(name, path, fmt, raw, np.ascontiguousarray(x, dtype=np.float32), ds_name, desc,
                         modality, label)


#: The benchmark whose recordings a sequence format holds, and that benchmark's skeleton layout.
FORMAT_ORIGIN = {"skeleton": ("NTU RGB+D", "ntu25"), "json": ("NW-UCLA", "ucla20")}


def _trained_on(model: LoadedModel) -> str | None:
    """The benchmark a model's classes are ("NTU RGB+D", "NW-UCLA"), else None (synthetic, custom data)."""
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes

    names, k = model.class_names, len(model.class_names)
    if k in (60, 120) and names == ntu_classes(k):
        return "NTU RGB+D"
    if names == list(UCLA_CLASSES):
        return "NW-UCLA"
    return None


def origin_notice(seq: SequenceInput, model: LoadedModel) -> str | None:
    """A warning when ``seq`` comes from another benchmark or skeleton layout than ``model`` learned, else None.

    Such a model can only name the nearest of its own classes, and the sequence's neighbours in the
    analysed split need not share that class (nor each other's): the result says how the model maps an
    unfamiliar sequence, not what the action is.
    """
    origin = FORMAT_ORIGIN.get(seq.format)
    if origin is None:
        return None
    bench, layout = origin
    trained = _trained_on(model)
    dataset = model.meta.get("dataset") or "unrecorded data"
    if trained == bench and model.layout.name == layout:
        return None
    what = f"{bench} ({layout} skeleton)"
    if model.layout.name != layout:
        learned = f"the {model.layout.name} skeleton layout of {dataset}"
    else:
        learned = f"{dataset} with its own {len(model.class_names)} classes" + (f" ({trained})" if trained else "")
    return (f"{seq.name} is a {what} recording, but {model.label} learned {learned}. Its prediction is the "
            f"nearest of the model's own classes, and its neighbours in the analysed split need not be of that "
            f"class: read this as how the model maps an unfamiliar sequence, not as a recognition of the action.")


# -- where it falls ---------------------------------------------------------------------------------

def _with_query(emb: Embeddings, space: str, vector: np.ndarray, label: int) -> Embeddings:
    """``emb`` restricted to ``space`` with the query appended as the last row (labelled ``label``)."""
    base = emb.space(space)
    vec = np.asarray(vector, dtype=base.dtype).reshape(1, -1)
    if vec.shape[1] != base.shape[1]:
        raise ConfigError(f"{space} embedding of size {vec.shape[1]}, the split's have {base.shape[1]}")
    logits = np.zeros((1, emb.logits.shape[1]), emb.logits.dtype)
    logits[0, label] = 1.0
    return Embeddings({space: np.concatenate([base, vec])}, np.concatenate([emb.logits, logits]),
                      np.concatenate([emb.labels, [label]]).astype(np.int64), list(emb.names) + ["(your sequence)"],
                      np.concatenate([emb.indices, [-1]]).astype(np.int64), emb.class_names, emb.class_meta,
                      emb.st_source, emb.key + ":query", dict(emb.info))


def query_neighbours(emb: Embeddings, space: str, vector: np.ndarray, label: int, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` samples of ``emb`` most cosine-similar to ``vector`` in ``space``, as
    :func:`analysis.neighbours.neighbour_records` rows (``same_class`` compares with ``label``)."""
    ext = _with_query(emb, space, vector, label)
    return neighbour_records(ext, len(emb), space, k)


def place_by_neighbours(coords: np.ndarray, emb: Embeddings, space: str, vector: np.ndarray,
                        k: int = 10) -> np.ndarray:
    """A 2-D position for ``vector`` in a projection ``coords`` ``(N, 2)`` of ``emb``: the mean of the
    positions of its ``k`` nearest neighbours in ``space``, weighted by their (positive) cosine."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape != (len(emb), 2):
        raise ConfigError(f"coordinates of shape {coords.shape} for {len(emb)} samples; expected ({len(emb)}, 2)")
    if not len(emb):
        raise ConfigError("no samples to place the sequence among")
    nb = nearest_neighbours(_with_query(emb, space, vector, 0), len(emb), space, k)
    w = np.clip(nb.sims, 0.0, None)
    w = w if w.sum() > 0 else np.ones_like(w)
    return (coords[nb.rows] * w[:, None]).sum(0) / w.sum()


def analyse_sequence(model: LoadedModel, x: np.ndarray, emb: Embeddings | None = None, k: int = 5,
                     top: int = 5) -> dict[str, Any]:
    """Prediction and embeddings of one input ``x`` ``(C, T, V, M)``, and its neighbours among ``emb``.

    Keys: ``logits`` ``(K,)``, ``probabilities`` ``(K,)``, ``prediction``, ``top`` (rows ``rank``,
    ``class``, ``name``, ``probability``), ``spaces`` (``{space: (d,)}``, as
    :func:`analysis.embeddings.embed_batch`), ``neighbours`` (``{space: records}`` for the spaces
    ``emb`` has among global / spatial / temporal; empty without ``emb``). Neighbour ``same_class``
    compares with the predicted class.
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if xt.dim() != 4:
        raise ConfigError(f"{model.label}: expected one sample (C, T, V, M), got shape {tuple(xt.shape)}")
    out = embed_batch(model, xt[None].to(next(model.encoder.parameters()).device))
    logits = out.pop("logits")[0].double().cpu().numpy()
    prob = np.exp(logits - logits.max())
    prob /= prob.sum()
    pred = int(prob.argmax())
    names = model.class_names
    order = np.argsort(-prob, kind="stable")[:top]
    spaces = {s: v[0].float().cpu().numpy() for s, v in out.items()}
    nbrs: dict[str, list[dict[str, Any]]] = {}
    if emb is not None and len(emb):
        for s in ("spatial", "temporal", "global"):
            if s in emb.spaces and s in spaces:
                nbrs[s] = query_neighbours(emb, s, spaces[s], pred, k)
    return {"logits": logits, "probabilities": prob, "prediction": pred,
            "top": [{"rank": i + 1, "class": int(c), "name": names[c], "probability": float(prob[c])}
                    for i, c in enumerate(order)],
            "spaces": spaces, "neighbours": nbrs}

