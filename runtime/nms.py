"""Cluster-DIoU non-maximum suppression with per-box (density-aware) thresholds.

The reference's NMS (omc-reference.md 4.2 and 4.8): sort by score; A = DIoU of every pair,
upper triangle only (A[i, j] with i ranked above j); a box j is kept when its largest overlap
with a KEPT higher-ranked box is strictly below its own threshold t_j = max(density at its
centre cell, nms_thres). Which boxes are kept depends on which are kept, so the rule is iterated
from "all kept" to a fixed point (at most `max_rounds` rounds, each one matrix operation). Crowds
(high density) thus tolerate more overlap than open scenes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import box_diou

IndexArray = npt.NDArray[np.int64]


def nms_thresholds(density: npt.NDArray[np.floating], nms_thres: float) -> npt.NDArray[np.float32]:
    """Per-box thresholds max(density, nms_thres); density: [N] DenseMask values at the centre cells."""
    return np.maximum(np.asarray(density, np.float32), np.float32(nms_thres))


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
    overlap = np.triu(box_diou(np.asarray(boxes)[order], np.asarray(boxes)[order], exponent=exponent), k=1)
    limit = np.asarray(thresholds)[order]
    keep = updated = np.ones(n, bool)
    # Each round is one [N, N] operation; the count of rounds is small (the reference caps it at 200).
    for _ in range(max_rounds):
        worst = np.where(keep[:, None], overlap, 0).max(axis=0)
        updated = worst < limit
        if np.array_equal(updated, keep):
            break
        keep = updated
    return order[updated][:max_keep].astype(np.int64)
