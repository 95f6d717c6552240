"""One cache folder for the whole project (converted npz copies and analysis entries)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.cache import cache_root
from stdcl.data.npz_members import cache_folder
from stdcl.io import cache_dir


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STDCL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "stdcl"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "stdcl"
    monkeypatch.setenv("STDCL_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    assert cache_root() == cache_dir() and cache_folder() == cache_dir() / "npz"


def test_the_test_run_keeps_out_of_the_users_cache() -> None:
    """tests/conftest.py points STDCL_CACHE at a folder of this run (or at $STDCL_TEST_CACHE)."""
    import os

    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stdcl"
    assert cache_dir() != user
    assert os.environ.get("STDCL_TEST_CACHE") or cache_dir().name.startswith("stdcl-test-cache-")
