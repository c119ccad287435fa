"""Shared material of the calibration tests, made once per test session.

- `tiny_export()`: a copy of the shared small `omc export` (tests/small_export.py: seeded random
  weights, tiny test config, 320 x 192, K 1000, P 100).
- `write_frames(folder, count)`: textured synthetic BGR frames (smooth noise, ramps, blobs; a
  frame's mean grey level rises with its number), seeded.
- `numbered_frames(folder, count)`: flat frames whose blue value is the frame number, so a stored
  (letterboxed) frame tells which source frame it was.
- `tiny_calibration()` and `tiny_int8()`: a calibration set of `tiny_export()` and its INT8 exports
  for both targets, from one calibration.
- `tiny_drift(target, integer_kernels)`: their drift from `tiny_export()` on the held-out frames.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from omc.config import CalibConfig

FRAME_SIZE = (480, 270)  # (W, H) of the synthetic source frames: letterboxing pads them
# The calibration of the tiny export used by the quantization tests.
TINY_CALIB = CalibConfig(frames=12, holdout_frames=4, recheck_frames=4, tracker_warmup_frames=2)


def _session_root() -> Path:
    from small_export import session_folder  # tests/ is on sys.path through its conftest.py

    return session_folder("calib")


@lru_cache(maxsize=1)
def tiny_export() -> Path:
    """A copy of the shared small export (tests/small_export.py: the tiny test config at 320 x 192);
    copied because quantizing caches activation ranges inside the export's folder."""
    from small_export import copy_export, small_export  # tests/ is on sys.path through its conftest.py

    return copy_export(small_export(), _session_root() / "small")


def write_frames(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` textured uint8 BGR frames of FRAME_SIZE as 000001.png ... in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = FRAME_SIZE
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    for index in range(count):
        coarse = rng.random((height // 16 + 1, width // 16 + 1, 3), dtype=np.float32)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        image = 0.5 * smooth + 0.3 * ramp + 0.2 * index / max(count - 1, 1)
        centre = (int(rng.integers(40, width - 40)), int(rng.integers(40, height - 40)))
        frame = np.clip(image * 255, 0, 255).astype(np.uint8)
        cv2.circle(frame, centre, 25, (40, 60, 200), -1)
        cv2.imwrite(str(folder / f"{index + 1:06d}.png"), frame)
    return folder


def numbered_frames(folder: Path, count: int, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """Flat frames whose blue channel is the 1-based frame number (green 50, red 100)."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    for index in range(1, count + 1):
        frame = np.empty((height, width, 3), np.uint8)
        frame[...] = (index, 50, 100)
        cv2.imwrite(str(folder / f"{index:06d}.png"), frame)
    return folder


@lru_cache(maxsize=1)
def tiny_calibration() -> Path:
    """A calibration set of `tiny_export()` over 40 textured frames (12 + 4 held out)."""
    from omc.calib.dataset import build_calibration_set

    frames = write_frames(_session_root() / "frames", 40)
    return build_calibration_set([frames], TINY_CALIB.frames, tiny_export(), _session_root() / "tiny_calib.npz", TINY_CALIB)


@lru_cache(maxsize=1)
def tiny_int8() -> dict[str, Path]:
    """{"cpu": folder, "tensorrt": folder} of the tiny export's INT8 graphs, one calibration."""
    from omc.calib.quantize import quantize_targets

    return quantize_targets(tiny_export(), tiny_calibration(), ["cpu", "tensorrt"], config=TINY_CALIB)


@lru_cache(maxsize=None)
def tiny_drift(target: str, integer_kernels: bool = True) -> Any:
    """The DriftReport of `tiny_int8()[target]` against `tiny_export()` on the held-out frames
    (integer_kernels False: the INT8 graphs run as written, in float)."""
    from omc.calib.drift import drift_on_holdout

    return drift_on_holdout(tiny_export(), tiny_int8()[target], tiny_calibration(), TINY_CALIB,
                            integer_kernels=integer_kernels)  # fmt: skip
