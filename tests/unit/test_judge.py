"""omc.export.judge, the one judge of engine outputs: its conventions on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from omc.errors import BadInput
from omc.export.judge import BOUNDS, Bounds, Limit, OutputStats, bounds_for, cosines, pair_by_iou, pair_rows


def test_cosine_of_zero_rows_is_one_for_two_zeros_and_zero_for_one() -> None:
    a = np.array([[1, 0], [3, 4], [0, 0], [0, 0], [1, 1]], np.float32)
    b = np.array([[0, 2], [6, 8], [0, 0], [1, 0], [0, 0]], np.float32)
    # Orthogonal 0; parallel 1 (dot 50 / (5 * 10)); both zero 1; one zero 0 (either side).
    np.testing.assert_allclose(cosines(a, b), [0.0, 1.0, 1.0, 0.0, 0.0])


def test_limits_include_their_value() -> None:
    assert Limit(0.5).holds(0.5) and not Limit(0.5).holds(0.51)
    assert Limit(0.9, at_least=True).holds(0.9) and not Limit(0.9, at_least=True).holds(0.89)
    assert str(Limit(0.9, at_least=True)) == ">=0.9" and str(Limit(6.0)) == "<=6"


def test_output_stats_keep_the_worst_value_and_the_absolute_tolerance_that_would_pass() -> None:
    stats = OutputStats("x", "abs", Limit(0.1))
    # |1.2 - 1.0| = 0.2 and |-0.5 - (-0.45)| = 0.05; with rel 0.1: 0.2 - 0.1 * 1.0 = 0.1 is needed.
    stats.add_errors(np.array([1.2, -0.5]), np.array([1.0, -0.45]), rel=0.1)
    assert stats.max_abs == pytest.approx(0.2) and stats.needed_abs == pytest.approx(0.1)
    assert stats.max_rel == pytest.approx(0.2)
    stats.judge(0.05)
    stats.judge(0.2)
    assert stats.worst == pytest.approx(0.2) and not stats.passed


def test_pair_rows_is_one_to_one_within_both_gates() -> None:
    gates = Bounds(match_box_px=1.0, match_score=0.1)
    reference = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    ref_scores = np.array([0.9, 0.8], np.float32)
    # Two candidates near reference row 0 (the closer one wins it), one beyond the box gate
    # (1.5 px), one near row 1 but beyond the score gate (0.2).
    candidates = np.array([[0.5, 0, 10, 10], [0.1, 0, 10, 10], [51.5, 50, 60, 60], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.9, 0.8, 0.6], np.float32)
    rows, ref_rows = pair_rows(candidates, scores, reference, ref_scores, gates)
    assert rows.tolist() == [1] and ref_rows.tolist() == [0]
    empty = pair_rows(candidates[:0], scores[:0], reference, ref_scores, gates)
    assert [len(side) for side in empty] == [0, 0]


def test_pair_by_iou_keeps_pairs_at_the_threshold() -> None:
    a = np.array([[0, 0, 9, 9]], np.float32)  # "+1 pixel" widths: a 10 x 10 box
    b = np.array([[5, 0, 14, 9]], np.float32)  # overlap 5 x 10 = 50, union 150: IoU 1/3
    assert pair_by_iou(a, b, 1 / 3).tolist() == [[0, 0]]
    assert pair_by_iou(a, b, 0.34).shape == (0, 2)


def test_every_comparison_has_its_rows_and_unknown_ones_are_refused() -> None:
    assert set(BOUNDS) == {"reference", "tensorrt", "int8-drift"}
    assert set(BOUNDS["reference"]) == set(BOUNDS["tensorrt"]) == {"fp32", "fp16", "int8"}
    assert bounds_for("int8-drift", "int8").box_px == 6.0
    with pytest.raises(BadInput, match="precision 'bf16' is not one of fp32, fp16, int8"):
        bounds_for("tensorrt", "bf16")
    with pytest.raises(BadInput, match="no bounds for comparison 'onnx'"):
        bounds_for("onnx", "fp32")
