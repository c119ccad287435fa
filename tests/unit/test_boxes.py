"""Box geometry against hand-computed cases (arithmetic in the comments) and slow references."""

from __future__ import annotations

import numpy as np
import pytest

from omc.runtime.boxes import (
    box_diou,
    box_iou,
    centre_cells,
    tlwh_to_xyah,
    tlwh_to_xyxy,
    xyah_to_tlwh,
    xyah_to_xyxy,
    xyxy_to_tlwh,
)


def test_iou_plain_widths():
    a = np.array([[0, 0, 4, 4]], np.float32)
    b = np.array([[2, 2, 6, 6], [4, 0, 8, 4], [10, 10, 12, 12]], np.float32)
    # [2,2,6,6]: intersection 2 x 2 = 4; union 16 + 16 - 4 = 28 -> 1/7.
    # [4,0,8,4]: touching edge, intersection 0 x 4 = 0 -> 0.
    # far away -> 0.
    np.testing.assert_allclose(box_iou(a, b), [[4 / 28, 0.0, 0.0]], rtol=1e-6)


def test_iou_plus_one_widths():
    a = np.array([[0, 0, 4, 4]], np.float64)
    b = np.array([[2, 2, 6, 6], [4, 0, 8, 4], [5, 0, 8, 4]], np.float64)
    # +1 convention: each box is 5 x 5 = 25 pixels.
    # [2,2,6,6]: (4 - 2 + 1) x (4 - 2 + 1) = 9; union 25 + 25 - 9 = 41.
    # [4,0,8,4]: shares the column x = 4: (4 - 4 + 1) x 5 = 5; union 25 + 25 - 5 = 45.
    # [5,0,8,4]: (4 - 5 + 1) = 0 wide -> no intersection.
    np.testing.assert_allclose(box_iou(a, b, plus_one=True), [[9 / 41, 5 / 45, 0.0]], rtol=1e-12)
    assert box_iou(a, b, plus_one=True).dtype == np.float64


def test_iou_empty_and_degenerate():
    a = np.zeros((3, 4), np.float32)
    assert box_iou(a, np.zeros((0, 4), np.float32)).shape == (3, 0)
    assert box_iou(np.zeros((0, 4)), a).shape == (0, 3)
    # Zero-area boxes have an empty union: IoU 0, not NaN.
    assert np.array_equal(box_iou(a[:1], a[:1]), [[0.0]])


def test_diou_hand_computed():
    a = np.array([[0, 0, 4, 4]], np.float64)
    b = np.array([[2, 0, 6, 4]], np.float64)
    # IoU: intersection 2 x 4 = 8, union 16 + 16 - 8 = 24 -> 1/3.
    # Centres (2, 2) and (4, 2): d^2 = 4. Enclosing box [0,0,6,4]: c^2 = 36 + 16 = 52.
    # DIoU = 1/3 - (4 / (52 + 1e-7)) ** 0.7.
    expected = 1 / 3 - (4 / (52 + 1e-7)) ** 0.7
    np.testing.assert_allclose(box_diou(a, b, exponent=0.7), [[expected]], rtol=1e-12)
    # Identical boxes: IoU 1, d = 0 -> 1.
    np.testing.assert_allclose(box_diou(a, a, exponent=0.7), [[1.0]])
    # Disjoint boxes go negative: IoU 0, centres (2,2) and (12,2): d^2 = 100; enclosing [0,0,14,4]: 196 + 16.
    far = np.array([[10, 0, 14, 4]], np.float64)
    np.testing.assert_allclose(box_diou(a, far, exponent=0.7), [[-((100 / (212 + 1e-7)) ** 0.7)]], rtol=1e-12)


def _slow_diou(a, b, exponent):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            iou = inter / union if union > 0 else 0.0
            d2 = ((p[0] + p[2]) / 2 - (q[0] + q[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (q[1] + q[3]) / 2) ** 2
            c2 = (max(p[2], q[2]) - min(p[0], q[0])) ** 2 + (max(p[3], q[3]) - min(p[1], q[1])) ** 2
            out[i, j] = iou - (d2 / (c2 + 1e-7)) ** exponent
    return out


def _slow_iou_plus_one(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = min(p[2], q[2]) - max(p[0], q[0]) + 1
            ih = min(p[3], q[3]) - max(p[1], q[1]) + 1
            if iw > 0 and ih > 0:
                union = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (q[2] - q[0] + 1) * (q[3] - q[1] + 1) - iw * ih
                out[i, j] = iw * ih / union
    return out


def _random_boxes(rng, n):
    centre = rng.uniform(0, 200, (n, 2))
    size = rng.uniform(1, 60, (n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    a, b = _random_boxes(rng, 23), _random_boxes(rng, 17)
    np.testing.assert_allclose(box_diou(a, b, exponent=0.7), _slow_diou(a, b, 0.7), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(box_iou(a, b, plus_one=True), _slow_iou_plus_one(a, b), rtol=1e-10, atol=1e-12)


def test_layout_round_trips_and_inputs_untouched():
    xyxy = np.array([[10.0, 20.0, 40.0, 80.0]])
    keep = xyxy.copy()
    tlwh = xyxy_to_tlwh(xyxy)
    np.testing.assert_array_equal(tlwh, [[10, 20, 30, 60]])
    # xyah: centre (25, 50), aspect 30 / 60 = 0.5, height 60.
    np.testing.assert_array_equal(tlwh_to_xyah(tlwh), [[25, 50, 0.5, 60]])
    np.testing.assert_array_equal(xyah_to_tlwh(tlwh_to_xyah(tlwh)), tlwh)
    np.testing.assert_array_equal(xyah_to_xyxy(np.array([[25.0, 50.0, 0.5, 60.0]])), xyxy)
    np.testing.assert_array_equal(tlwh_to_xyxy(tlwh), xyxy)
    np.testing.assert_array_equal(xyxy, keep)


def test_centre_cells_clip_both_ends():
    boxes = np.array(
        [
            [0, 0, 16, 16],  # centre (8, 8): (16 / 16, 16 / 16) -> row 1, col 1
            [-40, -40, -8, -8],  # centre left of / above the image -> clipped to 0
            [1000, 500, 1100, 700],  # (2100 / 16 = 131.25, 1200 / 16 = 75) -> col 131, row 75
            [1080, 600, 1200, 700],  # past the right / bottom edge -> col 135, row 75
        ],
        np.float32,
    )
    cells = centre_cells(boxes, (76, 136))  # flat: row * 136 + col
    np.testing.assert_array_equal(np.divmod(cells, 136), [[1, 0, 75, 75], [1, 0, 131, 135]])
    assert centre_cells(boxes[:0], (76, 136)).shape == (0,)
