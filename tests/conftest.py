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


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker gets one intra-op thread: 2 workers fill 2 cores without
    oversubscription (which made some encoder tests several times slower)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
