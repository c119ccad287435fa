"""Frames to benchmark on: a real source (`--source`) or a generated clip.

The generated clip is deterministic (seeded): a smooth background with textured, person-sized
rectangles walking across it, at MOT17's frame size by default. It exists so `omc bench` runs
on a fresh machine without data; the engines' cost does not depend on what the frames show
(random weights detect nothing in either case), while the host's letterbox cost depends on
the frame size, which is why it matches MOT17's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from omc.runtime.sources import open_source

FrameBGR = npt.NDArray[np.uint8]

# Distinct generated frames (cycled): enough to defeat caching of one input, few to keep in memory.
CLIP_DISTINCT_FRAMES = 8
# Walkers in the generated clip, their speed in pixels per frame and their size range (pixels).
CLIP_WALKERS = 12
CLIP_SPEED_PX = 6.0
CLIP_WALKER_HW = ((120, 360), (40, 120))
# Cell size of the background's smooth noise, pixels.
CLIP_BACKGROUND_CELL_PX = 64


def generated_clip(size: tuple[int, int], count: int = CLIP_DISTINCT_FRAMES, seed: int = 0) -> list[FrameBGR]:
    """`count` uint8 [H, W, 3] BGR frames of a (width, height) `size`, the same for the same seed."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, (max(height // CLIP_BACKGROUND_CELL_PX, 1), max(width // CLIP_BACKGROUND_CELL_PX, 1), 3))
    background = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    background = np.clip(background, 0, 255).astype(np.uint8)
    heights = rng.integers(*CLIP_WALKER_HW[0], CLIP_WALKERS)
    widths = rng.integers(*CLIP_WALKER_HW[1], CLIP_WALKERS)
    start = np.stack([rng.uniform(0, width, CLIP_WALKERS), rng.uniform(0, height, CLIP_WALKERS)], 1)
    velocity = rng.uniform(-CLIP_SPEED_PX, CLIP_SPEED_PX, (CLIP_WALKERS, 2))
    colours = rng.integers(0, 256, (CLIP_WALKERS, 3))
    texture = rng.integers(0, 40, (height, width, 1), dtype=np.uint8)
    frames = []
    for index in range(count):
        frame = background.copy()
        positions = (start + velocity * index) % np.array([width, height])
        for (x, y), w, h, colour in zip(positions, widths, heights, colours):  # a dozen drawing calls
            cv2.rectangle(frame, (int(x), int(y)), (int(x + w), int(y + h)), tuple(int(c) for c in colour), -1)
        frames.append(np.asarray(cv2.add(frame, np.repeat(texture, 3, axis=2)), dtype=np.uint8))
    return frames


def cycle_frames(frames: list[FrameBGR]) -> Iterator[FrameBGR]:
    """The frames in order, over and over."""
    while True:
        yield from frames


def source_frames(path: Path) -> Iterator[FrameBGR]:
    """Frames of a video / image folder / MOTChallenge sequence, restarting at its end (decoded
    lazily: the caller times the decode as part of the frame)."""
    while True:
        source = open_source(path)
        try:
            for _, frame in source:
                yield frame
        finally:
            source.close()
