"""Drift figures on hand-made engine outputs (omc.calib.drift), no model needed."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from omc import contract
from omc.calib.drift import INT8_DRIFT, DriftReport, detector_drift, recheck_drift
from omc.runtime.boxes import centre_cells
from omc.export.judge import pair_by_iou

H, W = 4, 6  # map cells
E = 8


def _detector_outputs(boxes: np.ndarray, scores: np.ndarray, id_map: np.ndarray) -> dict[str, np.ndarray]:
    return {
        contract.DET_BOXES: boxes[None].astype(np.float32),
        contract.DET_SCORES: scores[None].astype(np.float32),
        contract.DET_DENSITY: np.zeros((1, len(scores)), np.float32),
        contract.DET_EMBEDDINGS: np.zeros((1, len(scores), E), np.float32),
        contract.ID_EMBEDDINGS: id_map[None].astype(np.float32),
    }


@pytest.fixture()
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Three well separated 10 x 20 px boxes: two confident (kept by NMS), one weak.
    boxes = np.array([[0, 0, 10, 20], [20, 0, 30, 20], [40, 10, 50, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.2], np.float32)
    id_map = np.random.default_rng(0).standard_normal((H, W, E)).astype(np.float32)
    return boxes, scores, id_map / np.linalg.norm(id_map, axis=-1, keepdims=True)


def test_pair_by_iou_pairs_each_box_with_its_own_shifted_copy() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 120, 140]], np.float32)
    b = a[::-1] + 1  # swapped rows, shifted 1 px
    assert sorted(pair_by_iou(a, b, 0.5).tolist()) == [[0, 1], [1, 0]]
    # IoU of [0, 10] with [6, 16] in both axes ("+1 pixel" widths): 5 * 5 / (2 * 121 - 25) = 0.115 < 0.5.
    assert pair_by_iou(a[:1], a[:1] + 6, 0.5).shape == (0, 2)
    assert pair_by_iou(a[:0], b, 0.5).shape == (0, 2)


def test_centre_cells_follow_the_contract() -> None:
    # Centre x of [14, 0, 18, 8] is 16 -> col floor(32 / 16) = 2; centre y 4 -> row floor(8 / 16) = 0.
    boxes = np.array([[14, 0, 18, 8], [-50, -50, -40, -40], [900, 900, 950, 950]], np.float32)
    assert centre_cells(boxes, (H, W)).tolist() == [2, 0, H * W - 1]  # clipped into the map


def test_identical_outputs_drift_nothing(scene: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    outputs = _detector_outputs(*scene)
    report = detector_drift([outputs], [outputs])
    assert report.candidates_compared == 3 and report.candidates_unpaired == 0
    assert report.score_error_max == 0 and report.box_error_px_median == 0
    assert report.embedding_cosine_min == pytest.approx(1.0) and report.id_map_cosine_p1 == pytest.approx(1.0)
    assert (report.detections_float, report.detections_int8, report.detections_changed) == (2, 2, 0)
    assert report.violations() == []


def test_shifted_boxes_and_reordered_rows_are_measured_by_pair(scene: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    boxes, scores, id_map = scene
    reference = _detector_outputs(boxes, scores, id_map)
    # INT8: rows reordered (top-K order changed), boxes 2 px right, scores 0.01 lower, the
    # first confident box falls under conf_thres 0.5, one cell's embedding flipped.
    order = np.array([1, 0, 2])
    moved = boxes[order] + np.array([2, 0, 2, 0], np.float32)
    lowered = scores[order] - 0.01
    lowered[1] = 0.45
    flipped = id_map.copy()
    flipped[1, 0] *= -1  # the first box's centre cell: centre (5, 10) -> col floor(10 / 16) = 0, row floor(20 / 16) = 1
    report = detector_drift([reference], [_detector_outputs(moved, lowered, flipped)])
    assert report.candidates_unpaired == 0
    assert report.box_error_px_median == pytest.approx(2.0)
    assert report.score_error_max == pytest.approx(0.45)
    assert report.score_error_mean == pytest.approx((0.45 + 0.01 + 0.01) / 3)
    assert report.embedding_cosine_min == pytest.approx(-1.0)
    assert report.id_map_cosine_mean == pytest.approx((H * W - 2) / (H * W))  # one of 24 cells at -1
    # Kept: float boxes 0 and 1, INT8 only box 1: one changed.
    assert (report.detections_float, report.detections_int8, report.detections_changed) == (2, 1, 1)
    problems = report.violations()
    assert any("largest score error 0.45" in p for p in problems)
    assert any("1 of 2 detections changed" in p for p in problems)


def test_recheck_drift_counts_changed_peaks() -> None:
    heat = np.zeros((1, 1, H, W), np.float32)
    boxes = np.array([[[0, 0, 10, 10], [30, 30, 40, 40], [60, 0, 70, 10]]], np.float32)
    reference = {contract.RECHECK_HEATMAP: heat, contract.TRANS_BOXES: boxes,
                 contract.TRANS_SCORES: np.array([[0.9, 0.6, 0.1]], np.float32),
                 contract.TRANS_EMBEDDINGS: np.ones((1, 3, E), np.float32)}
    quantized = dict(reference, **{contract.RECHECK_HEATMAP: heat + 0.02,
                                   contract.TRANS_SCORES: np.array([[0.9, 0.2, 0.1]], np.float32)})
    figures = recheck_drift([reference], [quantized])
    # Above 0.3: float peaks 0 and 1, INT8 peak 0 only -> one changed.
    assert (figures["peaks_float"], figures["peaks_int8"], figures["peaks_changed"]) == (2, 1, 1)
    assert figures["heatmap_error_max"] == pytest.approx(0.02)
    assert figures["peak_box_error_px_max"] == 0


def test_report_table_and_dict_name_every_figure(scene: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    outputs = _detector_outputs(*scene)
    report = replace(detector_drift([outputs], [outputs]), recheck_samples=2, heatmap_error_max=0.5)
    table = report.table()
    assert "box error px of pairs, median / 95th percentile" in table and "re-check samples" in table
    assert report.to_dict()["peak_box_error_px_max"] is None  # NaN -> null in JSON
    assert report.violations(replace(INT8_DRIFT, heat_abs=0.4)) == [
        "largest heat-map error 0.5 is above the bound 0.4"
    ]
    empty = detector_drift([], [])
    assert empty.frames == 0 and math.isnan(empty.candidates_unpaired)
    assert isinstance(empty, DriftReport)
