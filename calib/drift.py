"""How far INT8 graphs drift from their float originals, on held-out frames (for `omc verify` and
`omc int8-report`).

Both exports run on the same frames (uint8 [M, H, W, 3], letterboxed; the calibration set's
held-out frames never took part in calibration) and the same tracklets. Figures:

- candidates: the float detector's top `drift_candidates` real candidates (score > 0) are paired
  with the INT8 detector's candidates by IoU (one-to-one, `lap`, at least the bounds' `match_iou`).
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

The INT8 graphs run in this CPU's integer kernels, as deployed: ONNX Runtime's u8s8 kernels round
differently on AVX2 (16-bit pair sums that can saturate), AVX-512 VNNI and AMX, so these figures
depend on the CPU (README, "INT8"). `integer_kernels=False` runs the Q/DQ graphs as written,
every operator in float: the quantization's own drift, which does not depend on the CPU.

Every figure aggregates over all frames; `DriftReport.table()` prints them, `violations()` lists
those outside the "int8-drift" bounds of omc.export.judge.BOUNDS (the one judge of engine
outputs, which also pairs the boxes and measures the cosines).
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
from omc.export.judge import BOUNDS, Bounds, Limit, cosines, pair_by_iou
from omc.runtime.boxes import centre_cells
from omc.runtime.detections import select_basic

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
Outputs = Mapping[str, Any]
# The bounds INT8 graphs are held to against their float graphs.
INT8_DRIFT = BOUNDS["int8-drift"]["int8"]


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

    def violations(self, bounds: Bounds = INT8_DRIFT) -> list[str]:
        """Figures outside `bounds` (an "int8-drift" row of BOUNDS), one sentence each; [] when within."""
        problems = []
        # Candidates without a pair against the share that must keep one (kept_min), so that the
        # bound is the stated one exactly (1 - 0.9 is not 0.1 in floating point).
        if not np.isnan(self.candidates_unpaired) and not Limit(bounds.kept_min, at_least=True).holds(1.0 - self.candidates_unpaired):
            problems.append(f"candidates without an INT8 pair {self.candidates_unpaired:.4g} is above the bound "
                            f"{1.0 - bounds.kept_min:g}")
        checks = [
            ("largest score error", self.score_error_max, Limit(bounds.score_abs)),
            ("median box error (px)", self.box_error_px_median, Limit(bounds.box_px)),
            ("mean embedding cosine", self.embedding_cosine_mean, Limit(bounds.cosine_min, at_least=True)),
            ("mean ID map cosine", self.id_map_cosine_mean, Limit(bounds.cosine_min, at_least=True)),
            ("largest heat-map error", self.heatmap_error_max, Limit(bounds.heat_abs)),
        ]
        for name, value, limit in checks:
            if not np.isnan(value) and not limit.holds(value):
                problems.append(f"{name} {value:.4g} is {'below' if limit.at_least else 'above'} the bound {limit.value:g}")
        changed_share = self.detections_changed / max(self.detections_float, 1)
        if not Limit(bounds.extra_max).holds(changed_share):
            problems.append(
                f"{self.detections_changed} of {self.detections_float} detections changed "
                f"({changed_share:.3g}), above the bound {bounds.extra_max:g}"
            )
        return problems


def _candidates(outputs: Outputs) -> tuple[F32, F32, F32, F32]:
    """(boxes [K, 4], scores [K], density [K], embeddings [K, E]) of batch item 0."""
    return tuple(np.asarray(outputs[name])[0].astype(np.float32) for name in (  # type: ignore[return-value]
        contract.DET_BOXES, contract.DET_SCORES, contract.DET_DENSITY, contract.DET_EMBEDDINGS))


def detector_drift(
    float_outputs: Sequence[Outputs],
    int8_outputs: Sequence[Outputs],
    config: CalibConfig = CalibConfig(),
    tracker: TrackerConfig = TrackerConfig(),
    bounds: Bounds = INT8_DRIFT,
) -> DriftReport:
    """Detector figures from both exports' outputs on the same frames (one dict per frame, batch 1);
    boxes pair at IoU >= bounds.match_iou."""
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
        pairs = pair_by_iou(boxes_f[top], boxes_q, bounds.match_iou)
        rows_f, rows_q = top[pairs[:, 0]], pairs[:, 1]
        compared += len(top)
        unpaired += len(top) - len(pairs)
        pooled.add("score", np.abs(scores_f[rows_f] - scores_q[rows_q]))
        pooled.add("box", np.abs(boxes_f[rows_f] - boxes_q[rows_q]).max(axis=1) if len(pairs) else np.zeros(0))
        # The embeddings a detection would carry: both ID maps at the float candidate's centre cell.
        cells = centre_cells(boxes_f[top], map_hw)
        pooled.add("embedding", cosines(map_f[cells], map_q[cells]))
        pooled.add("id_map", cosines(map_f, map_q))
        basic_f = select_basic(boxes_f, scores_f, density_f, tracker)
        basic_q = select_basic(boxes_q, scores_q, density_q, tracker)
        same = pair_by_iou(boxes_f[basic_f], boxes_q[basic_q], bounds.match_iou)
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
    tracker: TrackerConfig = TrackerConfig(),
    bounds: Bounds = INT8_DRIFT,
) -> dict[str, Any]:
    """Re-check figures (the DriftReport's recheck_* / heatmap_* / peak_* fields) from both
    exports' re-check outputs on the same samples; peaks pair at IoU >= bounds.match_iou."""
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
        pairs = pair_by_iou(boxes_f, boxes_q, bounds.match_iou)
        peaks["float"] += len(boxes_f)
        peaks["int8"] += len(boxes_q)
        changed += len(boxes_f) + len(boxes_q) - 2 * len(pairs)
        if len(pairs):
            pooled.add("box", np.abs(boxes_f[pairs[:, 0]] - boxes_q[pairs[:, 1]]).max(axis=1))
            pooled.add("embedding", cosines(emb_f[pairs[:, 0]], emb_q[pairs[:, 1]]))
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
    integer_kernels: bool = True,
) -> DriftReport:
    """Run both exports in ONNX Runtime on `images` (uint8 [M, H, W, 3], letterboxed) and compare.

    tracklets: one [n, E] float32 matrix per image for the re-check (empty: no re-check figures).
    End to end, each export's detector feeds its own re-check; the INT8 re-check also runs on
    the float detector's maps, which isolates its own error (`heatmap_error_isolated_max`).
    integer_kernels: run the INT8 graphs as ONNX Runtime deploys them (Q/DQ fused into this
    CPU's integer kernels, whose rounding differs between AVX2, AVX-512 VNNI and AMX). False runs
    them as written, every operator in float on dequantized values: the quantization's own
    drift, the same on every CPU.
    """
    from dataclasses import replace

    from omc.runtime.backends import open_engines

    if tracklets and len(tracklets) != len(images):
        raise ValueError("give one tracklet matrix per image, or none")
    opened = []
    try:
        for folder, optimize in ((float_dir, True), (int8_dir, integer_kernels)):
            detector, recheck, _ = open_engines(folder, backend="ort", device="cpu", intra_op_threads=intra_op_threads,
                                                optimize_graph=optimize)  # fmt: skip
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
        figures = recheck_drift(rechecks["float"], rechecks["int8"], tracker)
        isolated = recheck_drift(rechecks["float"], rechecks["isolated"], tracker)
        report = replace(report, **figures, heatmap_error_isolated_max=isolated["heatmap_error_max"])
    return report


def drift_on_holdout(
    float_dir: str | Path, int8_dir: str | Path, calib_file: str | Path, config: CalibConfig = CalibConfig(),
    intra_op_threads: int = 0, integer_kernels: bool = True,
) -> DriftReport:
    """`measure_drift` on a calibration set's held-out frames and their recorded tracklets."""
    from omc.calib.dataset import CalibrationSet
    from omc.errors import BadInput

    calibration = CalibrationSet.load(calib_file)
    if len(calibration.holdout_images) == 0:
        raise BadInput(f"{calib_file} has no held-out frames; make it with --holdout 1 or more")
    samples = calibration.holdout_recheck
    tracklets = [samples.tracklets(s) for s in range(len(samples))] if len(samples) == len(calibration.holdout_images) else []
    return measure_drift(float_dir, int8_dir, calibration.holdout_images, tracklets, config,
                         intra_op_threads=intra_op_threads, integer_kernels=integer_kernels)


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
