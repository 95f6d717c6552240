"""Atomic file output: write to a temporary name in the same folder, rename at the end."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from stdcl.errors import DataError, OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed, so no partial output is ever left.
    ``suffix`` keeps an extension libraries insist on (e.g. ``np.savez`` adds ``.npz``).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "is a folder; give a file name to write")
    make_folder(path.parent, for_file=path)
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    except PermissionError:
        raise OutputError(path, f"cannot write in {path.parent}: permission denied") from None
    except OSError as e:
        raise OutputError(path, f"cannot write in {path.parent}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        try:
            os.replace(tmp_path, path)
        except IsADirectoryError:
            raise OutputError(path, "is a folder; give a file name to write") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def make_folder(folder: str | os.PathLike, for_file: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` (and its parents) for output; an :class:`OutputError` naming the path when it
    is a file, lies under a file or cannot be created (``for_file``: the file it is made for, named instead)."""
    folder = Path(folder)
    named = Path(for_file) if for_file is not None else folder
    if folder.exists() and not folder.is_dir():
        raise OutputError(named, f"cannot create it: {folder} is a file, not a folder" if for_file is not None
                          else "is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(named, f"cannot create it: {_first_file(folder)} is a file, not a folder") from None
    except OSError as e:
        raise OutputError(named, f"cannot create {folder}: {e.strerror or e}") from None
    return folder


def _first_file(folder: Path) -> Path:
    """The nearest ancestor of ``folder`` (or itself) that exists and is not a folder."""
    for p in [folder, *folder.parents]:
        if p.exists():
            return p
    return folder


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def user_path(text: str | os.PathLike) -> Path:
    """A path as a user typed it (``~`` expanded), or a one-line :class:`DataError` naming it when no file can
    have that name: a NUL character, a ``~user`` of an unknown user, a name longer than the system allows."""
    raw = os.fspath(text)
    if "\0" in raw:
        raise DataError(raw.replace("\0", "\\0"), "a path cannot contain a NUL character")
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # "~someone" of no such user
        raise DataError(raw, f"cannot expand {Path(raw).parts[0]!r}: no such user") from None
    try:
        path.exists()  # False for a missing file; raises for a name the system refuses
    except OSError as e:
        raise DataError(raw, e.strerror or type(e).__name__) from None
    return path


def parse_json(text: str | bytes, source: str | os.PathLike | None, what: str = "JSON") -> Any:
    """``json.loads`` with a one-line :class:`DataError` naming ``source`` (and the line of a syntax
    error) for invalid text, a nesting too deep to parse (RecursionError) or non-UTF-8 bytes."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(source, f"{what} nested too deeply to read") from None
    except UnicodeDecodeError:
        raise DataError(source, f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as e:  # located by its line: "<file>: line 3: not valid JSON (...)"
        raise DataError(source, f"not valid {what} ({e.msg})", where=e.lineno) from None
    except ValueError as e:
        raise DataError(source, f"not valid {what} ({e})") from None


def read_json(path: str | os.PathLike, what: str = "JSON") -> Any:
    """The parsed contents of a JSON file; any failure (missing, unreadable, invalid, too deep) is a
    one-line :class:`DataError` naming ``path``. Callers still validate the structure they get."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a JSON file") from None
    except OSError as e:
        raise DataError(path, f"cannot read it ({e.strerror or e})") from None
    return parse_json(data, path, what)


def cache_dir() -> Path:
    """The project's cache folder: ``$STDCL_CACHE``, else ``$XDG_CACHE_HOME/stdcl``, else ``~/.cache/stdcl``."""
    return Path(os.environ.get("STDCL_CACHE")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stdcl")
