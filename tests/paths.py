"""Where the repository and the reference fixtures are, for tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The reference fixtures sit beside the checkout (../shared/fixtures); CI has them there too.
FIXTURES_DIR = Path(os.environ.get("OMC_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def fixture_path(name: str) -> Path:
    """Path of a reference fixture, or skip the test with the reason when it is absent."""
    path = FIXTURES_DIR / name
    if not path.exists():
        pytest.skip(f"reference fixture {path} is absent (set OMC_FIXTURES to its folder)")
    return path
