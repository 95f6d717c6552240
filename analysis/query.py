"""One sequence of the user's own: the model's input for it, its prediction, where it falls.

:func:`sequence_input` reads the file (:func:`stdcl.data.sequence.read_sequence`: a raw NTU
``.skeleton``, an NW-UCLA ``.json`` or a ``.npy``) and puts it through the same item path as a
dataset sample (the dataset's evaluation transform with the config's test-transform options and
the model's window, then the modality), so the model input equals what the dataset gives for the
same file. A ``.npy`` may instead hold an already preprocessed input (``transformed=True``: the
transform is skipped, the modality is not applied).

Where it falls (:func:`analyse_sequence`): its prediction, its embeddings, and its nearest
neighbours in each space among the analysed split. Its place in a 2-D projection of the split
(:func:`place_by_neighbours`) is *not* a refit: it is the similarity-weighted mean of the
projected positions of its ``k`` nearest neighbours in that space, so the split's picture stays
exactly the one shown elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.datasets import analysis_config
from analysis.embeddings import Embeddings, embed_batch
from analysis.models import LoadedModel
from analysis.neighbours import nearest_neighbours, neighbour_records
from stdcl.data.sequence import FORMAT_ORIGIN, benchmark_of, label_from_name, read_sequence, sequence_item
from stdcl.errors import ConfigError, DataError


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
        x = sequence_item(raw, name, model.class_names, enc.layout, tf, modality, 0 if label is None else label)
        desc = repr(tf) if tf is not None else "none"
    return SequenceInput(name, path, fmt, raw, np.ascontiguousarray(x, dtype=np.float32), ds_name, desc,
                         modality, label)


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
    trained = benchmark_of(model.class_names)
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


@dataclass(frozen=True)
class TopClass:
    """One of the most probable classes of a sequence."""

    rank: int  # 1 = the prediction
    index: int  # class index
    name: str
    probability: float


@dataclass
class SequenceAnalysis:
    """Prediction and embeddings of one input, and its neighbours among the analysed split."""

    logits: np.ndarray  # (K,) float64
    probabilities: np.ndarray  # (K,) softmax of the logits
    prediction: int
    top: list[TopClass]
    spaces: dict[str, np.ndarray]  # {space: (d,)}, as analysis.embeddings.embed_batch
    neighbours: dict[str, list[dict[str, Any]]]  # {space: analysis.neighbours.neighbour_records rows}


def analyse_sequence(model: LoadedModel, x: np.ndarray, emb: Embeddings | None = None, k: int = 5,
                     top: int = 5, source: str | os.PathLike | None = None) -> SequenceAnalysis:
    """Prediction and embeddings of one input ``x`` ``(C, T, V, M)``, and its ``k`` neighbours among ``emb``
    in each of global / spatial / temporal that ``emb`` has (none without ``emb``); neighbour
    ``same_class`` compares with the predicted class. DataError naming ``source`` (the file ``x`` was read from)
    when the model's output is not finite (coordinates so large that the network overflows)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if xt.dim() != 4:
        raise ConfigError(f"{model.label}: expected one sample (C, T, V, M), got shape {tuple(xt.shape)}")
    out = embed_batch(model, xt[None].to(next(model.encoder.parameters()).device))
    logits = out.pop("logits")[0].double().cpu().numpy()
    spaces = {s: v[0].float().cpu().numpy() for s, v in out.items()}
    overflow = [s for s, v in {"logits": logits, **spaces}.items() if not np.isfinite(v).all()]
    if overflow:
        raise DataError(source, f"{model.label} gives non-finite {', '.join(overflow)} for this sequence: its values "
                                f"(up to {float(np.abs(x).max()):.3g}) are far outside a skeleton's coordinates")
    prob = np.exp(logits - logits.max())
    prob /= prob.sum()
    pred = int(prob.argmax())
    names = model.class_names
    order = np.argsort(-prob, kind="stable")[:top]
    nbrs: dict[str, list[dict[str, Any]]] = {}
    if emb is not None and len(emb):
        for s in ("spatial", "temporal", "global"):
            if s in emb.spaces and s in spaces:
                nbrs[s] = query_neighbours(emb, s, spaces[s], pred, k)
    return SequenceAnalysis(logits, prob, pred, [TopClass(i + 1, int(c), names[c], float(prob[c]))
                                                 for i, c in enumerate(order)], spaces, nbrs)
