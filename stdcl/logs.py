"""Logging set-up and progress bars shared by the CLI and the library."""

from __future__ import annotations

import logging
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

log = logging.getLogger("stdcl")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (survives stream swaps, e.g. in tests)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """Configure the ``stdcl`` logger: WARNING at -1, INFO at 0, DEBUG at 1+ (idempotent).

    Records still propagate to the root logger, so applications and pytest's caplog see them;
    the handler is only added when the root logger has none (no duplicate lines).
    """
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logger = logging.getLogger("stdcl")
    logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, _StderrHandler)]
    if not logging.getLogger().handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, disable: bool | None = None,
             unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar on stderr; ``disable=None`` hides it when stderr is not a terminal."""
    return tqdm(iterable, desc=desc, total=total, disable=disable, unit=unit, dynamic_ncols=True, leave=False)
