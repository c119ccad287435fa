"""What `omc verify` feeds the engines: letterboxed frames and tracklet matrices.

Frames come from a video / image folder (omc.runtime.sources + omc.runtime.letterbox) or, by
default, are generated: smooth colour noise with solid upright rectangles, seeded.

Tracklets are built from a frame's own reference ID map, like the fixture's (reference_tiny.md,
"Tracklets and windows"): the unit embedding at a cell, or a weighted sum of the embeddings at a
cell and the cell below it, normalised again. The first one sits in the top-left corner, so the
shrink window is clipped at the border; the others come from the best candidates' centre
cells, then from cells in seeded random order. A cell is used only when the tracklet's
similarity map has a clear maximum (best minus second best >= MIN_WINDOW_MARGIN): otherwise
float rounding alone could move its window and the comparison would judge a coin toss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from omc.errors import BadInput

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

# Tracklet recipes, cycled: weights of the main cell and of the cell below it (the fixture's mixes).
MIX_WEIGHTS: tuple[tuple[float, ...], ...] = ((1.0,), (0.85, 0.15), (1.0,), (0.9, 0.1), (1.0,), (0.8, 0.2))
# Smallest gap between a tracklet's best and second-best cosine for its window to count as fixed.
MIN_WINDOW_MARGIN = 1e-3
# Tracklets whose margins are computed per matrix product.
MARGIN_BATCH = 256
# Generated frames: rectangles per frame, their height range as a fraction of the frame height,
# width-to-height ratio, and the smooth noise's cell size in pixels.
RECTANGLES_PER_FRAME = 12
RECTANGLE_HEIGHT_RANGE = (0.15, 0.6)
RECTANGLE_ASPECT = 0.4
NOISE_CELL_PX = 32


@dataclass(frozen=True)
class Tracklets:
    """vectors: [n, E] float32 unit rows. cells: [n, 2] int64 (row, col) of each main cell.
    margins: [n] float32 best-minus-second cosine of each similarity map."""

    vectors: F32
    cells: I64
    margins: F32


def generated_frames(input_hw: tuple[int, int], count: int, seed: int = 0) -> list[U8]:
    """`count` uint8 [H, W, 3] BGR frames of the network size: smooth noise plus rectangles."""
    import cv2

    height, width = input_hw
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, (max(height // NOISE_CELL_PX, 2), max(width // NOISE_CELL_PX, 2), 3))
        frame = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        for _ in range(RECTANGLES_PER_FRAME):
            box_h = int(height * rng.uniform(*RECTANGLE_HEIGHT_RANGE))
            box_w = max(int(box_h * RECTANGLE_ASPECT), 2)
            top = int(rng.integers(0, max(height - box_h, 1)))
            left = int(rng.integers(0, max(width - box_w, 1)))
            frame[top : top + box_h, left : left + box_w] = rng.uniform(0, 255, 3)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def source_frames(source: str | Path, input_hw: tuple[int, int], count: int) -> list[U8]:
    """The first `count` frames of a video / image folder, letterboxed to (H, W); BadInput if none."""
    from omc.runtime.letterbox import letterbox
    from omc.runtime.sources import open_source

    frames: list[U8] = []
    with open_source(source) as stream:
        for _, frame in stream:
            images, _ = letterbox(frame, input_hw)
            frames.append(images[0])
            if len(frames) == count:
                break
    if not frames:
        raise BadInput(f"source {source} yielded no frames")
    return frames


def _margins(vectors: F32, id_flat: F32) -> F32:
    """Best minus second-best positive cosine of each row of `vectors` [t, E] over id_flat [hw, E]."""
    result = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), MARGIN_BATCH):
        cosine = np.maximum(vectors[start : start + MARGIN_BATCH] @ id_flat.T, 0)
        top_two = -np.partition(-cosine, 1, axis=1)[:, :2]
        result[start : start + MARGIN_BATCH] = top_two[:, 0] - top_two[:, 1]
    return result


def _recipes(cells: I64, first_recipe: int, id_unit: F32) -> F32:
    """Tracklet vectors for flat `cells`, recipes cycled from index `first_recipe`."""
    h, w, dim = id_unit.shape
    id_flat = id_unit.reshape(-1, dim)
    rows, cols = np.divmod(cells, w)
    below = np.minimum(rows + 1, h - 1) * w + cols
    vectors = np.empty((len(cells), dim), np.float32)
    for index, (cell, partner) in enumerate(zip(cells, below)):  # a few hundred rows, each a vector op
        weights = MIX_WEIGHTS[(first_recipe + index) % len(MIX_WEIGHTS)]
        mixed = id_flat[cell] * np.float32(weights[0])
        if len(weights) > 1:
            mixed = mixed + id_flat[partner] * np.float32(weights[1])
        vectors[index] = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
    return vectors


def build_tracklets(id_unit: F32, preferred_cells: I64, count: int, radius: int, seed: int = 0) -> Tracklets:
    """`count` tracklets from the L2-normalised ID map id_unit [h, w, E] (module docstring).

    preferred_cells: flat cells to try first after the border one (e.g. the best candidates'
    centre cells, best first). radius: the shrink radius (the border tracklet sits within it of
    the top-left corner). Fewer tracklets than `count` are returned (with a warning) only when
    too few cells have a clear maximum.
    """
    h, w, dim = id_unit.shape
    id_flat = id_unit.reshape(-1, dim)
    rng = np.random.default_rng(seed)
    corner = np.array([r * w + c for r in range(min(radius, h)) for c in range(min(radius, w))], np.int64)
    # The border tracklet is a cell's own embedding (the first recipe).
    border_margins = _margins(id_flat[corner], id_flat)
    best_border = int(np.argmax(border_margins))
    others = np.concatenate([np.asarray(preferred_cells, np.int64), rng.permutation(h * w).astype(np.int64)])
    _, first = np.unique(others, return_index=True)
    others = others[np.sort(first)]
    others = others[~np.isin(others, corner)]
    chosen: list[np.ndarray] = []
    chosen_cells: list[np.ndarray] = []
    chosen_margins: list[np.ndarray] = []
    taken = 0
    if border_margins[best_border] >= MIN_WINDOW_MARGIN:
        chosen = [id_flat[corner[best_border : best_border + 1]].copy()]
        chosen_cells = [corner[best_border : best_border + 1]]
        chosen_margins = [border_margins[best_border : best_border + 1]]
        taken = 1
    else:
        log.warning("no top-left cell has a clear similarity maximum; the border tracklet is left out")
    for start in range(0, len(others), MARGIN_BATCH):
        if taken >= count:
            break
        cells = others[start : start + MARGIN_BATCH]
        vectors = _recipes(cells, taken, id_unit)
        margins = _margins(vectors, id_flat)
        keep = np.flatnonzero(margins >= MIN_WINDOW_MARGIN)[: count - taken]
        chosen.append(vectors[keep])
        chosen_cells.append(cells[keep])
        chosen_margins.append(margins[keep])
        taken += len(keep)
    if taken < count:
        log.warning("only %d of %d tracklets have a clear similarity maximum; verifying with %d", taken, count, taken)
    flat = np.concatenate(chosen_cells)[:count] if chosen_cells else np.empty(0, np.int64)
    return Tracklets(
        vectors=np.concatenate(chosen)[:count] if chosen else np.empty((0, dim), np.float32),
        cells=np.stack(np.divmod(flat, w), axis=1).astype(np.int64),
        margins=np.concatenate(chosen_margins)[:count] if chosen_margins else np.empty(0, np.float32),
    )
