"""Where the repository and the reference fixtures are, for tests."""

from __future__ import annotations

import os
import importlib
from pathlib import Path
from types import ModuleType

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


# `make test` sets this when it installed the rtx extra: then a TensorRT for RTX that does not
# import fails the suite instead of skipping every engine build (CI must build real engines).
REQUIRE_RTX = os.environ.get("OMC_REQUIRE_RTX") == "1"
RTX_REASON = "TensorRT for RTX is not installed (pip install '.[rtx]')"


def rtx_or_skip() -> ModuleType:
    """The tensorrt_rtx module; skips the test when absent, unless OMC_REQUIRE_RTX=1 (then fails)."""
    if not REQUIRE_RTX:
        return pytest.importorskip("tensorrt_rtx", reason=RTX_REASON)
    try:
        return importlib.import_module("tensorrt_rtx")
    except ImportError as exc:
        pytest.fail(f"OMC_REQUIRE_RTX=1 but tensorrt_rtx does not import: {exc}")
