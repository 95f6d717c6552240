"""``stdcl export``: the encoder of a run alone, the deployable model (the STD-CL head is dropped)."""

from __future__ import annotations

import os
from pathlib import Path

from stdcl.errors import ConfigError

#: Metadata keys of a training checkpoint that the exported file keeps.
KEEP = ("class_names", "dataset", "protocol", "modality", "layout", "num_classes", "stdcl", "head", "epoch",
        "global_step", "metrics", "best", "run", "config", "kind")


def export(run: str | os.PathLike, out: str | os.PathLike, which: str = "best", half: bool = False,
           with_head: bool = False) -> tuple[Path, int]:
    """Write ``run``'s ``which`` encoder to ``out`` (+ ``.json``); returns (path, parameter count).

    ``with_head`` also copies the trained STD-CL head to ``<out>.head.safetensors`` (for the
    analysis layer; the deployable model stays the encoder alone).
    """
    from stdcl.checkpoint import load_encoder, save_encoder
    from stdcl.train.run_dir import checkpoint_of

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: expected a .safetensors file name")
    ckpt = checkpoint_of(run, which)
    if ckpt.resolve() == out.resolve():
        raise ConfigError(f"--out {out} is the checkpoint itself")
    encoder, meta = load_encoder(ckpt)
    extra = {k: meta[k] for k in KEEP if k in meta}
    save_encoder(out, encoder, half=half, exported_from=str(ckpt), **extra)
    if with_head:
        from stdcl.head.checkpoint import load_head, save_head

        head = load_head(ckpt, encoder, meta)
        if head is None:
            raise ConfigError(f"{ckpt}: --with-head: this checkpoint has no trained STD-CL head")
        save_head(out, head, half=half)
    return out, sum(p.numel() for p in encoder.parameters())
