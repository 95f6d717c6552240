"""Memory-mapping arrays stored inside an uncompressed ``.npz`` (a ZIP of ``.npy`` members).

``np.load(path, mmap_mode="r")`` ignores ``mmap_mode`` for ``.npz`` files and would read a
7 GB member into RAM. ``np.savez`` stores members uncompressed, so each member's bytes sit
contiguously in the file: we locate them from the ZIP local header and ``np.memmap`` them.
Compressed members (``np.savez_compressed``) cannot be mapped; :func:`open_member` then
converts that member once to a ``.npy`` cache file beside the archive (and says so).
"""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path

import numpy as np

from stdcl.errors import DataError
from stdcl.io import atomic_path

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # ZIP local file header (30 bytes)


def _read_header(fh, version: tuple[int, int]):
    """(shape, fortran_order, dtype) of a .npy header of any version."""
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def member_names(path: Path) -> list[str]:
    """Array names in an ``.npz`` (without the ``.npy`` suffix)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(path, f"not a readable .npz archive ({e})") from None


def _data_offset(fh, info: zipfile.ZipInfo, path: Path) -> int:
    fh.seek(info.header_offset)
    raw = fh.read(_LOCAL_HEADER.size)
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != b"PK\x03\x04":
        raise DataError(path, f"corrupt ZIP local header for member {info.filename!r}")
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def open_member(path: str | Path, key: str, cache_dir: str | Path | None = None) -> np.ndarray:
    """A read-only memory map of array ``key`` of the ``.npz`` at ``path``.

    Never reads the whole array into memory. Compressed members are converted once into
    ``<cache_dir or path's folder>/<stem>.<key>.npy`` and that file is mapped.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(path, f"not a readable .npz archive ({e})") from None
    with zf:
        try:
            info = zf.getinfo(key + ".npy")
        except KeyError:
            have = ", ".join(n[:-4] for n in zf.namelist()) or "none"
            raise DataError(path, f"no array named {key!r} (has: {have})", where=f"key {key!r}") from None
        if info.compress_type != zipfile.ZIP_STORED:
            return _cached_copy(path, zf, info, key, cache_dir)
        with open(path, "rb") as fh:
            start = _data_offset(fh, info, path)
            fh.seek(start)
            try:
                version = np.lib.format.read_magic(fh)
                shape, fortran, dtype = _read_header(fh, version)
            except ValueError as e:
                raise DataError(path, f"member {key!r} is not a valid .npy ({e})", where=f"key {key!r}") from None
            offset = fh.tell()
    if dtype.hasobject:
        raise DataError(path, f"member {key!r} holds Python objects; refusing to unpickle", where=f"key {key!r}")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _cached_copy(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str,
                 cache_dir: str | Path | None) -> np.ndarray:
    cache = Path(cache_dir or path.parent) / f"{path.stem}.{key}.npy"
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        return np.load(cache, mmap_mode="r")
    log.warning("%s: member %r is compressed and cannot be memory-mapped; converting it once to %s",
                path, key, cache)
    with zf.open(info) as src:
        version = np.lib.format.read_magic(src)
        shape, fortran, dtype = _read_header(src, version)
        if dtype.hasobject:
            raise DataError(path, f"member {key!r} holds Python objects; refusing to unpickle", where=f"key {key!r}")
        with atomic_path(cache) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape, fortran_order=fortran)
            flat = out.reshape(-1, order="F" if fortran else "C")
            chunk = max(1, (64 << 20) // max(1, dtype.itemsize))
            for start in range(0, flat.size, chunk):
                n = min(chunk, flat.size - start)
                buf = src.read(n * dtype.itemsize)
                if len(buf) != n * dtype.itemsize:
                    raise DataError(path, f"member {key!r} is truncated", where=f"key {key!r}")
                flat[start:start + n] = np.frombuffer(buf, dtype=dtype)
            out.flush()
            del out, flat
    return np.load(cache, mmap_mode="r")
