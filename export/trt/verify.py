"""`omc verify --backend trt`: the TensorRT engines against ONNX Runtime on the same feeds.

ONNX Runtime on the CPU runs the ONNX files the plans were built from and is the reference.
Every output is compared by its contract name, with one tolerance row per precision:
- maps (`id_embeddings`, `recheck_features`, `recheck_boxes`, `recheck_heatmap`) element-wise,
  passing where |trt - ort| <= abs + rel * |ort| (NumPy's allclose rule);
- ranked outputs (the detector's top-K candidates, the re-check's top-P peaks) as sets: TensorRT
  and ONNX Runtime order near-tied scores differently (export-and-tensorrt-notes.md), so each
  reference row with a positive score is matched to a TensorRT row whose box lies within
  `box_px` and whose score passes the allclose rule; the matched fraction must reach
  `min_matched`, and the matched rows' scores, densities and embeddings must pass the rule.
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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    """Pass rule of one precision: allclose(abs, rel); ranked rows matched within box_px pixels,
    at least min_matched of them."""

    abs: float
    rel: float
    box_px: float
    min_matched: float


# Starting points, to be re-measured on each GPU class:
# - fp32: fp32 builds clear TensorRT's TF32 flag (export/trt/builder.py), so only float32
#   accumulation-order differences remain; boxes stay within a twentieth of a pixel.
# - fp16: 11-bit mantissa; the notes measured 0.999 of the top-1000 candidates and 0.99 of the
#   top-100 peaks kept against fp32, and coordinates near 500 px rounding by up to 0.125 px.
# - int8: quantisation steps of the activations; the set-level match carries the verdict.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(abs=1e-3, rel=1e-3, box_px=0.05, min_matched=0.999),
    "fp16": Tolerance(abs=2e-2, rel=2e-2, box_px=0.5, min_matched=0.99),
    "int8": Tolerance(abs=1e-1, rel=1e-1, box_px=2.0, min_matched=0.95),
}
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
    tolerance: Tolerance
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
            f"abs {tol.abs:g} + rel {tol.rel:g}, boxes within {tol.box_px:g} px, matched >= {tol.min_matched:g}",
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
    """Running maxima of one output's errors over all feeds."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    needed_abs: float = 0.0
    matched: float | None = None

    def add(self, trt_values: np.ndarray, ort_values: np.ndarray, tol: Tolerance) -> None:
        if ort_values.size == 0:
            return
        trt64 = np.asarray(trt_values, np.float64)
        ort64 = np.asarray(ort_values, np.float64)
        diff = np.abs(trt64 - ort64)
        scale = np.abs(ort64)
        self.max_abs = max(self.max_abs, float(diff.max()))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        self.max_rel = max(self.max_rel, float(rel.max()))
        self.needed_abs = max(self.needed_abs, float((diff - tol.rel * scale).max()))

    def add_matched(self, fraction: float) -> None:
        self.matched = fraction if self.matched is None else min(self.matched, fraction)


def _match_rows(
    ort_boxes: np.ndarray, ort_scores: np.ndarray, trt_boxes: np.ndarray, trt_scores: np.ndarray, tol: Tolerance
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ort_rows, trt_rows) of matched candidates of one image.

    ort_boxes / trt_boxes: [K, 4] xyxy pixels; scores [K]. Only reference rows with a positive
    score count (the rest is padding). Each reference row takes the TensorRT row with the
    closest box among those within box_px whose score passes the allclose rule.
    """
    rows = np.flatnonzero(ort_scores > 0)
    if rows.size == 0 or trt_boxes.shape[0] == 0:
        return rows[:0], rows[:0]
    box_gap = np.abs(ort_boxes[rows, None, :] - trt_boxes[None, :, :]).max(axis=-1)  # [N, K]
    score_ok = np.abs(ort_scores[rows, None] - trt_scores[None, :]) <= tol.abs + tol.rel * np.abs(ort_scores[rows, None])
    candidate = (box_gap <= tol.box_px) & score_ok
    gap = np.where(candidate, box_gap, np.inf)
    best = gap.argmin(axis=1)
    found = np.isfinite(gap[np.arange(rows.size), best])
    return rows[found], best[found]


def _compare_outputs(
    trt_out: Mapping[str, np.ndarray], ort_out: Mapping[str, np.ndarray], tol: Tolerance, errors: dict[str, _Errors]
) -> None:
    for name in MAP_OUTPUTS:
        if name in ort_out:
            errors.setdefault(name, _Errors()).add(trt_out[name], ort_out[name], tol)
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
                entry = errors.setdefault(name, _Errors())
                entry.add_matched(fraction)
                entry.add(trt_out[name][item][trt_rows], ort_out[name][item][ort_rows], tol)


def verdict(errors: Mapping[str, _Errors], tol: Tolerance) -> tuple[OutputComparison, ...]:
    """One row per output: passed when its matched fraction reaches min_matched and its
    errors fit abs + rel * |reference|."""
    rows = []
    for name, entry in errors.items():
        matched_ok = entry.matched is None or entry.matched >= tol.min_matched
        rows.append(
            OutputComparison(
                name=name,
                max_abs=entry.max_abs,
                max_rel=entry.max_rel,
                needed_abs=max(entry.needed_abs, 0.0),
                matched=entry.matched,
                passed=matched_ok and entry.needed_abs <= tol.abs,
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
    precision: a key of TOLERANCES.  Raises OmcError when the engines cannot be opened (no GPU,
    no TensorRT, a sidecar mismatch) and BadInput when no feed was given.
    """
    from omc.runtime.backends.trt import TensorRTBackend

    if precision not in TOLERANCES:
        raise BadInput(f"precision '{precision}' is not one of {', '.join(TOLERANCES)}")
    tol = TOLERANCES[precision]
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
