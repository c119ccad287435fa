"""Cluster-DIoU non-maximum suppression with per-box (density-aware) thresholds.

The reference's NMS (omc-reference.md 4.2 and 4.8): sort by score; A = DIoU of every pair,
upper triangle only (A[i, j] with i ranked above j); a box j is kept when its largest overlap
with a KEPT higher-ranked box is strictly below its own threshold t_j = max(density at its
centre cell, nms_thres). Which boxes are kept depends on which are kept, so the rule is iterated
from "all kept" to a fixed point (at most `max_rounds` rounds). Crowds (high density) thus
tolerate more overlap than open scenes.

Only the pairs with A[i, j] >= t_j ("i can suppress j") matter, and DIoU = IoU - (a non-negative
term), so a pair whose IoU is already below t_j cannot be one. The NMS therefore takes the IoU of
every pair (a few cheap operations), evaluates the costlier DIoU term only on the pairs that pass
that test (a few per box in a crowd) and iterates over the resulting short list of suppressing
pairs: the same decisions as the dense [N, N] rule, at a fraction of its cost.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import box_iou, paired_diou

IndexArray = npt.NDArray[np.int64]

# The DIoU term (d^2 / (c^2 + eps)) can only be NaN (inf / inf) when squared coordinate differences
# overflow; with every coordinate within sqrt(max / 8) of 0 no sum of two squared differences of
# centres or corners can. Boxes beyond that bound (never real pixels) keep every pair as a candidate.
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
    iou = box_iou(ranked, ranked)  # [N, N], the dtype box_diou uses
    # DIoU <= IoU unless the distance term is NaN, so IoU < t_j rules a pair out.
    candidate = ~(iou < limit[None, :])
    dtype = iou.dtype
    if not np.all(np.abs(ranked) <= np.sqrt(np.finfo(dtype).max / _OVERFLOW_FREE_DIVISOR)):
        candidate[:] = True
    # Flat indices and a row < col filter: np.nonzero / np.triu on a 2-d mask cost ten times more.
    rows, cols = np.divmod(np.flatnonzero(candidate), len(ranked))
    upper = rows < cols
    rows, cols = rows[upper], cols[upper]
    overlap = paired_diou(ranked[rows], ranked[cols], iou[rows, cols], exponent=exponent)
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
