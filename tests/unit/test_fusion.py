"""Fusion of transductive (re-check) boxes with the basic detections."""

from __future__ import annotations

import numpy as np

from omc.runtime.fusion import fuse_transductive


def test_fusion_by_plus_one_iou():
    basic = np.array([[0, 0, 9, 9]], np.float32)  # 10 x 10 = 100 pixels with the +1 convention
    trans = np.array(
        [
            [0, 0, 9, 9],  # the same box: IoU 1 -> dropped
            [5, 0, 14, 9],  # overlap (9 - 5 + 1) x 10 = 50; union 100 + 100 - 50 = 150 -> 1/3 -> kept
            [3, 0, 12, 9],  # overlap 7 x 10 = 70; union 130 -> 0.538 -> dropped
            [100, 100, 120, 150],  # no overlap -> kept
        ],
        np.float32,
    )
    np.testing.assert_array_equal(fuse_transductive(basic, trans, 0.5), [False, True, False, True])


def test_iou_equal_to_the_threshold_is_kept():
    basic = np.array([[0, 0, 9, 9]], np.float64)
    # Overlap 5 x 10 = 50 pixels is IoU 50 / 150 = 1/3; a threshold of exactly 1/3 keeps it (IoU <= thres).
    trans = np.array([[5, 0, 14, 9]], np.float64)
    assert fuse_transductive(basic, trans, 1 / 3).tolist() == [True]
    assert fuse_transductive(basic, trans, np.nextafter(1 / 3, 0)).tolist() == [False]


def test_the_best_overlap_over_all_basic_boxes_decides():
    basic = np.array([[100, 100, 109, 109], [0, 0, 9, 9]], np.float32)
    trans = np.array([[1, 0, 10, 9]], np.float32)  # 9 x 10 = 90 overlap with the second: IoU 90 / 110 = 0.82
    assert fuse_transductive(basic, trans, 0.5).tolist() == [False]


def test_without_basic_detections_every_transductive_box_is_kept():
    # The reference skipped fusion when the detector found nothing (and so dropped every restored box).
    trans = np.array([[0, 0, 9, 9], [50, 50, 60, 60]], np.float32)
    assert fuse_transductive(np.zeros((0, 4), np.float32), trans, 0.5).tolist() == [True, True]


def test_no_transductive_boxes():
    out = fuse_transductive(np.array([[0, 0, 9, 9]], np.float32), np.zeros((0, 4), np.float32), 0.5)
    assert out.shape == (0,) and out.dtype == bool
