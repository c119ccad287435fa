"""Cluster-DIoU non-maximum suppression with per-box (density-aware) thresholds.

The reference's NMS (omc-reference.md 4.2 and 4.8): sort by score; A = DIoU of every pair,
upper triangle only (A[i, j] with i ranked above j); a box j is kept when its largest overlap
with a KEPT higher-ranked box is strictly below its own threshold t_j = max(density at its
centre cell, nms_thres). Which boxes are kept depends on which are kept, so the rule is iterated
from "all kept" to a fixed point (at most `max_rounds` rounds). Crowds (high density) thus
tolerate more overlap than open scenes.

Only the pairs with A[i, j] >= t_j ("i can suppress j") matter, and DIoU = IoU - (a non-negative
term) is then positive (thresholds are), so such boxes overlap. The NMS therefore compares x extents
of every pair (one cheap [N, N] test), then y extents of the pairs left, evaluates DIoU only on the
overlapping pairs (a few per box in a crowd) and iterates over the resulting short list of
suppressing pairs: the same decisions as the dense [N, N] rule, at a fraction of its cost.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import paired_diou

IndexArray = npt.NDArray[np.int64]

# Within sqrt(max / 8) of 0 no coordinate difference, squared and summed with another, overflows,
# so the DIoU's distance term is never NaN (inf / inf) and DIoU <= IoU holds. Boxes beyond that
# bound (never real pixels) are compared pair by pair without the overlap shortcut.
_OVERFLOW_FREE_DIVISOR = 8.0


def nms_thresholds(density: npt.NDArray[np.floating], nms_thres: float) -> npt.NDArray[np.float32]:
    """Per-box thresholds max(density, nms_thres); density: [N] DenseMask values at the centre cells."""
    return np.maximum(np.asarray(density, np.float32), np.float32(nms_thres))


def _suppressing_pairs(
    ranked: npt.NDArray[np.floating], limit: npt.NDArray[np.floating], exponent: float
) -> tuple[IndexArray, IndexArray]:
    """(i, j) with i < j and NOT (DIoU(ranked[i], ranked[j]) < limit[j]): the pairs where a kept i suppresses j.

    ranked: [N, 4] corners by score.  limit: [N] thresholds in that order.  Returns two int64 [P].
    NaN overlaps count as suppressing, as they make the dense rule's column maximum NaN.
    """
    n = len(ranked)
    dtype = np.result_type(ranked.dtype, np.float32)  # the dtype box_diou computes in
    boxes = np.asarray(ranked, dtype)
    bound = np.sqrt(np.finfo(dtype).max / _OVERFLOW_FREE_DIVISOR)
    if bool(np.all(np.abs(boxes) <= bound)) and bool(np.all(limit > 0)):
        # No NaN term within the bound, so DIoU <= IoU; boxes apart along x or y have IoU 0, below
        # every (positive) threshold. Flat indices: np.nonzero on a 2-d mask costs ten times more.
        x1, x2 = np.ascontiguousarray(boxes[:, 0]), np.ascontiguousarray(boxes[:, 2])
        rows, cols = np.divmod(np.flatnonzero((x1[:, None] < x2[None, :]) & (x1[None, :] < x2[:, None])), n)
        y1, y2 = boxes[:, 1], boxes[:, 3]
        keep = (rows < cols) & (y1[rows] < y2[cols]) & (y1[cols] < y2[rows])
    else:
        rows, cols = np.divmod(np.arange(n * n), n)
        keep = rows < cols
    rows, cols = rows[keep], cols[keep]
    overlap = paired_diou(boxes[rows], boxes[cols], exponent=exponent)
    suppresses = ~(overlap < limit[cols])
    return rows[suppresses].astype(np.int64), cols[suppresses].astype(np.int64)


def cluster_diou_nms(
    boxes: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    thresholds: npt.NDArray[np.floating],
    *,
    exponent: float,
    max_rounds: int,
    max_keep: int,
) -> IndexArray:
    """Indices of the boxes cluster-DIoU NMS keeps, highest score first.

    boxes: [N, 4] corners, network pixels (float32).  scores: [N].  thresholds: [N], a box is
    suppressed when its DIoU with a kept higher-scoring box is >= its threshold.  exponent: of
    the DIoU distance term (0.7 in the reference).  max_rounds: fixed-point iterations.
    max_keep: at most this many indices are returned.
    Ties in score keep input order (stable sort). Returns int64 [M], M <= min(N, max_keep);
    an empty [0] for N == 0.
    """
    n = len(boxes)
    if n == 0:
        return np.empty(0, np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    limit = np.asarray(thresholds)[order]
    source, target = _suppressing_pairs(np.asarray(boxes)[order], limit, exponent)
    # The dense rule's column maximum also covers zeros (the diagonal, the lower triangle and the
    # boxes not kept), so a box whose threshold is not above 0 is always suppressed.
    open_limit = limit > 0
    keep = updated = np.ones(n, bool)
    # Each round is a few operations on the short pair list; the rounds are few (the reference caps them at 200).
    for _ in range(max_rounds):
        suppressed = np.zeros(n, bool)
        suppressed[target[keep[source]]] = True
        updated = open_limit & ~suppressed
        if np.array_equal(updated, keep):
            break
        keep = updated
    return order[updated][:max_keep].astype(np.int64)
