"""Box geometry: layouts, pairwise IoU (plain and "+1 pixel") and DIoU, centre cells.

Every box is a row of four numbers. xyxy = (x1, y1, x2, y2) corners; tlwh = (x1, y1, w, h);
xyah = (centre x, centre y, w / h, h), the Kalman filter's measurement. Pairwise functions take
[N, 4] and [M, 4] and return [N, M] in one broadcast; empty inputs give correctly shaped empties.

Two IoU conventions coexist in the reference tracker (omc-reference.md 4.8): NMS uses plain
widths (x2 - x1), while fusion, IoU association and duplicate removal use the cython_bbox
convention that counts pixels inclusively (x2 - x1 + 1). `box_iou(..., plus_one=True)` is the
latter, including its rule that boxes overlapping by zero or fewer (inclusive) pixels in either
axis have no intersection.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

from omc.contract import MAP_STRIDE

FloatArray = npt.NDArray[np.floating]
# Layout conversions return the dtype they are given.
BoxArray = TypeVar("BoxArray", bound=npt.NDArray[np.floating])

# DIoU's guard on the enclosing diagonal, as in the reference (omc-reference.md 4.2): it sits only
# in the distance term's denominator.
DIOU_DIAGONAL_EPS = 1e-7


def xyxy_to_tlwh(boxes: BoxArray) -> BoxArray:
    """[N, 4] corners -> [N, 4] (x1, y1, w, h), same dtype; widths are x2 - x1 in that dtype."""
    out = boxes.copy()
    out[:, 2:] -= out[:, :2]
    return out


def tlwh_to_xyxy(boxes: BoxArray) -> BoxArray:
    """[N, 4] (x1, y1, w, h) -> [N, 4] corners, same dtype."""
    out = boxes.copy()
    out[:, 2:] += out[:, :2]
    return out


def tlwh_to_xyah(boxes: BoxArray) -> BoxArray:
    """[N, 4] (x1, y1, w, h) -> [N, 4] (cx, cy, w / h, h), same dtype."""
    out = boxes.copy()
    out[:, :2] += out[:, 2:] / 2
    out[:, 2] /= out[:, 3]
    return out


def xyah_to_tlwh(boxes: BoxArray) -> BoxArray:
    """[N, 4] (cx, cy, a, h) -> [N, 4] (x1, y1, w, h) with w = a * h, same dtype."""
    out = boxes.copy()
    out[:, 2] *= out[:, 3]
    out[:, :2] -= out[:, 2:] / 2
    return out


def xyah_to_xyxy(boxes: BoxArray) -> BoxArray:
    """[N, 4] (cx, cy, a, h) -> [N, 4] corners (x2 = x1 + w, as the reference computes it)."""
    return tlwh_to_xyxy(xyah_to_tlwh(boxes))


def _columns(boxes: FloatArray, dtype: np.dtype) -> FloatArray:
    """[4, N] contiguous x1, y1, x2, y2 rows (broadcasting contiguous rows is several times faster
    than broadcasting strided columns)."""
    return np.ascontiguousarray(np.asarray(boxes, dtype).reshape(-1, 4).T)


def _intersection(a: FloatArray, b: FloatArray, offset: float) -> FloatArray:
    """Overlap areas of [4, ...] column sets that broadcast against each other (e.g. [4, N, 1] and
    [4, 1, M] for every pair, or two [4, K] for K chosen pairs); each side (min - max + offset) clipped at 0."""
    w = np.minimum(a[2], b[2]) - np.maximum(a[0], b[0])
    h = np.minimum(a[3], b[3]) - np.maximum(a[1], b[1])
    if offset:
        w += offset
        h += offset
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    return w * h


def _iou_of_columns(a: FloatArray, b: FloatArray, offset: float) -> FloatArray:
    """IoU of broadcasting [4, ...] column sets (see `_intersection`): the one place the IoU is
    written, so every-pair (`box_iou`, `box_diou`) and chosen-pair (`paired_diou`) values agree bit for bit."""
    inter = _intersection(a, b, offset)
    area_a = (a[2] - a[0] + offset) * (a[3] - a[1] + offset)
    area_b = (b[2] - b[0] + offset) * (b[3] - b[1] + offset)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iou(a: FloatArray, b: FloatArray, *, plus_one: bool = False) -> FloatArray:
    """IoU of every box in `a` with every box in `b`.

    a: [N, 4] corners.  b: [M, 4] corners (pixels; any float dtype, computed in the wider one).
    plus_one: count pixels inclusively (widths x2 - x1 + 1), the cython_bbox convention.
    Returns [N, M] in [0, 1]; 0 where the union is not positive; [N, 0] / [0, M] for empties.
    """
    dtype = np.result_type(np.asarray(a).dtype, np.asarray(b).dtype, np.float32)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype)
    return _iou_of_columns(_columns(a, dtype)[:, :, None], _columns(b, dtype)[:, None, :], 1.0 if plus_one else 0.0)


def _diou_of_columns(iou: FloatArray, ca: FloatArray, cb: FloatArray, exponent: float) -> FloatArray:
    """IoU - (d^2 / (c^2 + eps)) ** exponent from [4, ...] column sets that broadcast against each other.

    The one place the DIoU formula is written: `box_diou` (every pair) and `paired_diou` (chosen
    pairs) both call it, so their values agree bit for bit. iou: the same pairs' plain IoU.
    """
    dtype = iou.dtype
    dx = (cb[0] + cb[2]) / 2 - (ca[0] + ca[2]) / 2
    dy = (cb[1] + cb[3]) / 2 - (ca[1] + ca[3]) / 2
    ew = np.maximum(ca[2], cb[2]) - np.minimum(ca[0], cb[0])
    eh = np.maximum(ca[3], cb[3]) - np.minimum(ca[1], cb[1])
    ratio = (dx * dx + dy * dy) / (ew * ew + eh * eh + dtype.type(DIOU_DIAGONAL_EPS))
    return iou - ratio ** dtype.type(exponent)


def box_diou(a: FloatArray, b: FloatArray, *, exponent: float) -> FloatArray:
    """Distance-IoU of every box in `a` with every box in `b`, as the reference's cluster NMS uses it.

    DIoU = IoU - (d^2 / (c^2 + 1e-7)) ** exponent, with d the distance between the box centres and c
    the diagonal of the smallest box enclosing both; plain widths; the epsilon sits only in that
    denominator. a: [N, 4], b: [M, 4] corners, pixels. Returns [N, M] (IoU taken as 0 where the
    union is empty); [N, 0] / [0, M] for empties.
    """
    dtype = np.result_type(np.asarray(a).dtype, np.asarray(b).dtype, np.float32)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype)
    ca, cb = _columns(a, dtype), _columns(b, dtype)
    ca, cb = ca[:, :, None], cb[:, None, :]
    return _diou_of_columns(_iou_of_columns(ca, cb, 0.0), ca, cb, exponent)


def paired_diou(a: FloatArray, b: FloatArray, *, exponent: float) -> FloatArray:
    """Distance-IoU of each box a[k] with its partner b[k] (see `box_diou`).

    a, b: [K, 4] corners, pixels. Returns [K] in the dtype `box_diou` would use, equal bit for bit
    to its entries for those pairs (same arithmetic), for callers that need a few pairs of a large set.
    """
    dtype = np.result_type(np.asarray(a).dtype, np.asarray(b).dtype, np.float32)
    ca, cb = _columns(a, dtype), _columns(b, dtype)
    return _diou_of_columns(_iou_of_columns(ca, cb, 0.0), ca, cb, exponent)


def centre_cells(boxes: FloatArray, map_hw: tuple[int, int], stride: int = MAP_STRIDE) -> npt.NDArray[np.int64]:
    """Flat index row * w + col of each box's centre cell on a map of `stride` pixels per cell.

    boxes: [N, 4] corners, network pixels (float32 as the graphs compute it; the arithmetic stays
    in the boxes' dtype).  map_hw: (h, w) of the map. Returns [N] int64 with col = clip(floor((x1
    + x2) / (2 stride)), 0, w - 1) and row likewise with y and h (engine-contract.md, "Centre
    cell"); `np.divmod(cells, w)` gives (rows, cols). [0] when N == 0.
    """
    boxes = np.asarray(boxes)
    h, w = map_hw
    col = np.clip(np.floor((boxes[:, 0] + boxes[:, 2]) / (2 * stride)), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor((boxes[:, 1] + boxes[:, 3]) / (2 * stride)), 0, h - 1).astype(np.int64)
    return row * w + col
