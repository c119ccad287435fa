"""A small random-weights OMC export for the benchmark tests, made once per test session.

Variant s at 320 x 192 with seed 0: exports in about half a minute on the 2-core CI machine and
runs a frame in tens of milliseconds.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from omc.config import ExportConfig

SMALL_VARIANT = "s"
SMALL_SIZE = (320, 192)  # (W, H)
SMALL_SEED = 0


@lru_cache(maxsize=1)
def small_export() -> tuple[Path, Any]:
    """(folder with export.json + detector.onnx + recheck.onnx, the LoadedCheckpoint exported)."""
    from omc.export.checkpoint import random_checkpoint
    from omc.export.onnx_export import export_engines

    root = Path(tempfile.mkdtemp(prefix="omc-bench-export-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    width, height = SMALL_SIZE
    loaded = random_checkpoint(SMALL_VARIANT, seed=SMALL_SEED, input_hw=(height, width))
    export_engines(loaded, ExportConfig(img_size=SMALL_SIZE), root / "engines", seed=SMALL_SEED)
    return root / "engines", loaded
