"""Real `omc export`s for tests, each made once per test session (cached) in a temporary folder.

- `small_export(precision)`: seeded random weights with the tiny test config (depth 0.33, width
  0.125: P3/P4/P5 channels 32/64/128, re-check channel base 32, the reference fixture's shape) at
  320 x 192, K 1000, P 100, max batch 4, max tracklets 64. About 15 s per precision on the
  2-core CI machine; ONNX Runtime runs a frame in tens of milliseconds.
- `fixture_export(precision)`: the reference fixture checkpoint (reference_tiny.pt) at its
  576 x 320 (skips the test, with the reason, when the fixture is absent).

Callers must not modify these folders: copy them first (`copy_export`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from omc.config import ExportConfig

SMALL_SIZE = (320, 192)  # (W, H)
SMALL_SEED = 0
SMALL_RECHECK_CHANNELS = 32
SMALL_CONFIG = ExportConfig(img_size=SMALL_SIZE, max_batch=4, max_tracklets=64)
FIXTURE_SIZE = (576, 320)  # (W, H), the size the fixture's outputs were made at
FIXTURE_CONFIG = ExportConfig(img_size=FIXTURE_SIZE)


@lru_cache(maxsize=1)
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="omc-test-exports-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def session_folder(name: str) -> Path:
    """A folder of this test session's temporary root (removed at exit), created when missing."""
    folder = _root() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@lru_cache(maxsize=1)
def small_checkpoint() -> Any:
    """The LoadedCheckpoint `small_export` exports (float32, built for 320 x 192)."""
    from reference_layout import TINY_CONFIG  # tests/ is on sys.path through its conftest.py

    from omc.export.checkpoint import random_checkpoint
    from omc.export.model import architecture_from_config

    arch = architecture_from_config(TINY_CONFIG, recheck_channels=SMALL_RECHECK_CHANNELS)
    width, height = SMALL_SIZE
    return random_checkpoint(arch, seed=SMALL_SEED, input_hw=(height, width))


@lru_cache(maxsize=None)
def small_export(precision: str = "fp32") -> Path:
    """Folder with detector.onnx, recheck.onnx and export.json of the small network ("fp32" or "fp16")."""
    from dataclasses import replace

    from omc.export.onnx_export import export_engines

    out = _root() / f"small_{precision}"
    export_engines(small_checkpoint(), replace(SMALL_CONFIG, precision=precision), out, seed=SMALL_SEED)
    return out


@lru_cache(maxsize=1)
def fixture_checkpoint() -> Any:
    """reference_tiny.pt loaded for 576 x 320 (skips when the fixture is absent)."""
    from paths import fixture_path

    from omc.export.checkpoint import load_checkpoint

    width, height = FIXTURE_SIZE
    return load_checkpoint(fixture_path("reference_tiny.pt"), input_hw=(height, width))


@lru_cache(maxsize=None)
def fixture_export(precision: str = "fp32") -> Path:
    """Folder with the export of reference_tiny.pt at 576 x 320 ("fp32" or "fp16")."""
    from dataclasses import replace

    from omc.export.onnx_export import export_engines

    out = _root() / f"fixture_{precision}"
    export_engines(fixture_checkpoint(), replace(FIXTURE_CONFIG, precision=precision), out)
    return out


def copy_export(source: Path, target: Path) -> Path:
    """Copy an export folder's files into `target` (created); returns `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        shutil.copy(item, target / item.name)
    return target
