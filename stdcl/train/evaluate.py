"""Evaluation: logits of a split, accuracy metrics, and the files ``stdcl eval`` writes.

``OUT/`` holds ``metrics.json`` (top-1, top-5, per-class accuracy, counts), ``confusion.csv``
(rows: true class, columns: predicted class, both headed by class names), ``confusion.json``
(``{"class_names", "matrix"}``), ``per_class.csv`` and ``scores.npz`` (``names``, ``labels``,
``logits`` float32 ``(N, K)``, ``class_names``, ``split``, ``modality``, ``encoder``,
``dataset``): the file the analysis layer and ``stdcl ensemble`` read.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from stdcl.errors import ConfigError
from stdcl.io import atomic_path, make_folder, write_json_atomic, write_text_atomic
from stdcl.logs import progress
from stdcl.train.config import (check_keys, deep_merge, load_config, parse_override, read_yaml, schema,
                                 set_dotted, validate)
from stdcl.train.data import build_eval_dataset
from stdcl.train.device import autocast, autocast_dtype, resolve_device
from stdcl.train.run_dir import CONFIG
from stdcl.weights import BUNDLED_DIR
from stdcl.weights import load as load_weights

log = logging.getLogger("stdcl.train")


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64, device: torch.device | str = "cpu",
            amp_dtype: torch.dtype | None = None, num_workers: int = 0, rank: int = 0, world_size: int = 1,
            desc: str = "eval", disable_progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(logits (N, K) float32, labels (N,), item ids (N,))`` of ``model`` (eval mode) over ``dataset``.

    Under data parallelism each rank scores items ``rank::world_size`` and the results are
    gathered, so every rank returns the whole split in item order.
    """
    device = torch.device(device)
    ids = np.arange(len(dataset))[rank::world_size]
    part = Subset(dataset, ids.tolist()) if world_size > 1 else dataset
    # own generator: evaluating never advances the global torch RNG (exact resume)
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        for x, y, _ in progress(loader, desc, disable=disable_progress):
            x = x.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                out = model(x)
            logits = out["logits"] if isinstance(out, dict) else out
            outs.append(logits.float().cpu())
            labels.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    logits = torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)
    lab = torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros(0, np.int64)
    if world_size > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * world_size
        dist.all_gather_object(parts, (ids, logits, lab))
        order = np.concatenate([p[0] for p in parts])
        logits = np.concatenate([p[1] for p in parts if len(p[1])])
        lab = np.concatenate([p[2] for p in parts])
        sort = np.argsort(order, kind="stable")
        ids, logits, lab = order[sort], logits[sort], lab[sort]
    return logits.astype(np.float32), lab, ids


def split_accuracies(model: torch.nn.Module, splits: Sequence[tuple[str, Dataset | None]],
                     class_names: Sequence[str], desc: str = "", **predict_kw: Any) -> dict[str, float]:
    """``{"<split>_top1", "<split>_top5"}`` of ``model`` on each named split (None: skipped); ``predict_kw``
    go to :func:`predict` (under data parallelism every rank takes part)."""
    out: dict[str, float] = {}
    for name, ds in splits:
        if ds is None:
            continue
        logits, labels, _ = predict(model, ds, desc=f"{name} {desc}".strip(), **predict_kw)
        m = accuracy_metrics(logits, labels, class_names)
        out[f"{name}_top1"], out[f"{name}_top5"] = m["top1"], m["top5"]
    return out


def accuracy_metrics(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """top-1, top-5, per-class accuracy and the confusion matrix (rows true, columns predicted)."""
    k = len(class_names)
    n = len(labels)
    pred = logits.argmax(1) if n else np.zeros(0, np.int64)
    top = min(5, logits.shape[1]) if n else 1
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :top] if n else np.zeros((0, top), np.int64)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (labels, pred), 1)
    support = conf.sum(1)
    per_class = [float(conf[i, i] / support[i]) if support[i] else None for i in range(k)]
    return {
        "n": int(n),
        "top1": float((pred == labels).mean()) if n else float("nan"),
        "top5": float((top5 == labels[:, None]).any(1).mean()) if n else float("nan"),
        "per_class": {class_names[i]: per_class[i] for i in range(k)},
        "support": {class_names[i]: int(support[i]) for i in range(k)},
        "confusion": conf,
    }


def write_eval_outputs(out_dir: str | os.PathLike, metrics: dict[str, Any], logits: np.ndarray, labels: np.ndarray,
                       names: Sequence[str], class_names: Sequence[str], info: dict[str, Any]) -> Path:
    """Write the files listed in the module docstring (each atomically); returns ``out_dir``."""
    out = Path(out_dir)
    make_folder(out)
    conf = metrics["confusion"]
    summary = {k: v for k, v in metrics.items() if k != "confusion"} | info
    write_json_atomic(out / "metrics.json", summary)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, conf):
        w.writerow([name, *row.tolist()])
    write_text_atomic(out / "confusion.csv", buf.getvalue())
    write_json_atomic(out / "confusion.json", {"class_names": list(class_names), "matrix": conf.tolist(),
                                               "rows": "true class", "columns": "predicted class"})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", "accuracy", "support"])
    for c in class_names:
        acc = metrics["per_class"][c]
        w.writerow([c, "" if acc is None else f"{acc:.6f}", metrics["support"][c]])
    write_text_atomic(out / "per_class.csv", buf.getvalue())
    with atomic_path(out / "scores.npz", suffix=".npz") as tmp:
        np.savez(tmp, names=np.asarray(list(names), dtype=str), labels=labels.astype(np.int64),
                 logits=logits.astype(np.float32), class_names=np.asarray(list(class_names), dtype=str),
                 **{k: np.asarray(str(v)) for k, v in info.items() if isinstance(v, (str, int, float))})
    return out


def read_scores(path: str | os.PathLike) -> dict[str, Any]:
    """A ``scores.npz`` as a dict (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- stdcl eval ---------------------------------------------------------------------------------

def default_eval_dir(target: Path, ckpt: Path, split: str) -> Path:
    """Where ``stdcl eval`` writes by default: inside a run directory, else beside the checkpoint file;
    for a bundled checkpoint (part of the installation), in the working directory."""
    if target.is_dir():
        return target / f"eval-{ckpt.stem}-{split}"
    beside = ckpt.parent.resolve() != BUNDLED_DIR.resolve()
    return (ckpt.parent if beside else Path.cwd()) / f"{ckpt.stem}-eval-{split}"


def evaluate(target: str | os.PathLike, split: str = "test", out_dir: str | os.PathLike | None = None,
             which: str = "best", overrides: Sequence[str] = (), device: str | None = None,
             batch_size: int | None = None, num_workers: int | None = None,
             show_progress: bool | None = None) -> dict[str, Any]:
    """Evaluate a run directory (its ``which`` checkpoint) or a checkpoint file on ``split``.

    The data settings come from the run's ``config.yaml`` (or the checkpoint's recorded
    config); ``overrides`` (``key=value``) change them, e.g. ``data.path=/elsewhere``.
    ``split="val"`` is the validation split carved from the training data exactly as in training.
    Returns the metrics (with ``out_dir``).
    """
    if split not in ("test", "val"):
        raise ConfigError(f"split must be test or val, got {split!r}")
    loaded = load_weights(target, which)  # a run directory, a .safetensors file or bundled:NAME
    ckpt, meta, encoder = loaded.source, loaded.meta, loaded.encoder
    run = Path(target) if loaded.kind == "run" else None
    if run is not None:
        cfg = read_yaml(run / CONFIG)
    elif isinstance(meta.get("config"), dict):
        cfg = meta["config"]
    elif meta.get("dataset"):
        cfg = load_config(meta.get("protocol") or meta["dataset"], encoder=meta["encoder"]["name"],
                          modality=meta.get("modality"))
    else:
        raise ConfigError(f"{ckpt}: records no dataset; evaluate its run directory instead")
    edits: dict[str, Any] = {}
    for o in overrides:
        set_dotted(cfg, *parse_override(o))
        set_dotted(edits, *parse_override(o))
    if overrides:  # the edited config, checked as training checks one (keys added since it was recorded
        check_keys(edits, schema())  # take their defaults)
        validate(deep_merge(schema(), cfg))
    dev = resolve_device(device or cfg.get("device", "auto"))
    encoder.to(dev)
    dataset, names, class_names = build_eval_dataset(cfg, split)
    amp = autocast_dtype(cfg["train"].get("amp", "off"), dev)
    logits, labels, _ = predict(encoder, dataset, batch_size or cfg["train"]["eval_batch_size"], dev, amp,
                                cfg["data"]["num_workers"] if num_workers is None else num_workers,
                                desc=f"eval {split}",
                                disable_progress=None if show_progress is None else not show_progress)
    if logits.shape[1] != len(class_names):
        raise ConfigError(f"{ckpt}: the encoder has {logits.shape[1]} classes, the {split} data {len(class_names)}")
    metrics = accuracy_metrics(logits, labels, class_names)
    if out_dir is None:
        out_dir = default_eval_dir(run if run is not None else ckpt, ckpt, split)
    info = {"checkpoint": str(ckpt), "split": split, "dataset": cfg["data"]["dataset"],
            "modality": cfg["data"]["modality"], "encoder": meta["encoder"]["name"],
            "stdcl": bool(meta.get("stdcl", False))}
    write_eval_outputs(out_dir, metrics, logits, labels, names, class_names, info)
    log.info("%s %s: top-1 %.2f%%, top-5 %.2f%% (%d samples) -> %s", ckpt, split, 100 * metrics["top1"],
             100 * metrics["top5"], metrics["n"], out_dir)
    return {k: v for k, v in metrics.items() if k != "confusion"} | info | {"out_dir": str(out_dir),
                                                                          "confusion": metrics["confusion"]}
