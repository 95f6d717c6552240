"""Memory-mapping arrays stored inside an uncompressed ``.npz`` (a ZIP of ``.npy`` members).

``np.load(path, mmap_mode="r")`` ignores ``mmap_mode`` for ``.npz`` files and would read a
7 GB member into RAM. ``np.savez`` stores members uncompressed, so each member's bytes sit
contiguously in the file: we locate them from the ZIP local header and ``np.memmap`` them.
Compressed members (``np.savez_compressed``) cannot be mapped; :func:`open_member` then
converts that member once to a ``.npy`` file in the user cache folder (:func:`cache_folder`;
the data's own folder may be read-only) and says so. Small members (labels, names, splits)
are read into memory with :func:`read_member`.

Every member is checked before use: its ZIP headers, its ``.npy`` header against the size the
archive records, its CRC (compressed members as they are read; stored ones when opened: up to 16 MiB
every time, larger ones once, in chunks, then remembered in the cache folder until the file changes; what
the cache holds for an older version of a file is removed when its new version is converted or checked).
Any problem is a one-line :class:`DataError`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import lzma
import math
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from stdcl.data.validate import key_of, require_file, shown_list
from stdcl.errors import DataError, first_line
from stdcl.io import atomic_path, cache_dir

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # ZIP local file header (30 bytes)
#: what zipfile and the decompressors raise on damaged archives and member data
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError, RuntimeError,
               UnicodeDecodeError)  # the last: a damaged member name in a local header
#: what numpy's .npy header parser (and zipfile on absurd directory values) raise
_HEADER_ERRORS = (ValueError, SyntaxError, TypeError, OverflowError, struct.error, tokenize.TokenError)
#: stored members up to this size have their CRC checked whenever opened; larger ones once per file version
_CRC_LIMIT = 16 << 20
_READ_LIMIT = 1 << 30  # read_member's largest member


def cache_folder() -> Path:
    """Where converted copies go: ``$STDCL_CACHE``, else ``$XDG_CACHE_HOME/stdcl``, else
    ``~/.cache/stdcl``; then ``npz/``."""
    return cache_dir() / "npz"


def _open_zip(path: Path) -> zipfile.ZipFile:
    require_file(path, "a .npz archive")
    try:
        return zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, *_HEADER_ERRORS) as e:
        raise DataError(path, f"not a readable .npz archive ({first_line(e)})") from None


def member_names(path: str | os.PathLike) -> list[str]:
    """Array names in an ``.npz`` (without the ``.npy`` suffix)."""
    with _open_zip(Path(path)) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def open_npy(path: str | os.PathLike) -> np.ndarray:
    """A bare ``.npy`` file memory-mapped, refusing pickles and damaged headers."""
    path = require_file(path, "a .npy file")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (*_ZIP_ERRORS, *_HEADER_ERRORS) as e:
        raise DataError(path, f"not a readable .npy file ({first_line(e)})") from None
    if not isinstance(x, np.ndarray):
        raise DataError(path, "not a .npy file (an archive? name it .npz)")
    return x


def _npy_header(fh: IO[bytes], path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` header at ``fh``'s position."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except _HEADER_ERRORS as e:
        raise DataError(path, f"not a valid .npy member ({first_line(e)})", where=key_of(key)) from None
    if any(d < 0 for d in shape):
        raise DataError(path, f"header gives a negative shape {shape}", where=key_of(key))
    if dtype.hasobject:
        raise DataError(path, "holds Python objects; refusing to unpickle", where=key_of(key))
    if dtype.itemsize == 0:
        raise DataError(path, f"header gives a zero-size dtype {dtype}", where=key_of(key))
    return shape, fortran, dtype


def _check_size(info: zipfile.ZipInfo, header_len: int, shape: tuple[int, ...], dtype: np.dtype,
                path: Path, key: str) -> None:
    """The ``.npy`` header plus its data must fill the member exactly."""
    need = header_len + math.prod(shape) * dtype.itemsize
    if need != info.file_size:
        raise DataError(path, f"header says {dtype} {shape} ({need} bytes with the header) but the archive "
                        f"records {info.file_size} bytes for this member", where=key_of(key))


def _data_offset(fh: IO[bytes], info: zipfile.ZipInfo, path: Path, key: str) -> int:
    """Where a stored member's bytes start, after checking its local header agrees with the directory."""
    raw = b""
    if info.header_offset >= 0:
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise DataError(path, "corrupt ZIP local header", where=key_of(key))
    fields = _LOCAL_HEADER.unpack(raw)
    name = fh.read(fields[-2])
    if name.decode("utf-8" if fields[3] & 0x800 else "cp437", "replace") != info.orig_filename \
            or fields[4] != zipfile.ZIP_STORED:
        raise DataError(path, "ZIP local header disagrees with the archive's directory", where=key_of(key))
    if fields[3] & 0x1:
        raise DataError(path, "member is encrypted", where=key_of(key))
    return info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]


def open_member(path: str | os.PathLike, key: str, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """A read-only memory map of array ``key`` of the ``.npz`` at ``path``.

    Never reads the whole array into memory. A compressed member is converted once into
    ``<cache_dir or cache_folder()>/<stem>.<key>.<digest>.npy`` (the digest names the source's
    absolute path, size and modification time, so a changed source is converted again) and that
    file is mapped.
    """
    path = Path(path)
    with _open_zip(path) as zf:
        info = _member(zf, path, key)
        if info.compress_type != zipfile.ZIP_STORED:
            return _converted(path, zf, info, key, cache_dir)
    return _mapped(path, info, key, cache_dir)


def read_member(path: str | os.PathLike, key: str) -> np.ndarray:
    """Array ``key`` of the ``.npz`` at ``path`` read into memory (members of at most 1 GiB)."""
    path = Path(path)
    with _open_zip(path) as zf:
        info = _member(zf, path, key)
        if info.file_size > _READ_LIMIT:
            raise DataError(path, f"member of {info.file_size} bytes is too large to read into memory",
                            where=key_of(key))
        with _reading(path, key):
            with zf.open(info) as src:
                shape, fortran, dtype = _npy_header(src, path, key)
                _check_size(info, src.tell(), shape, dtype, path, key)
                out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
                _fill(src, out, fortran, path, key)
    return out


def _member(zf: zipfile.ZipFile, path: Path, key: str) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(key + ".npy")
    except KeyError:
        have = shown_list(n[:-4] for n in zf.namelist())
        raise DataError(path, f"no array named {key!r} (has: {have})", where=key_of(key)) from None


@contextlib.contextmanager
def _reading(path: Path, key: str) -> Iterator[None]:
    """Turn what zipfile and zlib raise on damaged member data into a :class:`DataError`."""
    try:
        yield
    except _ZIP_ERRORS as e:
        raise DataError(path, f"member data is damaged ({first_line(e)})", where=key_of(key)) from None


def _mapped(path: Path, info: zipfile.ZipInfo, key: str, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """A stored member as a memory map, after checking its headers, size and CRC (above ``_CRC_LIMIT``
    bytes: once per version of the file, :func:`_check_large_crc`)."""
    with open(path, "rb") as fh:
        start = _data_offset(fh, info, path, key)
        fh.seek(start)
        shape, fortran, dtype = _npy_header(fh, path, key)
        offset = fh.tell()
        _check_size(info, offset - start, shape, dtype, path, key)
        if info.compress_size != info.file_size or start + info.file_size > os.fstat(fh.fileno()).st_size:
            raise DataError(path, "member extends past the end of the file (truncated?)", where=key_of(key))
        if info.file_size <= _CRC_LIMIT:
            fh.seek(start)
            if zlib.crc32(fh.read(info.file_size)) != info.CRC:
                raise DataError(path, "data fails its CRC check (damaged file)", where=key_of(key))
        else:
            _check_large_crc(fh, start, info, path, key, cache_dir)
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _check_large_crc(fh: IO[bytes], start: int, info: zipfile.ZipInfo, path: Path, key: str,
                     cache_dir: str | os.PathLike | None) -> None:
    """The CRC of a large stored member, read in chunks once; a marker in the cache folder (named by the
    file's path, size and modification time) spares the next opens the read."""
    marker = _cache_path(path, key, cache_dir).with_suffix(".crc-ok")
    if marker.is_file():
        return
    log.info("%s: checking the CRC of %r (%.1f GB, once per version of the file)", path, key, info.file_size / 1e9)
    fh.seek(start)
    buf = memoryview(bytearray(1 << 20))  # one small buffer: checking a 7 GB member keeps the memory flat
    crc, left = 0, info.file_size
    while left:
        got = fh.readinto(buf[:min(left, len(buf))])
        if not got:
            raise DataError(path, "member extends past the end of the file (truncated?)", where=key_of(key))
        crc, left = zlib.crc32(buf[:got], crc), left - got
    if crc != info.CRC:
        raise DataError(path, "data fails its CRC check (damaged file)", where=key_of(key))
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(marker) as tmp:
            Path(tmp).write_text(f"{path.resolve()}\n")
        _prune(marker)
    except OSError as e:  # an unwritable cache only costs the next open the same check
        log.debug("could not record the CRC check in %s: %s", marker, e)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _cache_path(path: Path, key: str, cache_dir: str | os.PathLike | None) -> Path:
    """``<folder>/<stem>.<key>.<file>-<version>.npy``: ``file`` names the source's path, ``version`` its size and
    modification time (a changed file is converted or checked again; :func:`_prune` drops the older versions)."""
    st = path.stat()
    version = _digest(f"{st.st_size}\0{st.st_mtime_ns}")
    return Path(cache_dir or cache_folder()) / f"{path.stem}.{key}.{_digest(str(path.resolve()))}-{version}.npy"


def _prune(current: Path) -> None:
    """Remove what the cache holds for older versions of the same source file and member as ``current``
    (converted copies and CRC markers; a process still mapping an old copy keeps reading it)."""
    stem, _, version = current.stem.rpartition("-")
    for old in current.parent.glob(glob.escape(stem) + "-*"):
        if old.stem.rpartition("-")[2] != version and old.suffix in (".npy", ".crc-ok"):
            with contextlib.suppress(OSError):
                old.unlink()
                log.info("removed %s (an older version of the file)", old)


def _load_cached(cache: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """The converted copy if it exists and matches the member's header (else None: convert again)."""
    if not cache.is_file():
        return None
    try:
        arr = np.load(cache, mmap_mode="r", allow_pickle=False)
    except (*_ZIP_ERRORS, *_HEADER_ERRORS):
        return None
    return arr if arr.shape == shape and arr.dtype == dtype else None


def _converted(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str,
               cache_dir: str | os.PathLike | None) -> np.ndarray:
    cache = _cache_path(path, key, cache_dir)
    with _reading(path, key), zf.open(info) as src:
        shape, fortran, dtype = _npy_header(src, path, key)
        _check_size(info, src.tell(), shape, dtype, path, key)
        if math.prod(shape) == 0:
            out = np.zeros(shape, dtype=dtype)
            _fill(src, out, fortran, path, key)
            return out
        found = _load_cached(cache, shape, dtype)
        if found is not None:
            return found
        log.warning("%s: member %r is compressed and cannot be memory-mapped; converting it once to %s",
                    path, key, cache)
        with atomic_path(cache) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape, fortran_order=fortran)
            _fill(src, out, fortran, path, key)
            out.flush()
            del out
        _prune(cache)
    return np.load(cache, mmap_mode="r", allow_pickle=False)


def _fill(src: IO[bytes], out: np.ndarray, fortran: bool, path: Path, key: str) -> None:
    """Stream a member's array data into ``out``, in 64 MiB chunks; nothing may follow it
    (reading to the end makes zipfile check the CRC)."""
    flat = out.reshape(-1, order="F" if fortran else "C")
    itemsize = out.dtype.itemsize
    chunk = max(1, (64 << 20) // max(1, itemsize))
    for start in range(0, flat.size, chunk):
        n = min(chunk, flat.size - start)
        buf = src.read(n * itemsize)
        if len(buf) != n * itemsize:
            raise DataError(path, "member data ends early (truncated?)", where=key_of(key))
        flat[start:start + n] = np.frombuffer(buf, dtype=out.dtype)
    if src.read(1):
        raise DataError(path, "member data is longer than the archive records", where=key_of(key))
