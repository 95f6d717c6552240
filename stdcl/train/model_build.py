"""The model a run trains: the encoder of the config (+ the STD-CL head and loss when
``stdcl.enabled``), initialised from ``train.init_from``, and its data-parallel wrapper."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from stdcl.encoders import build_encoder
from stdcl.head.loss import small_data_advice
from stdcl.head.model import STDCLModel, build_stdcl_model
from stdcl.train import distributed as D
from stdcl.train.data import TrainData
from stdcl.weights import init_encoder

log = logging.getLogger("stdcl.train")


def build_model(cfg: dict[str, Any], data: TrainData, device: torch.device, resume: bool = False) -> STDCLModel:
    """The encoder (+ head) of ``cfg`` for ``data``, on ``device``; a new run (not ``resume``) starts
    from ``train.init_from`` when set. Synchronised BatchNorm with ``train.sync_bn``."""
    d = data
    enc = build_encoder(cfg["model"]["encoder"], num_classes=d.num_classes, layout=d.layout,
                        in_channels=d.in_channels, num_person=d.num_person, window=d.window,
                        **dict(cfg["model"].get("options") or {}))
    init = cfg["train"].get("init_from")
    if init and not resume:
        init_from(enc, init, strict=bool(cfg["train"].get("init_strict", True)))
    st = cfg["stdcl"]
    if st["enabled"]:
        loss_opts = dict(st["loss"])
        loss_opts.setdefault("seed", int(cfg["seed"]))
        model = build_stdcl_model(enc, d.window, dict(st["head"]), loss_opts,
                                  slot_labels=torch.as_tensor(d.train.labels), num_classes=d.num_classes)
        advice = small_data_advice(model.loss.capacity_per_class(), int(loss_opts["num_pos"]),
                                   int(cfg["train"]["epochs"]), float(loss_opts.get("start_epoch") or 0),
                                   bool(loss_opts.get("scale_to_data")))
        if advice:
            log.warning(advice)
    else:
        model = build_stdcl_model(enc, d.window, None, None)
    if cfg["train"].get("sync_bn"):
        model = D.convert_sync_batchnorm(model, device)
    return model.to(device)


def init_from(enc: torch.nn.Module, path: str, strict: bool = True) -> None:
    """``train.init_from``: copy the weights of the encoder checkpoint ``path`` into ``enc``.

    The checkpoint must be of the same encoder. ``strict``: every tensor of ``enc`` must be
    there with its shape; otherwise tensors of another shape (e.g. a classifier for other
    classes) are skipped and missing ones keep their initialisation.
    """
    skipped = init_encoder(enc, path, strict).skipped  # the shared weight loader (stdcl.weights)
    log.info("initialised %s from %s%s", enc.name, path,
             f" (skipped {len(skipped)} tensors: {skipped})" if skipped else "")


def wrap_data_parallel(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when ``world_size > 1``, else ``model`` itself.

    Buffers are not broadcast: the banks are identical on every rank (the engine broadcasts the
    encoder's BatchNorm statistics before it evaluates or saves)."""
    if world_size <= 1:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False, find_unused_parameters=False)
