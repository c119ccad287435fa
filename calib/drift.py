"""How far INT8 graphs drift from their float originals, on held-out frames (for `omc verify` and
`omc int8-report`).

Both exports run on the same frames (uint8 [M, H, W, 3], letterboxed; the calibration set's
held-out frames never took part in calibration) and the same tracklets. Figures:

- candidates: the float detector's top `drift_candidates` real candidates (score > 0) are paired
  with the INT8 detector's candidates by IoU (one-to-one, `lap`, at least `drift_match_iou`).
  Quantization moves scores, so top-K order and membership change; pairing by box instead of by
  row compares the same anchors. Reported: share of float candidates left unpaired, score error
  (absolute), box error of the pairs (largest corner difference, network pixels; median and
  95th percentile, as a neighbouring anchor can take a pair), and the cosine of the two
  exports' embeddings at each float candidate's centre cell (what a detection would carry).
- ID map: cosine between the float and INT8 `id_embeddings` at every cell (the re-check's input).
- detections: basic detections kept after thresholding and cluster-DIoU NMS
  (omc.runtime.detections.select_basic, TrackerConfig defaults) from each graph's outputs;
  reported as totals and the count that changed (kept by one side only, IoU pairing as above).
- re-check (end to end: each export's detector feeds its own re-check): heat-map error, peaks
  above `recheck_score_thres` on each side and the ones that changed, box error and embedding
  cosine of paired peaks; and the heat-map error of the INT8 re-check fed the float detector's
  maps, which isolates the re-check graph's own quantization error.

Every figure aggregates over all frames; `DriftReport.table()` prints them, `violations(config)`
lists those outside CalibConfig's bounds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.config import CalibConfig, TrackerConfig
from omc.contract import EngineMeta
from omc.runtime.assign import iou_distance, linear_assignment
from omc.runtime.detections import select_basic

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
Outputs = Mapping[str, Any]


def pair_boxes(a: F32, b: F32, min_iou: float) -> npt.NDArray[np.int64]:
    """One-to-one pairs [P, 2] (row of a, row of b) with IoU >= min_iou, maximising total IoU.

    a: [N, 4], b: [M, 4] corners, pixels. Returns an empty [0, 2] when either is empty.
    """
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), np.int64)
    cost = iou_distance(a, b)  # 1 - IoU, "+1 pixel" widths as the tracker's IoU rounds
    return linear_assignment(cost, 1.0 - min_iou).matches


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> F32:
    """Cosine of corresponding rows of a and b ([N, E] each); 0 where either row is zero."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    dots = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0).astype(np.float32)


@dataclass
class _Pooled:
    """Per-pair values collected over frames."""

    values: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray) -> None:
        self.values.setdefault(name, []).append(np.asarray(values, np.float64).ravel())

    def all(self, name: str) -> npt.NDArray[np.float64]:
        parts = self.values.get(name, [])
        return np.concatenate(parts) if parts else np.zeros(0)


def _stat(values: npt.NDArray[np.float64], kind: str) -> float:
    if len(values) == 0:
        return float("nan")
    if kind == "mean":
        return float(values.mean())
    if kind == "max":
        return float(values.max())
    if kind == "min":
        return float(values.min())
    if kind == "median":
        return float(np.median(values))
    percent = {"p1": 1.0, "p95": 95.0}[kind]
    return float(np.percentile(values, percent))


@dataclass(frozen=True)
class DriftReport:
    """INT8 vs float on held-out frames (module docstring). Errors in network-input pixels.

    NaN marks a figure with nothing to measure (e.g. no detections kept on either side).
    """

    frames: int
    candidates_compared: int
    candidates_unpaired: float
    score_error_mean: float
    score_error_max: float
    box_error_px_median: float
    box_error_px_p95: float
    embedding_cosine_mean: float
    embedding_cosine_min: float
    id_map_cosine_mean: float
    id_map_cosine_p1: float
    detections_float: int
    detections_int8: int
    detections_changed: int
    recheck_samples: int = 0
    heatmap_error_max: float = float("nan")
    heatmap_error_isolated_max: float = float("nan")
    peaks_float: int = 0
    peaks_int8: int = 0
    peaks_changed: int = 0
    peak_box_error_px_max: float = float("nan")
    peak_embedding_cosine_min: float = float("nan")

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs in print order."""
        def number(value: float, digits: int = 4) -> str:
            return "-" if np.isnan(value) else f"{value:.{digits}f}"

        rows = [
            ("held-out frames", str(self.frames)),
            ("candidates compared (float top ones)", str(self.candidates_compared)),
            ("candidates without an INT8 pair", number(self.candidates_unpaired, 3)),
            ("score error, mean / max", f"{number(self.score_error_mean)} / {number(self.score_error_max)}"),
            ("box error px of pairs, median / 95th percentile",
             f"{number(self.box_error_px_median, 2)} / {number(self.box_error_px_p95, 2)}"),
            ("embedding cosine at candidate cells, mean / min",
             f"{number(self.embedding_cosine_mean)} / {number(self.embedding_cosine_min)}"),
            ("ID map cosine, mean / 1st percentile", f"{number(self.id_map_cosine_mean)} / {number(self.id_map_cosine_p1)}"),
            ("detections after NMS, float / INT8 / changed",
             f"{self.detections_float} / {self.detections_int8} / {self.detections_changed}"),
        ]
        if self.recheck_samples:
            rows += [
                ("re-check samples", str(self.recheck_samples)),
                ("heat-map error max, end to end / re-check alone",
                 f"{number(self.heatmap_error_max)} / {number(self.heatmap_error_isolated_max)}"),
                ("re-check peaks, float / INT8 / changed", f"{self.peaks_float} / {self.peaks_int8} / {self.peaks_changed}"),
                ("peak box error px, max", number(self.peak_box_error_px_max, 2)),
                ("peak embedding cosine, min", number(self.peak_embedding_cosine_min)),
            ]
        return rows

    def table(self) -> str:
        """A printable two-column table of `rows()`."""
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def to_dict(self) -> dict[str, Any]:
        return {key: (None if isinstance(value, float) and np.isnan(value) else value) for key, value in asdict(self).items()}

    def violations(self, config: CalibConfig = CalibConfig()) -> list[str]:
        """Figures outside the bounds of `config` (drift_* fields), one sentence each; [] when within."""
        problems = []
        checks = [
            ("candidates without an INT8 pair", self.candidates_unpaired, config.drift_max_unpaired, "above"),
            ("largest score error", self.score_error_max, config.drift_max_score_error, "above"),
            ("median box error (px)", self.box_error_px_median, config.drift_max_box_error_px, "above"),
            ("mean embedding cosine", self.embedding_cosine_mean, config.drift_min_embedding_cosine, "below"),
            ("mean ID map cosine", self.id_map_cosine_mean, config.drift_min_embedding_cosine, "below"),
            ("largest heat-map error", self.heatmap_error_max, config.drift_max_heatmap_error, "above"),
        ]
        for name, value, bound, side in checks:
            if np.isnan(value):
                continue
            if (side == "above" and value > bound) or (side == "below" and value < bound):
                problems.append(f"{name} {value:.4g} is {side} the bound {bound:g}")
        changed_share = self.detections_changed / max(self.detections_float, 1)
        if changed_share > config.drift_max_detections_changed:
            problems.append(
                f"{self.detections_changed} of {self.detections_float} detections changed "
                f"({changed_share:.3g}), above the bound {config.drift_max_detections_changed:g}"
            )
        return problems


def _candidates(outputs: Outputs) -> tuple[F32, F32, F32, F32]:
    """(boxes [K, 4], scores [K], density [K], embeddings [K, E]) of batch item 0."""
    return tuple(np.asarray(outputs[name])[0].astype(np.float32) for name in (  # type: ignore[return-value]
        contract.DET_BOXES, contract.DET_SCORES, contract.DET_DENSITY, contract.DET_EMBEDDINGS))


def centre_cells(boxes: F32, map_hw: tuple[int, int]) -> npt.NDArray[np.int64]:
    """Flat cell index row * w + col of each box's centre cell (engine-contract.md): col =
    clip(floor((x1 + x2) / 16), 0, w - 1), row likewise. boxes: [N, 4] corners, network pixels."""
    h, w = map_hw
    col = np.clip(np.floor((boxes[:, 0] + boxes[:, 2]) / np.float32(16)), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor((boxes[:, 1] + boxes[:, 3]) / np.float32(16)), 0, h - 1).astype(np.int64)
    return row * w + col


def detector_drift(
    float_outputs: Sequence[Outputs],
    int8_outputs: Sequence[Outputs],
    config: CalibConfig = CalibConfig(),
    tracker: TrackerConfig = TrackerConfig(),
) -> DriftReport:
    """Detector figures from both exports' outputs on the same frames (one dict per frame, batch 1)."""
    pooled = _Pooled()
    compared = unpaired = 0
    kept = {"float": 0, "int8": 0}
    changed = 0
    for reference, quantized in zip(float_outputs, int8_outputs, strict=True):
        boxes_f, scores_f, density_f, _ = _candidates(reference)
        boxes_q, scores_q, density_q, _ = _candidates(quantized)
        map_f = np.asarray(reference[contract.ID_EMBEDDINGS], np.float32)[0]
        map_q = np.asarray(quantized[contract.ID_EMBEDDINGS], np.float32)[0]
        map_hw = (map_f.shape[0], map_f.shape[1])
        map_f, map_q = map_f.reshape(-1, map_f.shape[-1]), map_q.reshape(-1, map_q.shape[-1])
        top = np.flatnonzero(scores_f > 0)[: config.drift_candidates]
        pairs = pair_boxes(boxes_f[top], boxes_q, config.drift_match_iou)
        rows_f, rows_q = top[pairs[:, 0]], pairs[:, 1]
        compared += len(top)
        unpaired += len(top) - len(pairs)
        pooled.add("score", np.abs(scores_f[rows_f] - scores_q[rows_q]))
        pooled.add("box", np.abs(boxes_f[rows_f] - boxes_q[rows_q]).max(axis=1) if len(pairs) else np.zeros(0))
        # The embeddings a detection would carry: both ID maps at the float candidate's centre cell.
        cells = centre_cells(boxes_f[top], map_hw)
        pooled.add("embedding", _cosine_rows(map_f[cells], map_q[cells]))
        pooled.add("id_map", _cosine_rows(map_f, map_q))
        basic_f = select_basic(boxes_f, scores_f, density_f, tracker)
        basic_q = select_basic(boxes_q, scores_q, density_q, tracker)
        same = pair_boxes(boxes_f[basic_f], boxes_q[basic_q], config.drift_match_iou)
        kept["float"] += len(basic_f)
        kept["int8"] += len(basic_q)
        changed += len(basic_f) + len(basic_q) - 2 * len(same)
    return DriftReport(
        frames=len(float_outputs),
        candidates_compared=compared,
        candidates_unpaired=unpaired / compared if compared else float("nan"),
        score_error_mean=_stat(pooled.all("score"), "mean"),
        score_error_max=_stat(pooled.all("score"), "max"),
        box_error_px_median=_stat(pooled.all("box"), "median"),
        box_error_px_p95=_stat(pooled.all("box"), "p95"),
        embedding_cosine_mean=_stat(pooled.all("embedding"), "mean"),
        embedding_cosine_min=_stat(pooled.all("embedding"), "min"),
        id_map_cosine_mean=_stat(pooled.all("id_map"), "mean"),
        id_map_cosine_p1=_stat(pooled.all("id_map"), "p1"),
        detections_float=kept["float"],
        detections_int8=kept["int8"],
        detections_changed=changed,
    )


def recheck_drift(
    float_outputs: Sequence[Outputs],
    int8_outputs: Sequence[Outputs],
    config: CalibConfig = CalibConfig(),
    tracker: TrackerConfig = TrackerConfig(),
) -> dict[str, Any]:
    """Re-check figures (the DriftReport's recheck_* / heatmap_* / peak_* fields) from both
    exports' re-check outputs on the same samples."""
    pooled = _Pooled()
    peaks = {"float": 0, "int8": 0}
    changed = 0
    threshold = np.float32(tracker.recheck_score_thres)
    for reference, quantized in zip(float_outputs, int8_outputs, strict=True):
        heat_f = np.asarray(reference[contract.RECHECK_HEATMAP], np.float32)
        heat_q = np.asarray(quantized[contract.RECHECK_HEATMAP], np.float32)
        pooled.add("heat", np.abs(heat_f - heat_q).max(keepdims=True))
        sides = []
        for outputs in (reference, quantized):
            scores = np.asarray(outputs[contract.TRANS_SCORES], np.float32)[0]
            keep = np.flatnonzero(scores > threshold)
            sides.append((
                np.asarray(outputs[contract.TRANS_BOXES], np.float32)[0][keep],
                np.asarray(outputs[contract.TRANS_EMBEDDINGS], np.float32)[0][keep],
            ))  # fmt: skip
        (boxes_f, emb_f), (boxes_q, emb_q) = sides
        pairs = pair_boxes(boxes_f, boxes_q, config.drift_match_iou)
        peaks["float"] += len(boxes_f)
        peaks["int8"] += len(boxes_q)
        changed += len(boxes_f) + len(boxes_q) - 2 * len(pairs)
        if len(pairs):
            pooled.add("box", np.abs(boxes_f[pairs[:, 0]] - boxes_q[pairs[:, 1]]).max(axis=1))
            pooled.add("embedding", _cosine_rows(emb_f[pairs[:, 0]], emb_q[pairs[:, 1]]))
    return {
        "recheck_samples": len(float_outputs),
        "heatmap_error_max": _stat(pooled.all("heat"), "max"),
        "peaks_float": peaks["float"],
        "peaks_int8": peaks["int8"],
        "peaks_changed": changed,
        "peak_box_error_px_max": _stat(pooled.all("box"), "max"),
        "peak_embedding_cosine_min": _stat(pooled.all("embedding"), "min"),
    }


def measure_drift(
    float_dir: str | Path,
    int8_dir: str | Path,
    images: npt.NDArray[np.uint8],
    tracklets: Sequence[F32] = (),
    config: CalibConfig = CalibConfig(),
    tracker: TrackerConfig = TrackerConfig(),
    intra_op_threads: int = 0,
) -> DriftReport:
    """Run both exports in ONNX Runtime on `images` (uint8 [M, H, W, 3], letterboxed) and compare.

    tracklets: one [n, E] float32 matrix per image for the re-check (empty: no re-check figures).
    End to end, each export's detector feeds its own re-check; the INT8 re-check also runs on
    the float detector's maps, which isolates its own error (`heatmap_error_isolated_max`).
    """
    from dataclasses import replace

    from omc.runtime.backends import open_engines

    if tracklets and len(tracklets) != len(images):
        raise ValueError("give one tracklet matrix per image, or none")
    opened = []
    try:
        for folder in (float_dir, int8_dir):
            detector, recheck, _ = open_engines(folder, backend="ort", device="cpu", intra_op_threads=intra_op_threads)
            opened.append((detector, recheck))
        (float_detector, float_recheck), (int8_detector, int8_recheck) = opened
        detections: dict[str, list[dict[str, np.ndarray]]] = {"float": [], "int8": []}
        rechecks: dict[str, list[dict[str, np.ndarray]]] = {"float": [], "int8": [], "isolated": []}
        for index in range(len(images)):
            feeds = {contract.IMAGES: images[index : index + 1]}
            found_f = {k: np.asarray(v) for k, v in float_detector.infer(feeds).items()}
            found_q = {k: np.asarray(v) for k, v in int8_detector.infer(feeds).items()}
            detections["float"].append(found_f)
            detections["int8"].append(found_q)
            if float_recheck is None or int8_recheck is None or not tracklets:
                continue
            rows = np.ascontiguousarray(tracklets[index], np.float32)
            for side, recheck, maps in (("float", float_recheck, found_f), ("int8", int8_recheck, found_q),
                                        ("isolated", int8_recheck, found_f)):
                inputs = {name: maps[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
                inputs[contract.TRACKLETS] = rows
                rechecks[side].append({k: np.asarray(v) for k, v in recheck.infer(inputs).items()})
    finally:
        for pair in opened:
            for backend in pair:
                if backend is not None:
                    backend.deactivate()
    report = detector_drift(detections["float"], detections["int8"], config, tracker)
    if rechecks["float"]:
        figures = recheck_drift(rechecks["float"], rechecks["int8"], config, tracker)
        isolated = recheck_drift(rechecks["float"], rechecks["isolated"], config, tracker)
        report = replace(report, **figures, heatmap_error_isolated_max=isolated["heatmap_error_max"])
    return report


def drift_on_holdout(
    float_dir: str | Path, int8_dir: str | Path, calib_file: str | Path, config: CalibConfig = CalibConfig(),
    intra_op_threads: int = 0,
) -> DriftReport:
    """`measure_drift` on a calibration set's held-out frames and their recorded tracklets."""
    from omc.calib.dataset import CalibrationSet
    from omc.errors import BadInput

    calibration = CalibrationSet.load(calib_file)
    if len(calibration.holdout_images) == 0:
        raise BadInput(f"{calib_file} has no held-out frames; make it with --holdout 1 or more")
    samples = calibration.holdout_recheck
    tracklets = [samples.tracklets(s) for s in range(len(samples))] if len(samples) == len(calibration.holdout_images) else []
    return measure_drift(float_dir, int8_dir, calibration.holdout_images, tracklets, config, intra_op_threads=intra_op_threads)


def recorded_drift(int8_dir: str | Path, meta: EngineMeta, config: CalibConfig = CalibConfig()) -> DriftReport | None:
    """`drift_on_holdout` of an INT8 export against the float export and calibration set its
    export.json records (`omc verify`); None, with a logged reason, when either is gone or changed.
    `config.keep_float` is taken from the record."""
    from dataclasses import replace

    from omc.calib.dataset import recorded_calibration_set
    from omc.files import file_sha256

    record = meta.extra.get("int8", {})
    float_dir = Path(record.get("float_export", ""))
    if not record.get("float_export") or not (float_dir / contract.EXPORT_JSON).is_file():
        log.warning("the float export this INT8 export was quantized from (%s) is not available: no drift figures",
                    record.get("float_export") or "not recorded")
        return None
    if file_sha256(float_dir / contract.EXPORT_JSON) != record.get("float_export_sha256"):
        log.warning("%s changed since this INT8 export was made from it: no drift figures", float_dir)
        return None
    calib_file = recorded_calibration_set(meta)
    if calib_file is None:
        return None
    kept = record.get("kept_float", {}).get("regions", config.keep_float)
    return drift_on_holdout(float_dir, int8_dir, calib_file, replace(config, keep_float=tuple(kept)))
