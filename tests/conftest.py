"""Shared test helpers: where the real data lives (tests using it skip when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (research-only data, not in the repository)")
    return SHARED_DATA


_OWN_CACHE: list[str] = []  # the cache folder this run made (removed at its end)


def pytest_configure(config) -> None:
    """The user's cache folder is not touched: every test that does not set ``STDCL_CACHE`` itself shares one
    folder of this run (``$STDCL_TEST_CACHE`` to keep and reuse one between runs), made by the main process
    before pytest-xdist starts its workers, which inherit it. Under pytest-xdist each worker gets one
    intra-op thread: 2 workers fill 2 cores without oversubscription (which made some encoder tests several
    times slower)."""
    import os
    import tempfile

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    elif os.environ.get("STDCL_TEST_CACHE"):
        os.environ["STDCL_CACHE"] = os.environ["STDCL_TEST_CACHE"]
    else:
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="stdcl-test-cache-"))
        os.environ["STDCL_CACHE"] = _OWN_CACHE[0]


def pytest_unconfigure(config) -> None:
    import shutil

    for folder in _OWN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)
