"""Files users bring to the app: size limits, safe names, per-session folders, stored uploads.

Every file is size-checked (:data:`MAX_UPLOAD_BYTES`) and written atomically under the session's
folder (:func:`session_upload_dir`); old sessions' folders are pruned. Checkpoints are checked by
loading them with :func:`stdcl.weights.load` (weights are never unpickled: safetensors, or an
official ``.pt`` read with ``weights_only=True``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, MutableMapping

from stdcl import weights
from stdcl.errors import DataError
from stdcl.head.checkpoint import load_head
from stdcl.io import atomic_path

#: Largest file the app accepts (checkpoints, weights, sequences).
MAX_UPLOAD_MB = 200
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TTL_S = 3 * 86400  # a session's uploads are removed after this long without use

#: Defaults of the official-weights import form per benchmark: classes, layout, window, persons.
OFFICIAL_PRESETS: dict[str, dict[str, Any]] = {
    "ntu60-xsub": {"num_classes": 60, "layout": "ntu25", "window": 64, "num_person": 2},
    "ntu60-xview": {"num_classes": 60, "layout": "ntu25", "window": 64, "num_person": 2},
    "ntu120-xsub": {"num_classes": 120, "layout": "ntu25", "window": 64, "num_person": 2},
    "ntu120-xset": {"num_classes": 120, "layout": "ntu25", "window": 64, "num_person": 2},
    "ucla": {"num_classes": 10, "layout": "ucla20", "window": 52, "num_person": 1},
}


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
    found = [n for n in names if n.endswith(".safetensors") and not n.endswith(".head.safetensors")]
    if len(found) != 1:
        raise DataError(", ".join(files) or "<no files>",
                        "upload exactly one encoder .safetensors (with its .json, optionally its .head.safetensors)")
    stem = found[0][: -len(".safetensors")]
    wanted = {f"{stem}.safetensors", f"{stem}.json", f"{stem}.head.safetensors"}
    for n, original in names.items():
        if n not in wanted:
            raise DataError(original, f"does not belong to {stem}.safetensors (expected {stem}.json or "
                                      f"{stem}.head.safetensors)")
    if f"{stem}.json" not in names:
        raise DataError(names[found[0]], f"its metadata {stem}.json is missing: upload the .json written beside it")
    for n, original in names.items():
        check_upload_size(original, len(files[original]))
    target = Path(folder) / stem
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=folder))
    try:
        for n, original in names.items():
            save_upload(staging, n, files[original])
        try:
            lw = weights.load(staging / f"{stem}.safetensors")  # readable, shapes match the metadata
            if lw.head_file is not None:  # the head too: a broken one would fail only once the model is chosen
                load_head(lw.source, lw.encoder, lw.meta)
        except DataError as e:  # name the file as uploaded, not its staging copy
            raise as_uploaded(e, {staging / n: original for n, original in names.items()}, names[found[0]]) from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / f"{stem}.safetensors"


def as_uploaded(e: DataError, copies: Mapping[str | os.PathLike | None, str], default: str | None = None) -> DataError:
    """``e`` naming the file as the user uploaded it: ``copies`` maps stored copies (None: not stored yet) to
    their uploaded names; an error about none of them names ``default`` when given (else is ``e`` itself)."""
    names = {os.fspath(p): n for p, n in copies.items() if p is not None}
    name = names.get(e.path or "", default)
    return e if name is None else type(e)(name, e.problem, e.where)


def import_official(pt_path: str | os.PathLike, out_dir: str | os.PathLike, encoder: str, num_classes: int,
                    layout: str = "ntu25", window: int = 64, num_person: int = 2, dataset: str | None = None,
                    class_names: list[str] | None = None, in_channels: int = 3) -> Path:
    """Official ``.pt`` weights saved as a safetensors checkpoint in ``out_dir`` (returns the weights path).

    The metadata (:func:`stdcl.weights.load`'s, as ``stdcl import-official`` writes it) records the
    dataset, so the app opens its test split by default, and the class names (the dataset's own when known).
    """
    pt_path = Path(pt_path)
    spec = weights.OfficialSpec(encoder, num_classes, layout, window, num_person, in_channels, dataset,
                                class_names=None if class_names is None else tuple(class_names))
    return weights.load(pt_path, official=spec).save(Path(out_dir) / f"{safe_name(pt_path.stem)}.safetensors")


def session_folder(session: MutableMapping[str, Any], kind: str) -> Path:
    """The upload folder for ``kind`` of file of the browser session whose state is ``session``
    (``st.session_state``: a token kept there names the session's folder)."""
    token = session.setdefault("_upload_token", uuid.uuid4().hex)
    folder = session_upload_dir(token) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder
