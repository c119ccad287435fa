"""Association costs and the linear assignment between tracks (rows) and detections (columns).

Costs follow the reference tracker (omc-reference.md 4.5): cosine distance between the tracks'
smoothed embeddings and the detections' embeddings, gated and blended with the squared
Mahalanobis distance of the Kalman filter; IoU distance (1 - IoU, "+1 pixel" convention) for the
later rounds. The assignment is `lap.lapjv` with a cost limit, as in the reference: a pair whose
cost exceeds the limit stays unmatched.
"""

from __future__ import annotations

from typing import NamedTuple

import lap
import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import box_iou

Float64Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


class Assignment(NamedTuple):
    """matches [M, 2] int64 (row, col), rows ascending; unmatched rows / cols, int64, ascending."""

    matches: IndexArray
    unmatched_rows: IndexArray
    unmatched_cols: IndexArray


def cosine_distance(track_features: npt.NDArray[np.floating], det_features: npt.NDArray[np.floating]) -> Float64Array:
    """1 - cosine similarity, clipped at 0, of every track feature with every detection feature.

    track_features: [T, E]; det_features: [D, E] (float32; cast to float64 as the reference's
    cdist does). A zero vector has similarity 0 with everything. Returns [T, D] float64 in [0, 2].
    """
    a = np.asarray(track_features, np.float64)
    b = np.asarray(det_features, np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))[:, None] * np.sqrt(np.einsum("ij,ij->i", b, b))[None, :]
    # A contiguous right operand keeps OpenBLAS on its single-threaded small-matrix path (3x faster here).
    dots = a @ np.ascontiguousarray(b.T)
    similarity = np.divide(dots, norms, out=np.zeros(norms.shape), where=norms > 0)
    return np.maximum(0.0, 1.0 - similarity)


def gate_and_fuse_motion(
    appearance: Float64Array, mahalanobis: Float64Array, *, gate: float, appearance_weight: float
) -> Float64Array:
    """Blend appearance cost with the squared Mahalanobis distance; gated pairs become inf.

    appearance, mahalanobis: [T, D]. Returns a new [T, D]: inf where mahalanobis > gate,
    else appearance_weight * appearance + (1 - appearance_weight) * mahalanobis.
    """
    fused = appearance_weight * appearance + (1.0 - appearance_weight) * mahalanobis
    fused[mahalanobis > gate] = np.inf
    return fused


def iou_distance(track_boxes: npt.NDArray[np.floating], det_boxes: npt.NDArray[np.floating]) -> Float64Array:
    """1 - IoU ("+1 pixel" widths) of [T, 4] and [D, 4] corners, float64 [T, D]."""
    tracks = np.asarray(track_boxes, np.float64).reshape(-1, 4)
    dets = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    iou = box_iou(tracks, dets, plus_one=True)
    return (1.0 - iou).astype(np.float64, copy=False)


def linear_assignment(cost: Float64Array, cost_limit: float) -> Assignment:
    """Minimum-cost matching with lap.lapjv(extend_cost=True, cost_limit=cost_limit).

    cost: [R, C] float64 (inf allowed). Returns an Assignment; with R == 0 or C == 0 every row
    and column is unmatched and `matches` is an empty [0, 2] array.
    """
    rows, cols = cost.shape
    if cost.size == 0:
        return Assignment(np.empty((0, 2), np.int64), np.arange(rows, dtype=np.int64), np.arange(cols, dtype=np.int64))
    _, row_to_col, col_to_row = lap.lapjv(np.asarray(cost, np.float64), extend_cost=True, cost_limit=cost_limit)
    matched = row_to_col >= 0
    matches = np.empty((int(np.count_nonzero(matched)), 2), np.int64)
    matches[:, 0] = np.flatnonzero(matched)
    matches[:, 1] = row_to_col[matched]
    return Assignment(
        matches,
        np.flatnonzero(~matched).astype(np.int64),
        np.flatnonzero(np.asarray(col_to_row) < 0).astype(np.int64),
    )
