"""A synthetic, deterministic crowd as network outputs: the host post-processing workload.

Random weights detect nothing, so the host code (NMS, fusion, association) would idle in a
benchmark on real frames. `SyntheticCrowd` scripts a scene instead: `tracks` people with fixed
appearance codes walk at constant velocity; every frame has `detections` candidates above the
threshold (one per person plus near-duplicates, for NMS to remove) and re-check peaks near
people (about half above the heat threshold). Each frame is given at two levels, both from the
same maps, so three implementations see the same work:

- network level (`CrowdFrame`): what the reference network returns (decoded candidates, density
  map, ID map, re-check heat map, raw re-check boxes) for the reference tracker and the PyTorch
  path, whose post-processing starts there;
- contract level (`CrowdFrame.detector_outputs()`, `.recheck_outputs()`): what the engines
  return (top candidates, their density and embeddings, the re-check's top-P peaks) for the
  runtime.

Frames are in network pixels (the frame is the network input: letterbox is the identity).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.contract import MAP_STRIDE
from omc.runtime.boxes import centre_cells

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Detect's boundary-aware regression scale k at initialisation (omc-reference.md section 2): the
# re-check boxes decode with it.
DETECT_K = 10.0
# Scene geometry, network pixels: where people start, their speed per frame and size.
START_X_PX, START_Y_PX = (40.0, 1000.0), (100.0, 500.0)
SPEED_PX = 2.0
WIDTH_PX, HEIGHT_PX = (30.0, 60.0), (80.0, 160.0)
# Detection noise: centre jitter (pixels), score ranges of people and of duplicates.
JITTER_PX = 1.5
PERSON_SCORES, DUPLICATE_SCORES = (0.7, 0.95), (0.51, 0.69)
EMBEDDING_NOISE = 0.05
DENSITY_RANGE = (0.0, 0.7)
# Re-check peaks: centre jitter (pixels) and heat range (threshold 0.3 keeps about half).
PEAK_JITTER_PX = 2.0
PEAK_HEAT = (0.0, 0.6)
# Candidate columns: cx, cy, w, h, obj, cls.
CANDIDATE_COLUMNS = 6


def unit(vectors: F32) -> F32:
    """Rows divided by their L2 norm (float32, new array)."""
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def suppress_non_peaks(heatmap: F32) -> F32:
    """[h, w] -> [h, w]: the value where it equals the max of its 3 x 3 neighbourhood, else 0."""
    padded = np.pad(heatmap, 1, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    pooled = windows.max(axis=(-2, -1))
    return np.where(heatmap == pooled, heatmap, np.float32(0)).astype(np.float32)


def decode_recheck_boxes(raw: F32, k: float = DETECT_K, stride: int = MAP_STRIDE) -> F32:
    """Raw re-check boxes [h, w, 4] -> corners [h, w, 4] (input pixels), the network's decode:
    centre = ((sigmoid(raw_xy) - 0.5) * k + (col, row)) * stride, size = raw_wh * stride."""
    h, w = raw.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    sigmoid = 1.0 / (1.0 + np.exp(-raw[..., :2]))
    centre = ((sigmoid - np.float32(0.5)) * np.float32(k) + grid) * np.float32(stride)
    half = raw[..., 2:] * np.float32(stride) / np.float32(2)
    return np.concatenate([centre - half, centre + half], -1).astype(np.float32)


@dataclass
class CrowdFrame:
    """One frame of the crowd at network level (batch of 1; arrays may be reused by the next frame).

    candidates [1, D, 6] (cx, cy, w, h, obj, cls = 1), dense [1, 1, h, w], id_map [1, h, w, E]
    (unit codes at the cells that are read, zeros elsewhere), heatmap [1, 1, h, w] (M_p),
    siambox_raw [1, h, w, 4]; peaks: P of the re-check.
    """

    candidates: F32
    dense: F32
    id_map: F32
    heatmap: F32
    siambox_raw: F32
    peaks: int

    @property
    def map_hw(self) -> tuple[int, int]:
        return self.dense.shape[2], self.dense.shape[3]

    def detector_outputs(self) -> dict[str, F32]:
        """The detector engine's host outputs: the candidates by score with corners, density and
        unit embedding at their centre cells (K = D: every candidate is a real one)."""
        rows = self.candidates[0]
        scores = (rows[:, 4] * rows[:, 5]).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        ranked = rows[order]
        half = ranked[:, 2:4] / np.float32(2)
        corners = np.concatenate([ranked[:, :2] - half, ranked[:, :2] + half], 1).astype(np.float32)
        cell_rows, cell_cols = np.divmod(centre_cells(corners, self.map_hw), self.map_hw[1])
        return {
            contract.DET_BOXES: corners[None],
            contract.DET_SCORES: scores[order][None],
            contract.DET_DENSITY: self.dense[0, 0][cell_rows, cell_cols][None],
            contract.DET_EMBEDDINGS: self.id_map[0][cell_rows, cell_cols][None],
        }

    def recheck_outputs(self) -> dict[str, F32]:
        """The re-check engine's host outputs: the top-P peaks after 3 x 3 suppression, their
        decoded boxes and embeddings."""
        suppressed = suppress_non_peaks(self.heatmap[0, 0])
        width = suppressed.shape[1]
        flat = suppressed.ravel()
        top = np.argsort(-flat, kind="stable")[: self.peaks]
        rows, cols = top // width, top % width
        boxes = decode_recheck_boxes(self.siambox_raw[0])[rows, cols]
        return {
            contract.TRANS_BOXES: boxes[None],
            contract.TRANS_SCORES: flat[top][None],
            contract.TRANS_EMBEDDINGS: self.id_map[0][rows, cols][None],
        }


class SyntheticCrowd:
    """A scripted crowd of `tracks` people, `detections` candidates and `peaks` re-check peaks per frame.

    input_hw: network input (H, W); embedding_dim: E; seed: same seed, same frames.
    """

    def __init__(
        self,
        tracks: int,
        detections: int,
        peaks: int = 100,
        input_hw: tuple[int, int] = (608, 1088),
        embedding_dim: int = 512,
        seed: int = 0,
    ) -> None:
        if detections < tracks:
            raise ValueError(f"detections ({detections}) must be at least tracks ({tracks})")
        self.tracks, self.detections, self.peaks = tracks, detections, peaks
        self.input_hw = input_hw
        self.map_hw = (input_hw[0] // MAP_STRIDE, input_hw[1] // MAP_STRIDE)
        self.embedding_dim = embedding_dim
        self.seed = seed

    def frames(self, count: int) -> Iterator[CrowdFrame]:
        """`count` frames; the arrays of a frame are valid until the next one is drawn."""
        rng = np.random.default_rng(self.seed)
        n, d, p = self.tracks, self.detections, self.peaks
        h, w = self.map_hw
        codes = unit(rng.standard_normal((n, self.embedding_dim)).astype(np.float32))
        start = np.stack([rng.uniform(*START_X_PX, n), rng.uniform(*START_Y_PX, n)], 1)
        velocity = rng.uniform(-SPEED_PX, SPEED_PX, (n, 2))
        size = np.stack([rng.uniform(*WIDTH_PX, n), rng.uniform(*HEIGHT_PX, n)], 1)
        id_map = np.zeros((1, h, w, self.embedding_dim), np.float32)
        heatmap = np.zeros((1, 1, h, w), np.float32)
        siambox_raw = np.zeros((1, h, w, 4), np.float32)
        written: list[tuple[I64, I64]] = []
        for frame in range(count):
            for rows, cols in written:  # clear what the previous frame wrote
                id_map[0, rows, cols] = 0
                heatmap[0, 0, rows, cols] = 0
                siambox_raw[0, rows, cols] = 0
            written = []
            centre = start + velocity * frame
            person = np.concatenate([np.arange(n), rng.integers(0, n, d - n)])
            boxes_centre = (centre[person] + rng.normal(0, JITTER_PX, (d, 2))).astype(np.float32)
            boxes_size = size[person].astype(np.float32)
            scores = np.concatenate([rng.uniform(*PERSON_SCORES, n), rng.uniform(*DUPLICATE_SCORES, d - n)])
            candidates = np.zeros((1, d, CANDIDATE_COLUMNS), np.float32)
            candidates[0, :, 0:2] = boxes_centre
            candidates[0, :, 2:4] = boxes_size
            candidates[0, :, 4] = scores
            candidates[0, :, 5] = 1.0
            half = boxes_size / np.float32(2)
            corners = np.concatenate([boxes_centre - half, boxes_centre + half], 1)
            rows, cols = np.divmod(centre_cells(corners, self.map_hw), w)
            noisy = codes[person] + rng.normal(0, EMBEDDING_NOISE, (d, self.embedding_dim)).astype(np.float32)
            id_map[0, rows, cols] = unit(noisy)
            written.append((rows, cols))
            dense = rng.uniform(*DENSITY_RANGE, (1, 1, h, w)).astype(np.float32)

            peak_person = rng.integers(0, n, p)
            peak_centre = centre[peak_person] + rng.normal(0, PEAK_JITTER_PX, (p, 2))
            peak_cols = np.clip(np.floor(peak_centre[:, 0] / MAP_STRIDE), 0, w - 1).astype(np.int64)
            peak_rows = np.clip(np.floor(peak_centre[:, 1] / MAP_STRIDE), 0, h - 1).astype(np.int64)
            heatmap[0, 0, peak_rows, peak_cols] = rng.uniform(*PEAK_HEAT, p).astype(np.float32)
            # Raw boxes whose decode gives the person's box around the peak's position.
            offset = np.clip((peak_centre / MAP_STRIDE - np.stack([peak_cols, peak_rows], 1)) / DETECT_K + 0.5, 0.01, 0.99)
            siambox_raw[0, peak_rows, peak_cols, 0:2] = np.log(offset / (1 - offset))
            siambox_raw[0, peak_rows, peak_cols, 2:4] = size[peak_person] / MAP_STRIDE
            id_map[0, peak_rows, peak_cols] = codes[peak_person]
            written.append((peak_rows, peak_cols))
            yield CrowdFrame(candidates, dense, id_map, heatmap, siambox_raw, p)
