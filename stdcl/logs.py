"""Logging set-up and progress bars shared by the CLI and the library."""

from __future__ import annotations

import logging
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

log = logging.getLogger("stdcl")


def setup_logging(verbosity: int = 0) -> None:
    """Configure the ``stdcl`` logger: WARNING at -1, INFO at 0, DEBUG at 1+."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("stdcl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def progress(iterable: Iterable[T], desc: str, total: int | None = None, disable: bool | None = None,
             unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar on stderr; ``disable=None`` hides it when stderr is not a terminal."""
    return tqdm(iterable, desc=desc, total=total, disable=disable, unit=unit, dynamic_ncols=True, leave=False)
