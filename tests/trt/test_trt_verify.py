"""compare_trt_with_onnxruntime: the set-level match of ranked outputs, the verdict, and a clean
failure without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omc import contract
from omc.errors import BadInput, OmcError
from omc.export.judge import BOUNDS
from omc.export.trt.verify import OutputComparison, TrtComparison, _compare_outputs, _Errors, _match_rows, verdict
from omc.runtime.backends.cuda_memory import cuda_unavailable_reason

FP32 = BOUNDS["tensorrt"]["fp32"]
FP16 = BOUNDS["tensorrt"]["fp16"]


def test_rows_match_across_a_swapped_tie_and_padding_is_ignored() -> None:
    ort_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    ort_scores = np.array([0.9, 0.9, 0.0], np.float32)  # a tie, then padding
    trt_boxes = ort_boxes[[1, 0, 2]]  # TensorRT ordered the tie the other way
    trt_scores = ort_scores[[1, 0, 2]]
    ort_rows, trt_rows = _match_rows(ort_boxes, ort_scores, trt_boxes, trt_scores, FP32)
    assert ort_rows.tolist() == [0, 1] and trt_rows.tolist() == [1, 0]


def test_rows_beyond_the_box_or_score_tolerance_do_not_match() -> None:
    ort_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    ort_scores = np.array([0.9, 0.8], np.float32)
    # Row 0 moved 0.1 px (fp32 allows 0.05, fp16 0.5); row 1's score is off by 0.05 (abs 0.02 + rel 0.02 * 0.8 = 0.036 in fp16).
    trt_boxes = ort_boxes + np.array([[0.1, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    trt_scores = ort_scores - np.array([0.0, 0.05], np.float32)
    assert _match_rows(ort_boxes, ort_scores, trt_boxes, trt_scores, FP32)[0].tolist() == []
    assert _match_rows(ort_boxes, ort_scores, trt_boxes, trt_scores, FP16)[0].tolist() == [0]


def fake_outputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    scores = np.sort(rng.uniform(0.1, 1.0, (1, 8)).astype(np.float32))[:, ::-1].copy()
    return {
        contract.DET_BOXES: rng.uniform(0, 300, (1, 8, 4)).astype(np.float32),
        contract.DET_SCORES: scores,
        contract.DET_DENSITY: rng.uniform(0, 1, (1, 8)).astype(np.float32),
        contract.DET_EMBEDDINGS: rng.standard_normal((1, 8, 16)).astype(np.float32),
        contract.ID_EMBEDDINGS: rng.standard_normal((1, 3, 5, 16)).astype(np.float32),
    }


def compare(trt: dict[str, np.ndarray], ort: dict[str, np.ndarray]) -> dict[str, OutputComparison]:
    errors: dict[str, _Errors] = {}
    _compare_outputs(trt, ort, FP32, errors)
    return {row.name: row for row in verdict(errors, FP32)}


def test_identical_outputs_pass_and_a_perturbed_map_fails_by_its_amount() -> None:
    ort = fake_outputs(np.random.default_rng(1))
    same = compare({k: v.copy() for k, v in ort.items()}, ort)
    assert all(row.passed and row.max_abs == 0 for row in same.values())
    assert same[contract.DET_SCORES].matched == 1.0
    trt = {k: v.copy() for k, v in ort.items()}
    trt[contract.ID_EMBEDDINGS][0, 1, 2, 3] += 0.01
    rows = compare(trt, ort)
    bad = rows[contract.ID_EMBEDDINGS]
    assert not bad.passed
    assert bad.max_abs == pytest.approx(0.01, abs=1e-6)
    # needs abs: 0.01 - rel 1e-3 * |reference value| at that element
    assert bad.needed_abs == pytest.approx(0.01 - 1e-3 * abs(float(ort[contract.ID_EMBEDDINGS][0, 1, 2, 3])), abs=1e-6)
    report = TrtComparison("fp32", FP32, 1, tuple(rows.values()))
    assert not report.passed
    assert report.summary().splitlines()[-1] == "FAILED"


def test_a_lost_candidate_lowers_the_matched_fraction() -> None:
    ort = fake_outputs(np.random.default_rng(2))
    trt = {k: v.copy() for k, v in ort.items()}
    trt[contract.DET_BOXES][0, 3] += 50.0  # one of 8 candidates moved away
    rows = compare(trt, ort)
    assert rows[contract.DET_BOXES].matched == pytest.approx(7 / 8)
    assert not rows[contract.DET_SCORES].passed  # 0.875 < 0.999


@pytest.mark.trt
def test_compare_fails_cleanly_without_a_gpu(rtx_engines: Path) -> None:
    if cuda_unavailable_reason(0) is None:
        pytest.skip("checks the no-GPU path; this machine has a GPU")
    from omc.export.trt.verify import compare_trt_with_onnxruntime

    feeds = [{contract.IMAGES: np.zeros((1, 192, 320, 3), np.uint8)}]
    with pytest.raises(OmcError, match="could not load detector.plan: no usable CUDA GPU or driver"):
        compare_trt_with_onnxruntime(rtx_engines, feeds, "fp32")
    with pytest.raises(BadInput, match="precision 'bf16' is not one of fp32, fp16, int8"):
        compare_trt_with_onnxruntime(rtx_engines, feeds, "bf16")
