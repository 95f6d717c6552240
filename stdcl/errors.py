"""Errors users can cause: each renders as one line naming the file and the problem."""

from __future__ import annotations

import os


class StdclError(Exception):
    """Base class for expected, user-facing errors (the CLI prints them on one line)."""


class DataError(StdclError):
    """A data file is missing, malformed or inconsistent.

    ``str(err)`` is ``"<file>[:<where>]: <problem>"`` where ``where`` is a line number
    (``line 12``), an array key (``key 'x_train'``) or any short locator.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, where: str | int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.where = where
        loc = self.path or "<input>"
        if where is not None:
            loc += f": line {where}" if isinstance(where, int) else f": {where}"
        super().__init__(f"{loc}: {problem}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.problem, self.where))


class ConfigError(StdclError):
    """An invalid option, layout or configuration value."""


class OutputError(DataError):
    """An output path that cannot be written (a folder where a file goes, a read-only place, ...)."""


def describe_os_error(e: OSError) -> str:
    """``"<file>: <problem>"`` of an OSError about a path (its ``filename``), e.g. from ``open``."""
    names = [os.fspath(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {e.strerror or type(e).__name__}"


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(e)`` (at most ``limit`` characters), else the exception's type name:
    for quoting a library's long or empty message inside a one-line error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(e).__name__


def user_error_line(e: BaseException) -> str | None:
    """The one line to show for an error the user's input caused (a :class:`StdclError`, or an OSError
    about a named path), or None for anything else: that is a bug and keeps its traceback."""
    if isinstance(e, StdclError):
        return str(e)
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, BrokenPipeError):
        return describe_os_error(e)
    return None
