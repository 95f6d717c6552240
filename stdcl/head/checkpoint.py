"""The trained STD-CL head beside an encoder checkpoint: ``X.safetensors`` -> ``X.head.safetensors``.

The deployed model is the encoder alone; the head is kept only so that analysis can read
the trained spatial and temporal embeddings (and their exact per-joint / per-frame
decomposition). Its options live in the encoder checkpoint's metadata (``head.head``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from stdcl.checkpoint import check_same_save, construct, header_metadata, load_weights, meta_path
from stdcl.encoders.base import Encoder
from stdcl.head.decoupling import DecouplingHead
from stdcl.io import atomic_path, read_json


def head_path(checkpoint: str | os.PathLike) -> Path:
    """Where the head of ``checkpoint`` (an encoder ``.safetensors``) is stored."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".head.safetensors")


def save_head(checkpoint: str | os.PathLike, head: DecouplingHead, half: bool = False) -> Path:
    """Write ``head``'s weights beside ``checkpoint`` atomically; returns the head path."""
    out = head_path(checkpoint)
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in head.state_dict().items()}
    mp = meta_path(checkpoint)  # written first: the head joins the encoder's save
    meta = read_json(mp, "checkpoint metadata") if mp.is_file() else None
    save_id = meta.get("save_id") if isinstance(meta, dict) else None
    with atomic_path(out) as tmp:
        save_file(sd, str(tmp), metadata=header_metadata("stdcl-head", save_id))
    return out


def load_head(checkpoint: str | os.PathLike, encoder: Encoder, meta: dict[str, Any]) -> DecouplingHead | None:
    """The trained head of an STD-CL checkpoint (eval mode, fp32), or None for a baseline."""
    opts = (meta.get("head") or {}).get("head") if meta.get("stdcl") else None
    path = head_path(checkpoint)
    if opts is None or not path.is_file():
        return None
    head = construct(DecouplingHead, meta_path(checkpoint), "the STD-CL head", encoder.feature_shape(encoder.window),
                     **opts)
    check_same_save(path, meta, meta_path(checkpoint))
    return load_weights(head, path).eval()
