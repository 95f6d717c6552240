"""Fault injection for tests: ``STDCL_TEST_KILL_AT=<point>:<n>`` (e.g. ``state-tensors:2``) makes the
process SIGKILL itself the ``n``-th time it reaches ``fault_point("<point>")`` (``n`` defaults to 1).

The points (tests/train/test_fault_kill.py): ``step`` (after an optimiser step), ``best`` and ``last``
(after writing that checkpoint, before the resume state), ``state-partial`` (the state's tensor
file written under its temporary name), ``state-tensors`` (renamed, before ``state.json``) and
``state-json`` (committed, before old state files are removed). Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal

_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process if ``STDCL_TEST_KILL_AT`` names this point and its count is reached."""
    spec = os.environ.get("STDCL_TEST_KILL_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
