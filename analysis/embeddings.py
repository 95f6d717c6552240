"""Per-sample embeddings of a checkpoint on a dataset split, cached on disk.

Spaces (all ``(N, dim)`` float32):

- ``global``: the classifier's input (``encoder.pre_logits``), the embedding the logits are
  read from (``encoder.classifier``).
- ``spatial`` / ``temporal``: for an STD-CL checkpoint the trained head's ``s`` and ``t``
  (``D`` = 256 by default).
- ``spatial_pooled`` / ``temporal_pooled``: for every checkpoint, the parameter-free
  counterparts read from the same map the head reads, :data:`POOLED_DEFINITION`. A baseline
  has no head, so its ``spatial`` / ``temporal`` are these; comparing a baseline with an
  STD-CL checkpoint on the pooled spaces compares the two encoders on equal terms.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from analysis.cache import array_json, json_array, load_arrays, make_key, save_arrays
from analysis.datasets import AnalysisData
from analysis.models import LoadedModel
from stdcl.head.spaces import POOLED_DEFINITION, embedding_spaces, pooled_embeddings  # noqa: F401
from stdcl.logs import progress as tqdm_progress

SPACES = ("global", "spatial", "temporal")
CACHE_VERSION = 1

Progress = Callable[[int, int], None]


@dataclass
class Embeddings:
    """Embeddings, logits and labels of ``len(names)`` samples (rows aligned everywhere)."""

    spaces: dict[str, np.ndarray]
    logits: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int64
    names: list[str]
    indices: np.ndarray  # (N,) item indices into the analysed split
    class_names: list[str]
    class_meta: list[dict] | None
    st_source: str  # "head" (trained STD-CL head) or "pooled"
    key: str  # cache key: identifies checkpoint content, data, split and parameters
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1) if len(self) else np.zeros(0, np.int64)

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self) else float("nan")

    def space(self, name: str) -> np.ndarray:
        """One space by name (``global``, ``spatial``, ``temporal``, ``*_pooled``)."""
        if name not in self.spaces:
            raise KeyError(f"no embedding space {name!r}; have {', '.join(self.spaces)}")
        return self.spaces[name]

    def subset(self, rows: np.ndarray) -> "Embeddings":
        """The same embeddings restricted to ``rows`` (positions, not item indices)."""
        rows = np.asarray(rows)
        return Embeddings({k: v[rows] for k, v in self.spaces.items()}, self.logits[rows], self.labels[rows],
                          [self.names[i] for i in rows], self.indices[rows], self.class_names, self.class_meta,
                          self.st_source, make_key(self.key, rows.tolist()), dict(self.info))


@torch.no_grad()
def embed_batch(model: LoadedModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits and every embedding space of one batch ``(N, C, T, V, M)`` (eval mode, no grad); a baseline's
    ``spatial`` / ``temporal`` are its pooled spaces."""
    out = embedding_spaces(model.encoder, model.head, x)
    for k in ("spatial", "temporal"):
        out.setdefault(k, out[f"{k}_pooled"])
    return out


def embedding_device() -> torch.device:
    """Where embeddings are computed by default: the GPU when PyTorch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: Samples per batch by default: a GPU takes large batches, one CPU core gains nothing above ~64.
DEFAULT_BATCH = {"cuda": 256, "cpu": 64}


def _on_device(model: LoadedModel, device: torch.device) -> LoadedModel:
    """``model`` itself when it is on ``device``, else a copy there (the shared, cached model stays where it is:
    other pages feed it CPU tensors)."""
    if next(model.encoder.parameters()).device == device:
        return model
    return dataclasses.replace(model, encoder=copy.deepcopy(model.encoder).to(device),
                               head=None if model.head is None else copy.deepcopy(model.head).to(device))


def compute_embeddings(model: LoadedModel, data: AnalysisData, indices: np.ndarray | None = None,
                       batch_size: int | None = None, device: str | torch.device | None = None,
                       progress: Progress | None = None) -> Embeddings:
    """Run ``model`` over ``data`` (or its items ``indices``) in batches; no caching.

    ``device``: default :func:`embedding_device` (the GPU when present); ``batch_size``: default
    :data:`DEFAULT_BATCH` for that device. ``progress(done, total)`` hears every batch (else a
    terminal progress bar).
    """
    device = torch.device(device) if device is not None else embedding_device()
    batch_size = int(batch_size or DEFAULT_BATCH.get(device.type, 64))
    runner = _on_device(model, device)
    ids = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    loader = DataLoader(Subset(data.dataset, ids.tolist()), batch_size=batch_size, shuffle=False, num_workers=0,
                        pin_memory=device.type == "cuda")
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    batches = loader if progress is not None else tqdm_progress(loader, f"embed {model.label}")
    for x, _y, _i in batches:
        out = embed_batch(runner, x.to(device, non_blocking=True))
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float().cpu().numpy())
        done += len(x)
        if progress is not None:
            progress(done, len(ids))
    arrays = {k: np.concatenate(v) for k, v in parts.items()} if parts else {}
    logits = arrays.pop("logits", np.zeros((0, model.encoder.num_classes), np.float32))
    spaces = {k: arrays[k] for k in ("global", "spatial", "temporal", "spatial_pooled", "temporal_pooled")
              if k in arrays}
    return Embeddings(spaces, logits, data.labels[ids], [data.names[i] for i in ids], ids, list(data.class_names),
                      data.class_meta, "head" if model.head is not None else "pooled",
                      embeddings_key(model, data, indices), {"model": model.label, "data": data.describe()})


def embeddings_key(model: LoadedModel, data: AnalysisData, indices: np.ndarray | None = None) -> str:
    """Cache key: checkpoint content, data identity and split, the chosen items, code version."""
    sel = None if indices is None else make_key(np.asarray(indices, dtype=np.int64).tolist())
    return make_key("embeddings", CACHE_VERSION, model.digest, data.identity, sel)


def extract_embeddings(model: LoadedModel, data: AnalysisData, indices: np.ndarray | None = None,
                       batch_size: int | None = None, device: str | torch.device | None = None,
                       progress: Progress | None = None, use_cache: bool = True,
                       cache_root: str | os.PathLike | None = None) -> Embeddings:
    """:func:`compute_embeddings`, read from / written to the on-disk cache (``analysis.cache``)."""
    key = embeddings_key(model, data, indices)
    if use_cache:
        hit = load_arrays("embeddings", key, cache_root)
        if hit is not None:
            try:
                return _from_arrays(hit, key)
            except (KeyError, ValueError, TypeError, AttributeError):  # an entry of another layout: recompute
                pass
    emb = compute_embeddings(model, data, indices, batch_size, device, progress)
    if use_cache:
        save_arrays("embeddings", key, _to_arrays(emb), cache_root)
    return emb


def _to_arrays(emb: Embeddings) -> dict[str, np.ndarray]:
    arrays = {f"space:{k}": v for k, v in emb.spaces.items()}
    arrays.update(logits=emb.logits, labels=emb.labels, indices=emb.indices,
                  names=np.asarray(emb.names, dtype=str),
                  meta=json_array({"class_names": emb.class_names, "class_meta": emb.class_meta,
                                   "st_source": emb.st_source, "info": emb.info}))
    return arrays


def _from_arrays(a: dict[str, np.ndarray], key: str) -> Embeddings:
    meta = array_json(a["meta"])
    spaces = {k.split(":", 1)[1]: v for k, v in a.items() if k.startswith("space:")}
    return Embeddings(spaces, a["logits"], a["labels"].astype(np.int64), a["names"].tolist(),
                      a["indices"].astype(np.int64), meta["class_names"], meta["class_meta"], meta["st_source"],
                      key, meta.get("info") or {})
