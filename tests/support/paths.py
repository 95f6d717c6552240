"""Where things are, for every test module wherever it sits under ``tests/``."""

from __future__ import annotations

from pathlib import Path

#: the repository root
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: recorded reference outputs (official encoders, published pipelines, bundled checkpoints)
FIXTURES = TESTS / "fixtures"
#: ``../shared/data`` beside the repository (research-only data; tests using it skip when it is absent)
SHARED_DATA = ROOT.parent / "shared" / "data"
