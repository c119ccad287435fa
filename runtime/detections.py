"""From engine outputs to the frame's detections (omc-reference.md 4.2-4.4).

Basic detections: candidates with score > conf_thres (rows with score 0 are padding), then
cluster-DIoU NMS with density-aware thresholds, at most `max_detections`, by score.
Transductive detections: re-check peaks with heat > recheck_score_thres, by heat, fused against
the basic boxes. Together, in that order (new track ids are handed out in it), they form a
`FrameDetections`, with boxes mapped back to frame pixels and embeddings L2-normalised.

Rows with a non-finite box, score, density or embedding are dropped with a logged warning: a
broken engine output must not crash a long-running stream. So are boxes of zero height in frame
pixels (a float16 engine's sigmoid can underflow to 0 in the size decode): their Kalman
measurement w / h is not finite, and one such state would poison its track for good (the
reference divides by zero there too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.config import TrackerConfig
from omc.runtime.boxes import tlwh_to_xyah, tlwh_to_xyxy, xyxy_to_tlwh
from omc.runtime.fusion import fuse_transductive
from omc.runtime.letterbox import LetterboxTransform
from omc.runtime.nms import cluster_diou_nms, nms_thresholds

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FrameDetections:
    """One frame's detections, basic ones by score, then fused re-check ones by heat.

    boxes_input: [D, 4] float32 corners, network pixels.  boxes: [D, 4] float32 corners, frame
    pixels.  scores: [D] float32 (obj * cls, or heat for re-check boxes).  embeddings: [D, E]
    float32, unit length.  restored: [D] bool, True for re-check boxes.  rows: [D] int64, the row
    in `det_*` (basic) or `trans_*` (restored) each came from.

    `boxes` is the one copy of the frame boxes; `tlwh`, `xyxy` and `xyah` are float64 views of
    it in the tracker's layouts, computed once on first use (the reference keeps (x1, y1, w, h)
    per track, so `xyxy` is x1 + w, not `boxes` widened: the two differ by float32 rounding).
    """

    boxes_input: F32
    boxes: F32
    scores: F32
    embeddings: F32
    restored: npt.NDArray[np.bool_]
    rows: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.scores)

    @cached_property
    def tlwh(self) -> F64:
        """[D, 4] float64 (x1, y1, w, h), frame pixels; w = x2 - x1 taken in float32 as the reference does."""
        return xyxy_to_tlwh(self.boxes).astype(np.float64)

    @cached_property
    def xyxy(self) -> F64:
        """[D, 4] float64 corners rebuilt from `tlwh` (x2 = x1 + w), the boxes the IoU rounds compare."""
        return tlwh_to_xyxy(self.tlwh)

    @cached_property
    def xyah(self) -> F64:
        """[D, 4] float64 Kalman measurements (cx, cy, w / h, h)."""
        return tlwh_to_xyah(self.tlwh)

    def take(self, index: npt.NDArray[np.int64]) -> "FrameDetections":
        """The detections at `index` (int [k]), in that order."""
        return FrameDetections(
            self.boxes_input[index], self.boxes[index], self.scores[index],
            self.embeddings[index], self.restored[index], self.rows[index],
        )  # fmt: skip


def drop_unmeasurable(detections: FrameDetections) -> FrameDetections:
    """`detections` without the boxes of zero height in frame pixels (no finite aspect w / h for
    the Kalman filter), order kept; the same object when there are none. Logs what it drops."""
    heights = detections.tlwh[:, 3]
    measurable = heights != 0
    if measurable.all():
        return detections
    logger.warning("dropped %d detection(s) with a zero-height box", int((~measurable).sum()))
    return detections.take(np.flatnonzero(measurable))


def _host(array: object) -> np.ndarray:
    """Batch item 0 of an engine output, on the host (copies a device handle)."""
    return np.asarray(array)[0]


def _finite_rows(*arrays: np.ndarray) -> npt.NDArray[np.bool_]:
    mask = np.ones(len(arrays[0]), bool)
    for array in arrays:
        mask &= np.isfinite(array).all(axis=tuple(range(1, array.ndim)))
    return mask


def _drop_non_finite(name: str, keep: npt.NDArray[np.bool_], *arrays: np.ndarray) -> npt.NDArray[np.bool_]:
    """`keep` narrowed to rows whose arrays are all finite; logs how many candidate rows were dropped."""
    candidates = np.flatnonzero(keep)
    finite = _finite_rows(*(array[candidates] for array in arrays))
    if not finite.all():
        logger.warning("dropped %d %s row(s) with NaN or inf values", int((~finite).sum()), name)
        keep = keep.copy()
        keep[candidates[~finite]] = False
    return keep


def unit_rows(vectors: npt.NDArray[np.floating]) -> F32:
    """[N, E] rows divided by their L2 norm, float32; zero rows stay zero. Returns a new array."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    positive = norms > 0
    if positive.all():  # the usual case; a masked divide costs 2-3 times a plain one
        return vectors / norms
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=positive)


def select_basic(
    boxes: F32, scores: F32, density: F32, config: TrackerConfig
) -> npt.NDArray[np.int64]:
    """Rows of the detector's candidates that become basic detections, by score.

    boxes [K, 4], scores [K], density [K] (one image). Keeps finite rows with score >
    conf_thres, then cluster-DIoU NMS. Returns int64 [N] rows into the candidates.
    """
    finite_score = np.isfinite(scores)
    if not finite_score.all():
        logger.warning("dropped %d detector candidate(s) with a NaN or inf score", int((~finite_score).sum()))
    keep = finite_score & (np.where(finite_score, scores, 0) > config.conf_thres)
    keep = _drop_non_finite("detector candidate", keep, boxes, density)
    rows = np.flatnonzero(keep)
    chosen = cluster_diou_nms(
        boxes[rows],
        scores[rows],
        nms_thresholds(density[rows], config.nms_thres),
        exponent=config.nms_diou_exponent,
        max_rounds=config.nms_max_rounds,
        max_keep=config.max_detections,
    )
    return rows[chosen]


def select_transductive(
    boxes: F32, scores: F32, basic_boxes: F32, config: TrackerConfig
) -> npt.NDArray[np.int64]:
    """Rows of the re-check peaks that join the detections, by heat (descending, stable).

    boxes [P, 4], scores [P] (one image); basic_boxes [N, 4] the basic detections, network
    pixels. Keeps finite peaks with heat > recheck_score_thres that fuse (fusion.py).
    """
    finite_score = np.isfinite(scores)
    if not finite_score.all():
        logger.warning("dropped %d re-check peak(s) with a NaN or inf score", int((~finite_score).sum()))
    keep = finite_score & (np.where(finite_score, scores, 0) > config.recheck_score_thres)
    keep = _drop_non_finite("re-check peak", keep, boxes)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    return rows[fuse_transductive(basic_boxes, boxes[rows], config.fusion_iou_thres)]


@dataclass(frozen=True)
class DetectionRows:
    """Rows one engine output set contributes to a frame's detections (network pixels).

    boxes [N, 4] float32 corners; scores [N] float32; embeddings [N, E] (any float dtype, not yet
    normalised); rows [N] int, the row of `det_*` (basic) or `trans_*` (re-check) each came from.
    """

    boxes: F32
    scores: F32
    embeddings: npt.NDArray[np.floating]
    rows: npt.NDArray[np.integer]


def assemble_detections(
    basic: DetectionRows, restored: DetectionRows | None, transform: LetterboxTransform
) -> FrameDetections:
    """The frame's detections: the basic rows, then the restored (fused re-check) rows; boxes
    mapped to frame pixels, embeddings L2-normalised, zero-height boxes dropped (drop_unmeasurable).

    The end of `frame_detections`, public for paths that choose rows their own way (the
    benchmark's PyTorch path) and must build detections exactly as the runtime does.
    """
    parts = [basic] if restored is None else [basic, restored]
    flags = [np.zeros(len(basic.scores), bool)] + ([] if restored is None else [np.ones(len(restored.scores), bool)])
    boxes_input = np.concatenate([p.boxes for p in parts]).astype(np.float32, copy=False).reshape(-1, 4)
    dim = basic.embeddings.shape[-1]
    return drop_unmeasurable(FrameDetections(
        boxes_input=boxes_input,
        boxes=transform.to_frame(boxes_input),
        scores=np.concatenate([p.scores for p in parts]).astype(np.float32, copy=False),
        embeddings=unit_rows(np.concatenate([p.embeddings for p in parts]).reshape(-1, dim)),
        restored=np.concatenate(flags),
        rows=np.concatenate([p.rows for p in parts]).astype(np.int64),
    ))


def frame_detections(
    detector_outputs: Mapping[str, object],
    recheck_outputs: Mapping[str, object] | None,
    transform: LetterboxTransform,
    config: TrackerConfig,
) -> FrameDetections:
    """The frame's detections from the engines' outputs (batch item 0).

    detector_outputs: `det_boxes` [B, K, 4], `det_scores` [B, K], `det_density` [B, K],
    `det_embeddings` [B, K, E]; recheck_outputs: `trans_boxes` [1, P, 4], `trans_scores` [1, P],
    `trans_embeddings` [1, P, E], or None when the re-check did not run. K and P are taken from
    the arrays. transform: maps network pixels to frame pixels.
    """
    boxes = _host(detector_outputs[contract.DET_BOXES]).astype(np.float32, copy=False)
    scores = _host(detector_outputs[contract.DET_SCORES]).astype(np.float32, copy=False)
    density = _host(detector_outputs[contract.DET_DENSITY]).astype(np.float32, copy=False)
    embeddings = _host(detector_outputs[contract.DET_EMBEDDINGS])
    basic = select_basic(boxes, scores, density, config)
    basic_embeddings = embeddings[basic]
    finite = _finite_rows(basic_embeddings)
    if not finite.all():
        logger.warning("dropped %d detection(s) with a NaN or inf embedding", int((~finite).sum()))
        basic, basic_embeddings = basic[finite], basic_embeddings[finite]
    restored = None
    if recheck_outputs is not None:
        t_boxes = _host(recheck_outputs[contract.TRANS_BOXES]).astype(np.float32, copy=False)
        t_scores = _host(recheck_outputs[contract.TRANS_SCORES]).astype(np.float32, copy=False)
        t_embeddings = _host(recheck_outputs[contract.TRANS_EMBEDDINGS])
        fused = select_transductive(t_boxes, t_scores, boxes[basic], config)
        fused_embeddings = t_embeddings[fused]
        finite = _finite_rows(fused_embeddings)
        if not finite.all():
            logger.warning("dropped %d re-check detection(s) with a NaN or inf embedding", int((~finite).sum()))
            fused, fused_embeddings = fused[finite], fused_embeddings[finite]
        restored = DetectionRows(t_boxes[fused], t_scores[fused], fused_embeddings, fused)
    return assemble_detections(DetectionRows(boxes[basic], scores[basic], basic_embeddings, basic), restored, transform)
