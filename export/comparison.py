"""How `omc verify` judges engine outputs against the PyTorch reference path.

What is compared, per output (the report gives max abs / max rel error and the judged metric):
- maps element-wise: id_embeddings (cosine per cell), recheck_features (error relative to the
  map's largest value), recheck_boxes (pixels), recheck_heatmap (abs);
- ranked outputs as sets (reference_tiny.md, "Comparing candidates"): the engine's top-K rows
  are paired with the reference's candidates (linear assignment on box and score gaps); every
  reference row scoring more than the K-th + tie_band must be among them, every engine row must
  pair with a reference row, the list must be sorted. Peaks: each engine peak's cell is
  recovered exactly (its embedding and box are copies of the engine's maps at that cell); it
  must be a reference peak within tie_band, and every clear reference peak above the P-th +
  tie_band must be present. Paired rows give the box and score errors; densities and
  embeddings are judged at each engine row's own cell.

The rule depends on the export's precision through COMPARISON_MODES: fp32 exports must match
the reference within float32 rounding ("parity"); fp16 (and INT8) exports are judged on their
drift from the float32 reference ("drift": the share of candidates and peaks kept, box and
score errors) against looser, stated limits. The limits are the "reference" rows of
omc.export.judge.BOUNDS, which also pairs the rows and measures the errors (one convention for
every comparison); a new precision is one row there and one here.

Noise floor: float32 results depend on the order of every sum, and a deep network with random
weights amplifies that rounding layer by layer. The verify run therefore also runs the reference
in float64 (`NoiseFloor`: float32 minus float64 reference, i.e. the float32 reference's own
rounding error) and widens each stated limit to NOISE_FACTOR times that noise where the noise is
larger. Measured, ONNX Runtime's error over that noise: 1.1x for boxes on the fixture network at
320 x 192 (0.39 px against 0.35 px, a 1300 px box), 1.2x for boxes and 2.4x for density on the
random s network at 576 x 320. Errors of a wrong formula are orders of magnitude larger
(reference_tiny.md, "What it tells apart"); for a network whose float32 noise is small (the
fixture at 576 x 320), the stated limits stand.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.export.judge import (
    BOUNDS,
    Bounds,
    Limit,
    OutputStats,
    cosines,
    error_relative_to_max,
    max_abs_error,
    pair_rows,
    share_of_boxes_within,
)
from omc.export.verify_reference import ReferenceFrame, ReferenceHeatmap
from omc.runtime.boxes import centre_cells

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
# Stated limits widen to this many times the reference's own float32 noise where that is larger.
NOISE_FACTOR = 4.0
# |dot - 1| below which an engine row counts as a copy of a unit map row (float32 rounding of 512 terms).
COPY_DOT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ComparisonMode:
    """How an export of one precision is judged: `name` ("parity" or "drift"), a one-line
    description for the report, and its stated limits (a "reference" row of BOUNDS)."""

    name: str
    description: str
    tolerance: Bounds


COMPARISON_MODES: dict[str, ComparisonMode] = {
    "fp32": ComparisonMode(
        "parity", "ONNX Runtime vs the PyTorch reference, float32 rounding only", BOUNDS["reference"]["fp32"]
    ),
    "fp16": ComparisonMode(
        "drift", "fp16 graphs in ONNX Runtime vs the float32 PyTorch reference", BOUNDS["reference"]["fp16"]
    ),
    "int8": ComparisonMode(
        "drift",
        "INT8 graphs in ONNX Runtime vs the float32 PyTorch reference, on held-out calibration frames",
        BOUNDS["reference"]["int8"],
    ),
}


@dataclass(frozen=True)
class NoiseFloor:
    """Largest differences between the float32 and the float64 reference runs.

    box_px: candidate / re-check box corners, pixels. score_abs: scores, density, heat map.
    cosine_gap: 1 - smallest cosine of ID-map cells. feature_rel: recheck_features error / max.
    """

    box_px: float = 0.0
    score_abs: float = 0.0
    cosine_gap: float = 0.0
    feature_rel: float = 0.0

    def worst(self, other: "NoiseFloor") -> "NoiseFloor":
        return NoiseFloor(
            max(self.box_px, other.box_px),
            max(self.score_abs, other.score_abs),
            max(self.cosine_gap, other.cosine_gap),
            max(self.feature_rel, other.feature_rel),
        )

    def widen(self, tol: Bounds, factor: float = NOISE_FACTOR) -> Bounds:
        """`tol` with each limit widened to `factor` times this noise where that is larger."""
        return replace(
            tol,
            score_abs=max(tol.score_abs, factor * self.score_abs),
            heat_abs=max(tol.heat_abs, factor * self.score_abs),
            box_px=max(tol.box_px, factor * self.box_px),
            cosine_min=min(tol.cosine_min, 1.0 - factor * self.cosine_gap),
            feature_rel=max(tol.feature_rel, factor * self.feature_rel),
            tie_band=max(tol.tie_band, factor * self.score_abs),
            match_box_px=max(tol.match_box_px, 2 * factor * self.box_px),
            match_score=max(tol.match_score, 2 * factor * self.score_abs),
        )


def detector_noise(first: ReferenceFrame, second: ReferenceFrame) -> NoiseFloor:
    """Noise between two reference runs of the detector on one image (same candidate rows; the
    first run's embedding map is the cosine reference)."""
    id_first = first.id_unit.reshape(-1, first.id_unit.shape[-1])
    id_second = second.id_unit.reshape(-1, second.id_unit.shape[-1])
    box = max_abs_error(first.corners, second.corners)
    feature = 0.0
    if first.recheck_boxes is not None and second.recheck_boxes is not None:
        box = max(box, max_abs_error(first.recheck_boxes, second.recheck_boxes))
    if first.recheck_features is not None and second.recheck_features is not None:
        feature = error_relative_to_max(second.recheck_features, first.recheck_features)
    return NoiseFloor(
        box_px=box,
        score_abs=max(max_abs_error(first.scores, second.scores), max_abs_error(first.density, second.density)),
        cosine_gap=float(1.0 - cosines(id_first, id_second).min()),
        feature_rel=feature,
    )


def heatmap_noise(first: ReferenceHeatmap, second: ReferenceHeatmap) -> NoiseFloor:
    """Noise between two reference runs of the re-check heat map."""
    return NoiseFloor(score_abs=max_abs_error(first.heat, second.heat))


# --- statistics -----------------------------------------------------------------------------------

# Judged metrics: the label the report prints, the Bounds field that limits it, and whether
# higher is better.
METRICS: dict[str, tuple[str, str, bool]] = {
    "abs": ("abs", "score_abs", False),
    "heat": ("abs", "heat_abs", False),
    "boxes within": ("boxes within", "box_share", True),
    "cosine": ("cosine", "cosine_min", True),
    "rel to max": ("rel to max", "feature_rel", False),
    "kept": ("kept", "kept_min", True),
    "extra": ("extra", "extra_max", False),
}


class ComparisonStats:
    """All OutputStats of one verification under one set of limits, in the order first met."""

    def __init__(self, tol: Bounds) -> None:
        self.tol = tol
        self.stats: dict[str, OutputStats] = {}

    def get(self, name: str, metric: str) -> OutputStats:
        """The stats of output `name`, judged on `metric` (a key of METRICS)."""
        if name not in self.stats:
            label, bound, higher = METRICS[metric]
            self.stats[name] = OutputStats(name, label, Limit(getattr(self.tol, bound), at_least=higher))
        return self.stats[name]


# --- the detector -----------------------------------------------------------------------------------


def _judge_kept(entry: OutputStats, required: I64, found: I64, what: str) -> None:
    """Fold the share of the `required` reference rows (cells) that are among `found` into
    `entry` (1 when none is required), noting how many are missing."""
    kept = float(np.isin(required, found).mean()) if required.size else 1.0
    entry.judge(kept)
    if kept < 1.0:
        entry.note(f"{int(round((1 - kept) * required.size))} of {required.size} clear {what} missing")


def judge_boxes(entry: OutputStats, engine: F32, reference: F32, tol: Bounds) -> None:
    """Fold [..., 4] engine corners vs reference corners into `entry` (share within the limits)."""
    entry.add_errors(engine, reference)
    if engine.size:
        entry.judge(share_of_boxes_within(engine, reference, tol))


def compare_detector(engine: Mapping[str, np.ndarray], item: int, ref: ReferenceFrame, stats: ComparisonStats) -> None:
    """Judge the detector outputs of batch item `item` against the reference frame.

    Boxes and scores are judged on paired rows; densities and embeddings at each engine row's
    own centre cell (a box drifting across a cell border is a box error, judged once).
    """
    tol = stats.tol
    boxes = engine[contract.DET_BOXES][item]
    scores = engine[contract.DET_SCORES][item]
    topk = len(scores)
    ranked = ref.ranked_rows()
    kth = float(ref.scores[ranked[topk - 1]])
    pool = ranked[ref.scores[ranked] >= kth - tol.match_score]
    engine_rows, pool_rows = pair_rows(boxes, scores, ref.corners[pool], ref.scores[pool], tol)
    ref_rows = pool[pool_rows]
    required = ranked[ref.scores[ranked] > kth + tol.tie_band]
    _judge_kept(stats.get("det top-K (kept)", "kept"), required, ref_rows, "rows")
    entry = stats.get("det top-K (unpaired)", "extra")
    entry.judge(1.0 - len(engine_rows) / topk)
    if np.any(np.diff(scores) > 0):
        entry.note("engine scores not sorted")
        entry.judge(1.0)
    judge_boxes(stats.get(contract.DET_BOXES, "boxes within"), boxes[engine_rows], ref.corners[ref_rows], tol)
    entry = stats.get(contract.DET_SCORES, "abs")
    entry.add_errors(scores[engine_rows], ref.scores[ref_rows])
    entry.judge(entry.max_abs)
    h, w = ref.map_hw
    cells = centre_cells(boxes, (h, w), ref.stride)
    entry = stats.get(contract.DET_DENSITY, "abs")
    entry.add_errors(engine[contract.DET_DENSITY][item], ref.density[cells])
    entry.judge(entry.max_abs)
    id_flat = ref.id_unit.reshape(-1, ref.id_unit.shape[-1])
    embeddings = engine[contract.DET_EMBEDDINGS][item]
    entry = stats.get(contract.DET_EMBEDDINGS, "cosine")
    entry.add_errors(embeddings, id_flat[cells])
    entry.judge(float(cosines(embeddings, id_flat[cells]).min()))
    id_map = engine[contract.ID_EMBEDDINGS][item]
    entry = stats.get(contract.ID_EMBEDDINGS, "cosine")
    entry.add_errors(id_map, ref.id_unit)
    entry.judge(float(cosines(id_map.reshape(-1, id_map.shape[-1]), id_flat).min()))
    if ref.recheck_features is not None and ref.recheck_boxes is not None:
        features = engine[contract.RECHECK_FEATURES][item]
        entry = stats.get(contract.RECHECK_FEATURES, "rel to max")
        entry.add_errors(features, ref.recheck_features)
        entry.judge(error_relative_to_max(features, ref.recheck_features))
        judge_boxes(
            stats.get(contract.RECHECK_BOXES, "boxes within"), engine[contract.RECHECK_BOXES][item], ref.recheck_boxes, tol
        )


# --- the re-check -------------------------------------------------------------------------------------


def peak_cells(
    trans_embeddings: F32, trans_boxes: F32, id_embeddings: F32, recheck_boxes: F32
) -> I64:
    """Flat cell of each peak row, recovered from the engine's own maps (-1 where none fits).

    trans_embeddings [p, E], trans_boxes [p, 4]: rows the engine gathered; id_embeddings
    [h, w, E], recheck_boxes [h, w, 4]: the maps it gathered them from (exact copies).
    """
    id_flat = id_embeddings.reshape(-1, id_embeddings.shape[-1])
    box_flat = recheck_boxes.reshape(-1, 4)
    # Unit rows: a copied row has dot product ||e||^2, equal to 1 within float32 rounding.
    closeness = np.abs(trans_embeddings.astype(np.float64) @ id_flat.T.astype(np.float64) - 1.0)
    cells = np.full(len(trans_embeddings), -1, np.int64)
    for row in range(len(trans_embeddings)):  # at most P rows, each a vector op over the map
        candidates = np.flatnonzero(closeness[row] <= COPY_DOT_TOLERANCE)
        exact = candidates[
            np.all(id_flat[candidates] == trans_embeddings[row], axis=1)
            & np.all(box_flat[candidates] == trans_boxes[row], axis=1)
        ]
        if exact.size:
            cells[row] = exact[0]
    return cells


def _neighbour_max(heat: F32) -> F32:
    """[h, w] -> the largest of each cell's 8 neighbours (-inf outside the map)."""
    padded = np.pad(heat.astype(np.float64), 1, constant_values=-np.inf)
    h, w = heat.shape
    shifts = [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    return np.max(shifts, axis=0).astype(np.float32)


def compare_recheck(
    engine: Mapping[str, np.ndarray],
    engine_maps: Mapping[str, np.ndarray],
    ref: ReferenceFrame,
    ref_heat: ReferenceHeatmap,
    stats: ComparisonStats,
) -> None:
    """Judge one re-check run (batch 1) against the reference heat map.

    engine_maps: the engine detector's id_embeddings [h, w, E] and recheck_boxes [h, w, 4] the
    re-check ran on (to recover each peak's cell).
    """
    if ref.recheck_boxes is None:
        raise ValueError("compare_recheck needs a reference frame with re-check outputs")
    tol = stats.tol
    heat = engine[contract.RECHECK_HEATMAP][0, 0]
    entry = stats.get(contract.RECHECK_HEATMAP, "heat")
    entry.add_errors(heat, ref_heat.heat)
    entry.judge(entry.max_abs)
    scores = engine[contract.TRANS_SCORES][0]
    peaks = len(scores)
    positive = np.flatnonzero(scores > 0)
    cells = peak_cells(
        engine[contract.TRANS_EMBEDDINGS][0][positive], engine[contract.TRANS_BOXES][0][positive],
        engine_maps[contract.ID_EMBEDDINGS], engine_maps[contract.RECHECK_BOXES],
    )  # fmt: skip
    found = cells >= 0
    rows, cells = positive[found], cells[found]
    ref_flat = ref_heat.heat.reshape(-1)
    suppressed = ref_heat.suppressed.reshape(-1)
    ranked = np.sort(suppressed)[::-1]
    pth = float(ranked[peaks - 1]) if peaks <= ranked.size else 0.0
    neighbours = _neighbour_max(ref_heat.heat).reshape(-1)
    # An engine peak is valid where the reference has a peak within the tie band, high enough.
    valid = (ref_flat[cells] >= neighbours[cells] - tol.tie_band) & (ref_flat[cells] >= pth - tol.tie_band)
    clear = np.flatnonzero((suppressed > pth + tol.tie_band) & (ref_flat > neighbours + tol.tie_band))
    _judge_kept(stats.get("trans top-P (kept)", "kept"), clear, cells, "peaks")
    extra_stats = stats.get("trans top-P (unpaired)", "extra")
    unpaired = (len(positive) - int(valid.sum())) / max(len(positive), 1)
    extra_stats.judge(unpaired)
    if (~found).any():
        extra_stats.note(f"{int((~found).sum())} peak row(s) match no cell")
    if np.any(np.diff(scores) > 0):
        extra_stats.note("engine peak scores not sorted")
        extra_stats.judge(1.0)
    rows, cells = rows[valid], cells[valid]
    judge_boxes(
        stats.get(contract.TRANS_BOXES, "boxes within"), engine[contract.TRANS_BOXES][0][rows],
        ref.recheck_boxes.reshape(-1, 4)[cells], tol,
    )  # fmt: skip
    entry = stats.get(contract.TRANS_SCORES, "abs")
    entry.add_errors(scores[rows], ref_flat[cells])
    entry.judge(entry.max_abs)
    id_flat = ref.id_unit.reshape(-1, ref.id_unit.shape[-1])
    embeddings = engine[contract.TRANS_EMBEDDINGS][0][rows]
    entry = stats.get(contract.TRANS_EMBEDDINGS, "cosine")
    entry.add_errors(embeddings, id_flat[cells])
    if len(rows):
        entry.judge(float(cosines(embeddings, id_flat[cells]).min()))


