"""Fusion of the re-check's transductive boxes with the basic detections (omc-reference.md 4.3).

A transductive box b joins the frame's detections when s = 1 - max IoU(b, basic boxes) >= 1 -
iou_thres, that is, when it overlaps no basic detection by more than `iou_thres`: it restores a
target the detector missed without duplicating one it found. IoU uses the "+1 pixel" widths of
the reference's cython_bbox, in float64.

Defect fix (omc-reference.md section 5): the reference fused only when the detector found at
least one box, so a frame where it missed everything dropped every restored box. Here, with no
basic detections, every transductive box is kept (max IoU over an empty set is 0).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import box_iou


def fuse_transductive(
    basic_boxes: npt.NDArray[np.floating], trans_boxes: npt.NDArray[np.floating], iou_thres: float
) -> npt.NDArray[np.bool_]:
    """Mask of the transductive boxes to add.

    basic_boxes: [N, 4], trans_boxes: [P, 4], corners in the same (network) pixels.
    Returns bool [P]: True where max over basic boxes of IoU(+1) <= iou_thres; all True if N == 0.
    """
    trans = np.asarray(trans_boxes, np.float64).reshape(-1, 4)
    basic = np.asarray(basic_boxes, np.float64).reshape(-1, 4)
    if len(basic) == 0:
        return np.ones(len(trans), bool)
    if len(trans) == 0:
        return np.zeros(0, bool)
    return box_iou(basic, trans, plus_one=True).max(axis=0) <= iou_thres
