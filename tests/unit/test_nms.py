"""Cluster-DIoU NMS with density-aware thresholds: hand cases and a slow greedy reference."""

from __future__ import annotations

import numpy as np
import pytest

from omc.runtime.boxes import box_diou
from omc.runtime.nms import cluster_diou_nms, nms_thresholds

A = [0, 0, 10, 10]
B = [1, 0, 11, 10]  # shifted 1 px right of A
C = [2.5, 0, 12.5, 10]  # 2.5 px right of A, 1.5 px right of B


def nms(boxes, scores, thresholds, max_keep=300):
    return cluster_diou_nms(
        np.asarray(boxes, np.float32),
        np.asarray(scores, np.float32),
        np.asarray(thresholds, np.float32),
        exponent=0.7,
        max_rounds=200,
        max_keep=max_keep,
    )


def test_diou_of_the_hand_boxes():
    # A vs B: IoU 90 / 110 = 0.8182; d^2 = 1, c^2 = 11^2 + 10^2 = 221; (1 / 221)^0.7 = 0.02285 -> 0.7953.
    # A vs C: IoU 75 / 125 = 0.6; d^2 = 6.25, c^2 = 12.5^2 + 100 = 256.25; (0.02439)^0.7 = 0.0743 -> 0.5257.
    # B vs C: IoU 85 / 115 = 0.7391; d^2 = 2.25, c^2 = 11.5^2 + 100 = 232.25; (0.009688)^0.7 = 0.0389 -> 0.7002.
    d = box_diou(np.array([A, B, C], np.float64), np.array([A, B, C], np.float64), exponent=0.7)
    np.testing.assert_allclose([d[0, 1], d[0, 2], d[1, 2]], [0.7953, 0.5257, 0.7002], atol=1e-4)


def test_density_raises_the_threshold():
    # B's DIoU with A is 0.7953: suppressed at max(0, 0.6) = 0.6 and at density 0.79,
    # kept once its density lifts the threshold to 0.80.
    assert nms([A, B], [0.9, 0.8], nms_thresholds(np.array([0.0, 0.0]), 0.6)).tolist() == [0]
    assert nms([A, B], [0.9, 0.8], nms_thresholds(np.array([0.0, 0.79]), 0.6)).tolist() == [0]
    assert nms([A, B], [0.9, 0.8], nms_thresholds(np.array([0.0, 0.80]), 0.6)).tolist() == [0, 1]
    # The threshold is the suppressed box's own: A's density does not protect B.
    assert nms([A, B], [0.9, 0.8], nms_thresholds(np.array([0.95, 0.0]), 0.6)).tolist() == [0]


def test_equal_means_suppressed_and_just_below_means_kept():
    boxes = np.array([A, B], np.float32)
    overlap = box_diou(boxes, boxes, exponent=0.7)[0, 1]  # float32, as inside the NMS
    assert nms(boxes, [0.9, 0.8], [0.6, overlap]).tolist() == [0]
    assert nms(boxes, [0.9, 0.8], [0.6, np.nextafter(overlap, np.float32(1))]).tolist() == [0, 1]


def test_fixed_point_lets_a_box_suppressed_only_by_a_suppressed_box_live():
    # C overlaps B by 0.70 (> 0.6) and A by 0.53 (< 0.6). B is suppressed by A (0.80), so it
    # suppresses nothing: C stays. A single pass of "max over all higher boxes" would drop C.
    assert nms([A, B, C], [0.9, 0.8, 0.7], [0.6, 0.6, 0.6]).tolist() == [0, 2]


def test_order_is_by_score_and_ties_keep_input_order():
    far = [[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10], [300, 0, 310, 10]]
    assert nms(far, [0.5, 0.9, 0.7, 0.9], [0.6] * 4).tolist() == [1, 3, 2, 0]
    assert nms(far, [0.5, 0.9, 0.7, 0.9], [0.6] * 4, max_keep=2).tolist() == [1, 3]


def test_empty_input():
    out = nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    assert out.shape == (0,) and out.dtype == np.int64


def _slow_greedy(boxes, scores, thresholds, exponent):
    """Greedy NMS in score order with the suppressed box's own threshold (the fixed point's definition)."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    overlap = box_diou(boxes, boxes, exponent=exponent)
    kept = []
    for j in order:
        if all(overlap[i, j] < thresholds[j] for i in kept):
            kept.append(j)
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_matches_slow_greedy_reference(seed):
    rng = np.random.default_rng(seed)
    n = 60
    centre = rng.uniform(0, 120, (n, 2))
    size = rng.uniform(10, 40, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct
    thresholds = nms_thresholds(rng.uniform(0, 0.9, n).astype(np.float32), 0.6)
    got = cluster_diou_nms(boxes, scores, thresholds, exponent=0.7, max_rounds=200, max_keep=300)
    assert got.tolist() == _slow_greedy(boxes, scores, thresholds, 0.7)
