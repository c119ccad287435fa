"""Association costs and the linear assignment."""

from __future__ import annotations

import numpy as np
import pytest

from omc.runtime.assign import cosine_distance, gate_and_fuse_motion, iou_distance, linear_assignment


def test_cosine_distance_by_hand():
    track = np.array([[1.0, 0.0]], np.float32)
    dets = np.array([[1, 0], [0, 1], [-1, 0], [0.6, 0.8], [0, 0]], np.float32)
    # 1 - cos: same 0, orthogonal 1, opposite 2, cos 0.6 -> 0.4; a zero vector has cosine 0 -> 1.
    got = cosine_distance(track, dets)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [[0, 1, 2, 0.4, 1]], atol=1e-7)


def test_cosine_distance_never_negative_and_scale_free():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((20, 512)).astype(np.float32)
    d = cosine_distance(f, f * 3)
    assert (d >= 0).all()
    np.testing.assert_allclose(np.diag(d), 0, atol=1e-6)
    # Against the textbook formula, in float64.
    a, b = f.astype(np.float64), rng.standard_normal((7, 512))
    want = 1 - (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None]
    np.testing.assert_allclose(cosine_distance(a, b), np.maximum(want, 0), rtol=1e-12, atol=1e-12)
    assert cosine_distance(f[:0], f).shape == (0, 20)


def test_gate_and_fuse_motion_by_hand():
    appearance = np.array([[0.2, 0.2, 0.1]])
    maha = np.array([[5.0, 9.4877, 9.5]])
    # 0.98 * 0.2 + 0.02 * 5 = 0.296; at the gate exactly: kept, 0.196 + 0.189754 = 0.385754; above: inf.
    got = gate_and_fuse_motion(appearance, maha, gate=9.4877, appearance_weight=0.98)
    np.testing.assert_allclose(got[0, :2], [0.296, 0.385754])
    assert got[0, 2] == np.inf
    assert appearance[0, 2] == 0.1  # inputs untouched


def test_iou_distance_uses_plus_one():
    # 10 x 10 pixel boxes (+1) overlapping 5 columns: IoU 50 / 150 -> distance 2/3.
    np.testing.assert_allclose(iou_distance(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]])), [[2 / 3]])
    assert iou_distance(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_linear_assignment_respects_the_cost_limit():
    cost = np.array(
        [
            [0.1, 0.9, 0.3],
            [0.2, 0.05, 0.8],
        ]
    )
    # Optimum: row 0 -> col 0 (0.1), row 1 -> col 1 (0.05); column 2 left over.
    result = linear_assignment(cost, 0.4)
    assert result.matches.tolist() == [[0, 0], [1, 1]]
    assert result.unmatched_rows.tolist() == [] and result.unmatched_cols.tolist() == [2]
    # With a limit of 0.08 only the 0.05 pair survives.
    result = linear_assignment(cost, 0.08)
    assert result.matches.tolist() == [[1, 1]]
    assert result.unmatched_rows.tolist() == [0] and result.unmatched_cols.tolist() == [0, 2]


def test_linear_assignment_with_gated_pairs():
    cost = np.array([[np.inf, 0.1], [0.2, np.inf], [np.inf, np.inf]])
    result = linear_assignment(cost, 0.4)
    assert result.matches.tolist() == [[0, 1], [1, 0]]
    assert result.unmatched_rows.tolist() == [2] and result.unmatched_cols.tolist() == []


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0, 0)])
def test_linear_assignment_empties(shape):
    result = linear_assignment(np.zeros(shape), 0.4)
    assert result.matches.shape == (0, 2) and result.matches.dtype == np.int64
    assert result.unmatched_rows.tolist() == list(range(shape[0]))
    assert result.unmatched_cols.tolist() == list(range(shape[1]))
    assert result.unmatched_rows.dtype == np.int64 and result.unmatched_cols.dtype == np.int64


def test_linear_assignment_all_above_limit():
    result = linear_assignment(np.full((2, 2), 0.9), 0.4)
    assert result.matches.shape == (0, 2)
    assert result.unmatched_rows.tolist() == [0, 1] and result.unmatched_cols.tolist() == [0, 1]
