"""On-disk cache of analysis results (numpy arrays + JSON), keyed by content hashes.

Entries live under ``cache_root()`` (``$STDCL_CACHE``, ``$XDG_CACHE_HOME/stdcl`` or ``~/.cache/stdcl``) as
``<kind>/<key>.npz``; a key is the SHA-256 of a JSON description of everything the result
depends on (checkpoint content hash, dataset identity, split, modality, parameters). Writes are
atomic; an unreadable entry is treated as missing and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from stdcl.io import atomic_path, cache_dir


def cache_root() -> Path:
    """The cache folder (:func:`stdcl.io.cache_dir`: ``$STDCL_CACHE``, ``$XDG_CACHE_HOME/stdcl`` or ``~/.cache/stdcl``)."""
    return cache_dir()


def make_key(*parts: Any) -> str:
    """A stable hex key for JSON-serialisable ``parts`` (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_digest(paths: Iterable[str | os.PathLike]) -> str:
    """SHA-256 over the contents of the existing files among ``paths`` (position-tagged; names ignored)."""
    h = hashlib.sha256()
    for i, p in enumerate(paths):
        p = Path(p)
        if not p.is_file():
            continue
        h.update(f"#{i}:{p.stat().st_size}:".encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def entry_path(kind: str, key: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or cache_root()) / kind / f"{key}.npz"


def load_arrays(kind: str, key: str, root: str | os.PathLike | None = None) -> dict[str, np.ndarray] | None:
    """The cached arrays of ``kind/key`` or None (missing or unreadable)."""
    p = entry_path(kind, key, root)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # e.g. a damaged entry: recomputed
        return None


def save_arrays(kind: str, key: str, arrays: dict[str, np.ndarray], root: str | os.PathLike | None = None) -> Path:
    """Store ``arrays`` under ``kind/key`` atomically (uncompressed npz); returns the path."""
    p = entry_path(kind, key, root)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return p


def json_array(obj: Any) -> np.ndarray:
    """A JSON document stored as a 0-d string array (npz holds no pickles)."""
    return np.asarray(json.dumps(obj, default=str))


def array_json(arr: np.ndarray) -> Any:
    return json.loads(str(arr))
