"""`omc verify --backend trt`: the TensorRT engines against ONNX Runtime on the same feeds.

ONNX Runtime on the CPU runs the ONNX files the plans were built from and is the reference.
Every output is compared by its contract name, against the "tensorrt" row of the export's
precision in omc.export.judge.BOUNDS (which also pairs the rows and measures the errors):
- maps (`id_embeddings`, `recheck_features`, `recheck_boxes`, `recheck_heatmap`) element-wise,
  passing where |trt - ort| <= abs + rel * |ort| (NumPy's allclose rule);
- ranked outputs (the detector's top-K candidates, the re-check's top-P peaks) as sets: TensorRT
  and ONNX Runtime order near-tied scores differently (export-and-tensorrt-notes.md), so each
  reference row with a positive score is paired one to one with a TensorRT row whose box lies
  within `match_box_px` and whose score passes the allclose rule; the matched fraction must
  reach `kept_min`, and the matched rows' scores, densities and embeddings must pass the rule.
The report gives, per output, the largest errors and the absolute tolerance that would have
passed (Polygraphy's comparator does the same), so a failure says by how much.

It needs a GPU: without one, opening the engines raises the backend's one-line OmcError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from omc import contract
from omc.contract import EngineMeta
from omc.errors import BadInput, MissingDependency
from omc.export.judge import Bounds, Limit, OutputStats, bounds_for, pair_rows

log = logging.getLogger(__name__)


MAP_OUTPUTS = (contract.ID_EMBEDDINGS, contract.RECHECK_FEATURES, contract.RECHECK_BOXES, contract.RECHECK_HEATMAP)
# Ranked groups: (box output, score output, the other per-row outputs).
RANKED_GROUPS = (
    (contract.DET_BOXES, contract.DET_SCORES, (contract.DET_DENSITY, contract.DET_EMBEDDINGS)),
    (contract.TRANS_BOXES, contract.TRANS_SCORES, (contract.TRANS_EMBEDDINGS,)),
)
# Tracklets made from the reference detector's best candidates when a feed brings none.
DEFAULT_TRACKLETS = 8


@dataclass(frozen=True)
class OutputComparison:
    """One output over all feeds: largest |trt - ort| and relative error, the absolute tolerance
    that would have passed (with the row's rel), the matched fraction for ranked outputs."""

    name: str
    max_abs: float
    max_rel: float
    needed_abs: float
    matched: float | None
    passed: bool


@dataclass(frozen=True)
class TrtComparison:
    """The verdict of `compare_trt_with_onnxruntime`."""

    precision: str
    tolerance: Bounds
    feeds: int
    outputs: tuple[OutputComparison, ...]

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs)

    def summary(self) -> str:
        """A text table, one line per output, then PASSED or FAILED."""
        tol = self.tolerance
        lines = [
            f"TensorRT vs ONNX Runtime, {self.precision}, {self.feeds} feed(s): "
            f"abs {tol.score_abs:g} + rel {tol.score_rel:g}, boxes within {tol.match_box_px:g} px, "
            f"matched >= {tol.kept_min:g}",
            f"{'output':<20} {'max abs':>10} {'max rel':>10} {'needs abs':>10} {'matched':>8}  result",
        ]
        for row in self.outputs:
            matched = f"{row.matched:.4f}" if row.matched is not None else "-"
            lines.append(
                f"{row.name:<20} {row.max_abs:>10.3g} {row.max_rel:>10.3g} {row.needed_abs:>10.3g} {matched:>8}  "
                f"{'ok' if row.passed else 'FAIL'}"
            )
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


@dataclass
class _Errors:
    """Running errors of one output over all feeds (the judge's OutputStats, judged on the absolute
    tolerance it needs) and its smallest matched fraction for ranked outputs."""

    stats: OutputStats
    matched: float | None = None

    def add_matched(self, fraction: float) -> None:
        self.matched = fraction if self.matched is None else min(self.matched, fraction)


def _match_rows(
    ort_boxes: np.ndarray, ort_scores: np.ndarray, trt_boxes: np.ndarray, trt_scores: np.ndarray, tol: Bounds
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ort_rows, trt_rows) of matched candidates of one image.

    ort_boxes / trt_boxes: [K, 4] xyxy pixels; scores [K]. Only reference rows with a positive
    score count (the rest is padding). Pairs are one to one (omc.export.judge.pair_rows): box
    gap within match_box_px, score gap within match_score + match_score_rel * |reference score|.
    """
    rows = np.flatnonzero(ort_scores > 0)
    if rows.size == 0 or trt_boxes.shape[0] == 0:
        return rows[:0], rows[:0]
    trt_rows, positive_rows = pair_rows(trt_boxes, trt_scores, ort_boxes[rows], ort_scores[rows], tol)
    order = np.argsort(positive_rows, kind="stable")
    return rows[positive_rows[order]], trt_rows[order]


def _entry(errors: dict[str, _Errors], name: str, tol: Bounds) -> _Errors:
    if name not in errors:
        errors[name] = _Errors(OutputStats(name, "needs abs", Limit(tol.score_abs)))
    return errors[name]


def _compare_outputs(
    trt_out: Mapping[str, np.ndarray], ort_out: Mapping[str, np.ndarray], tol: Bounds, errors: dict[str, _Errors]
) -> None:
    for name in MAP_OUTPUTS:
        if name in ort_out:
            _entry(errors, name, tol).stats.add_errors(trt_out[name], ort_out[name], tol.score_rel)
    for boxes_name, scores_name, others in RANKED_GROUPS:
        if scores_name not in ort_out:
            continue
        for item in range(ort_out[scores_name].shape[0]):
            ort_rows, trt_rows = _match_rows(
                ort_out[boxes_name][item], ort_out[scores_name][item], trt_out[boxes_name][item], trt_out[scores_name][item], tol
            )
            positive = int((ort_out[scores_name][item] > 0).sum())
            fraction = ort_rows.size / positive if positive else 1.0
            for name in (boxes_name, scores_name, *others):
                entry = _entry(errors, name, tol)
                entry.add_matched(fraction)
                entry.stats.add_errors(trt_out[name][item][trt_rows], ort_out[name][item][ort_rows], tol.score_rel)


def verdict(errors: Mapping[str, _Errors], tol: Bounds) -> tuple[OutputComparison, ...]:
    """One row per output: passed when its matched fraction reaches kept_min and its errors fit
    score_abs + score_rel * |reference|."""
    kept = Limit(tol.kept_min, at_least=True)
    rows = []
    for name, entry in errors.items():
        stats = entry.stats
        stats.judge(stats.needed_abs)
        rows.append(
            OutputComparison(
                name=name,
                max_abs=stats.max_abs,
                max_rel=stats.max_rel,
                needed_abs=max(stats.needed_abs, 0.0),
                matched=entry.matched,
                passed=(entry.matched is None or kept.holds(entry.matched)) and stats.passed,
            )
        )
    return tuple(rows)


def _ort_sessions(engine_dir: Path, meta: EngineMeta) -> tuple[Any, Any | None]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependency("onnxruntime", "export") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    detector = ort.InferenceSession(str(engine_dir / contract.DETECTOR_ONNX), options, providers=providers)
    recheck = (
        ort.InferenceSession(str(engine_dir / contract.RECHECK_ONNX), options, providers=providers)
        if meta.has_recheck
        else None
    )
    return detector, recheck


def _ort_run(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def _host(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.array(value, copy=True) for name, value in outputs.items()}


def check_plans_run_here(engine_dir: str | Path, meta: EngineMeta, device: int | str = 0) -> None:
    """Open and activate the detector plan once, then release it.

    Every reason the comparison cannot run on this machine (no plans, no TensorRT, no GPU, plans
    built by another edition, version or GPU target) is raised here as the runtime's OmcError,
    before the PyTorch side spends time making the feeds.
    """
    from omc.runtime.backends.trt import TensorRTBackend

    detector, _ = TensorRTBackend.open_pair(engine_dir, meta, device)
    detector.activate()
    detector.deactivate()


def compare_trt_with_onnxruntime(
    engine_dir: str | Path,
    feeds: Iterable[Mapping[str, np.ndarray]],
    precision: str,
    device: int | str = 0,
) -> TrtComparison:
    """Run the plans in `engine_dir` and its ONNX files on `feeds`; compare every output.

    feeds: dicts with `images` uint8 [B, H, W, 3] and, optionally, `tracklets` float32 [n, E]
    (without them the re-check gets the reference detector's best DEFAULT_TRACKLETS
    det_embeddings of the first image). The re-check runs on the first image of each feed, on
    each backend's own detector outputs (the TensorRT pair passes its device maps directly).
    precision: a key of BOUNDS["tensorrt"].  Raises OmcError when the engines cannot be opened (no GPU,
    no TensorRT, a sidecar mismatch) and BadInput when no feed was given.
    """
    from omc.runtime.backends.trt import TensorRTBackend

    tol = bounds_for("tensorrt", precision)
    engine_dir = Path(engine_dir)
    meta = EngineMeta.load(engine_dir)
    trt_detector, trt_recheck = TensorRTBackend.open_pair(engine_dir, meta, device)
    ort_detector, ort_recheck = _ort_sessions(engine_dir, meta)
    errors: dict[str, _Errors] = {}
    count = 0
    with trt_detector:
        if trt_recheck is not None:
            trt_recheck.activate()
        try:
            for feed in feeds:
                images = np.ascontiguousarray(feed[contract.IMAGES])
                trt_raw = trt_detector.infer({contract.IMAGES: images})
                trt_out = _host(trt_raw)
                ort_out = _ort_run(ort_detector, {contract.IMAGES: images})
                if trt_recheck is not None and ort_recheck is not None:
                    tracklets = feed.get(contract.TRACKLETS)
                    if tracklets is None:
                        best = ort_out[contract.DET_SCORES][0] > 0
                        tracklets = ort_out[contract.DET_EMBEDDINGS][0][best][:DEFAULT_TRACKLETS]
                    if len(tracklets):
                        tracklets = np.ascontiguousarray(tracklets, np.float32)
                        maps = contract.RECHECK_FEEDS_FROM_DETECTOR
                        # Batch 1: hand the detector's device maps straight on, as the tracker does.
                        trt_maps = {n: trt_raw[n] if images.shape[0] == 1 else trt_out[n][:1] for n in maps}
                        trt_out.update(_host(trt_recheck.infer({**trt_maps, contract.TRACKLETS: tracklets})))
                        ort_feeds = {n: ort_out[n][:1] for n in maps}
                        ort_out.update(_ort_run(ort_recheck, {**ort_feeds, contract.TRACKLETS: tracklets}))
                _compare_outputs(trt_out, ort_out, tol, errors)
                count += 1
        finally:
            if trt_recheck is not None:
                trt_recheck.deactivate()
    if count == 0:
        raise BadInput("no feeds to compare: give at least one dict with 'images'")
    report = TrtComparison(precision, tol, count, verdict(errors, tol))
    log.info("%s", report.summary())
    return report
