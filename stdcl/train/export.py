"""``stdcl export``: the encoder of a run alone, the deployable model (the STD-CL head is dropped)."""

from __future__ import annotations

import os
from pathlib import Path

from stdcl.checkpoint import save_encoder
from stdcl.errors import ConfigError
from stdcl.head.checkpoint import load_head, save_head
from stdcl.train.probes import copy_probes
from stdcl.weights import load as load_weights

#: Metadata keys of a training checkpoint that the exported file keeps.
KEEP = ("class_names", "dataset", "protocol", "modality", "layout", "num_classes", "stdcl", "head", "epoch",
        "global_step", "metrics", "best", "run", "config", "kind")


def export(run: str | os.PathLike, out: str | os.PathLike, which: str = "best", half: bool = False,
           with_head: bool = False, with_probes: bool = False) -> tuple[Path, int]:
    """Write ``run``'s ``which`` encoder to ``out`` (+ ``.json``); returns (path, parameter count).

    ``with_head`` also copies the trained STD-CL head to ``<out>.head.safetensors`` (for the
    analysis layer; the deployable model stays the encoder alone); ``with_probes`` the run's
    training probes to ``<out>.probes/`` (:mod:`stdcl.train.probes`).
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: expected a .safetensors file name")
    src = load_weights(run, which)  # a run directory, a .safetensors file or bundled:NAME
    ckpt, encoder, meta = src.source, src.encoder, src.meta
    if ckpt.resolve() == out.resolve():
        raise ConfigError(f"--out {out} is the checkpoint itself")
    extra = {k: meta[k] for k in KEEP if k in meta}
    save_encoder(out, encoder, half=half, exported_from=str(ckpt), **extra)
    if with_head:
        head = load_head(ckpt, encoder, meta)
        if head is None:
            raise ConfigError(f"{ckpt}: --with-head: this checkpoint has no trained STD-CL head")
        save_head(out, head, half=half)
    if with_probes:
        copy_probes(ckpt, out.with_name(out.name.removesuffix(".safetensors") + ".probes"))
    return out, sum(p.numel() for p in encoder.parameters())
