"""`omc verify`: an export in ONNX Runtime against the PyTorch reference path, on the same inputs.

Both run on the same frames; the re-check runs for each requested tracklet count n on tracklets
built from each frame's own reference embeddings (omc.export.verify_inputs). ONNX Runtime's
re-check takes ONNX Runtime's detector maps and the reference's takes the reference's, so the
check covers the chain as the tracker runs it. How outputs are judged, by precision, and the
noise floor that widens the stated limits for numerically noisy networks:
omc.export.comparison.

The reference is the float32 network whatever the export's precision: an fp16 export is judged
on its drift from float32.

`verify` is the whole `omc verify` (the command line parses, calls it, prints its text): it
finds the weights (given, or as export.json records them), exports them first when no folder is
given, picks the frames and runs ONNX Runtime against the reference, or TensorRT against ONNX
Runtime (omc.export.trt.verify). An INT8 export is judged on its calibration set's held-out frames
and also against the float export it was quantized from; both records belong to omc.calib, the
one package this module calls into for INT8 exports only (imported there, lazily).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.config import LOCAL_BACKENDS, ExportConfig, VerifyConfig
from omc.contract import EngineMeta
from omc.errors import BadInput, CheckFailed
from omc.export.comparison import (
    COMPARISON_MODES,
    NOISE_FACTOR,
    ComparisonMode,
    ComparisonStats,
    NoiseFloor,
    compare_detector,
    compare_recheck,
    detector_noise,
    heatmap_noise,
)
from omc.export.judge import Bounds, OutputStats
from omc.export.model import OMCNetwork
from omc.export.verify_reference import ReferenceFrame, ReferenceHeatmap, reference_detector, reference_heatmap
from omc.export.verify_inputs import build_tracklets, generated_frames, source_frames
from omc.export.weights_source import WeightsSource, weights_of_export

if TYPE_CHECKING:
    from omc.calib.drift import DriftReport
    from omc.export.checkpoint import LoadedCheckpoint
    from omc.export.trt.verify import TrtComparison

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
# Notes shown per output in the report table.
NOTES_SHOWN = 2


@dataclass(frozen=True)
class RecheckCase:
    """One re-check comparison: frame index, tracklets [n, E] float32 and the reference heat map."""

    frame: int
    tracklets: npt.NDArray[np.float32]
    reference: ReferenceHeatmap


@dataclass(frozen=True)
class VerifyReport:
    """The verdict of `verify_export`.

    mode: the comparison mode of the export's precision; tolerance: its limits after widening
    to the reference's own noise (`noise`); stats: per output, in the order compared.
    """

    precision: str
    mode: ComparisonMode
    tolerance: Bounds
    noise: NoiseFloor
    frames: int
    tracklet_counts: tuple[int, ...]
    stats: tuple[OutputStats, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stats)

    def failures(self) -> list[str]:
        return [s.name for s in self.stats if not s.passed]

    def table(self) -> str:
        """Text table, one line per output, then PASSED / FAILED."""
        counts = ", ".join(str(n) for n in self.tracklet_counts) or "-"
        noise = self.noise
        lines = [
            f"{self.mode.description} ({self.precision}, {self.mode.name}): {self.frames} frame(s), "
            f"tracklet counts {counts}, {self.seconds:.1f} s",
            f"reference float32 noise (float32 vs float64 reference): boxes {noise.box_px:.3g} px, "
            f"scores {noise.score_abs:.3g}, cosine gap {noise.cosine_gap:.3g}, features {noise.feature_rel:.3g}; "
            f"limits are the stated ones or {NOISE_FACTOR:g}x this noise, whichever is larger",
            f"{'output':<22} {'max abs':>10} {'max rel':>10}  {'judged':<12} {'worst':>10}  {'limit':<11} result",
        ]
        for s in self.stats:
            worst = "-" if s.worst is None else f"{s.worst:.4g}"
            bound = str(s.limit)
            max_abs, max_rel = (f"{s.max_abs:.3g}", f"{s.max_rel:.3g}") if s.has_errors else ("-", "-")
            notes = f"  ({'; '.join(s.notes[:NOTES_SHOWN])})" if s.notes else ""
            lines.append(
                f"{s.name:<22} {max_abs:>10} {max_rel:>10}  {s.metric:<12} {worst:>10}  {bound:<11} "
                f"{'ok' if s.passed else 'FAIL'}{notes}"
            )
        tol = self.tolerance
        lines.append(
            f"boxes within = share of boxes off by <= {tol.box_px:.3g} px + {tol.box_rel:g} x their larger side; "
            f"kept = share of clear reference top-K rows / top-P peaks present; extra = share of engine rows "
            f"without a reference partner; ties within {tol.tie_band:.3g} are free"
        )
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def float64_copy(network: OMCNetwork) -> OMCNetwork:
    """A float64 deep copy of the reference network: its outputs minus the float32 ones are the
    float32 rounding of the reference itself (the noise floor)."""
    return copy.deepcopy(network).double()


def ort_sessions(engine_dir: Path, meta: EngineMeta, threads: int = 0) -> tuple[Any, Any | None]:
    """ONNX Runtime CPU sessions (all graph optimisations) for detector.onnx and recheck.onnx."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only (unused-initializer warnings are noise here)
    providers = ["CPUExecutionProvider"]

    def session(name: str) -> Any:
        path = engine_dir / name
        if not path.is_file():
            raise BadInput(f"{path} not found; export the engines first (omc export --out {engine_dir})")
        return ort.InferenceSession(str(path), options, providers=providers)

    detector = session(contract.DETECTOR_ONNX)
    recheck = session(contract.RECHECK_ONNX) if meta.has_recheck else None
    return detector, recheck


def _run(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def resolve_tracklet_counts(requested: Sequence[int], meta: EngineMeta) -> tuple[int, ...]:
    """The tracklet counts to verify, ascending without repeats; BadInput out of the export's range."""
    for count in requested:
        if not 1 <= count <= meta.max_tracklets:
            raise BadInput(f"tracklet count {count} is outside this export's 1 to {meta.max_tracklets}")
    return tuple(sorted(set(int(c) for c in requested)))


def check_frames(frames: Sequence[U8], meta: EngineMeta) -> np.ndarray:
    """Stack frames into uint8 [F, H, W, 3]; BadInput when there are none or one has another size."""
    if not frames:
        raise BadInput("no frames to verify with")
    for frame in frames:
        if frame.dtype != np.uint8 or frame.shape != (*meta.input_hw, 3):
            raise BadInput(f"verify frames must be uint8 {[*meta.input_hw, 3]}, got {frame.dtype} {list(frame.shape)}")
    return np.stack(frames)


def reference_side(
    network: OMCNetwork, images: U8, meta: EngineMeta, counts: Sequence[int], seed: int
) -> tuple[list[ReferenceFrame], list[RecheckCase], NoiseFloor]:
    """The reference's outputs for every frame and re-check case, and its float32 noise floor
    (the float32 reference against a float64 copy on the same inputs)."""
    precise = float64_copy(network)
    frames: list[ReferenceFrame] = []
    precise_frames: list[ReferenceFrame] = []
    noise = NoiseFloor()
    for start in range(0, len(images), meta.max_batch):
        batch = images[start : start + meta.max_batch]
        frames += reference_detector(network, batch)
        precise_frames += reference_detector(precise, batch)
    for first, second in zip(frames, precise_frames):
        noise = noise.worst(detector_noise(first, second))
    cases: list[RecheckCase] = []
    if meta.has_recheck:
        window = (meta.shrink_radius, meta.shrink_window, meta.global_point)
        for index, ref in enumerate(frames):
            top_cells = ref.cells[ref.ranked_rows()[: meta.topk]]
            for count in counts:
                tracklets = build_tracklets(ref.id_unit, top_cells, count, meta.shrink_radius, seed=seed + index)
                if len(tracklets.vectors) == 0:
                    continue
                heat = reference_heatmap(network, ref, tracklets.vectors, *window)
                again = reference_heatmap(precise, precise_frames[index], tracklets.vectors, *window)
                noise = noise.worst(heatmap_noise(heat, again))
                cases.append(RecheckCase(index, tracklets.vectors, heat))
    return frames, cases, noise


def verify_export(
    engine_dir: str | Path,
    network: OMCNetwork,
    frames: Sequence[U8],
    tracklet_counts: Sequence[int],
    *,
    seed: int = 0,
) -> VerifyReport:
    """Run the export in `engine_dir` and the float32 reference `network` on `frames`; compare.

    frames: uint8 [H, W, 3] BGR images of the export's input size. tracklet_counts: n values for
    the re-check (each 1 to the export's max_tracklets). network: float32, built for the
    export's input size. Returns the report; `passed` says whether it is within tolerance.
    """
    engine_dir = Path(engine_dir)
    meta = EngineMeta.load(engine_dir)
    if meta.precision not in COMPARISON_MODES:
        raise BadInput(f"no comparison mode for precision '{meta.precision}' (known: {', '.join(COMPARISON_MODES)})")
    mode = COMPARISON_MODES[meta.precision]
    if tuple(network.input_hw) != tuple(meta.input_hw):
        raise BadInput(f"the PyTorch network is built for {network.input_hw}, the export for {meta.input_hw}")
    images = check_frames(frames, meta)
    counts = resolve_tracklet_counts(tracklet_counts, meta) if meta.has_recheck else ()
    started = time.perf_counter()
    detector, recheck = ort_sessions(engine_dir, meta)
    references, cases, noise = reference_side(network, images, meta, counts, seed)
    tolerance = noise.widen(mode.tolerance)
    stats = ComparisonStats(tolerance)
    for start in range(0, len(images), meta.max_batch):
        engine = _run(detector, {contract.IMAGES: images[start : start + meta.max_batch]})
        for item in range(len(engine[contract.DET_SCORES])):
            index = start + item
            compare_detector(engine, item, references[index], stats)
            if recheck is None:
                continue
            maps = {name: engine[name][item : item + 1] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
            engine_maps = {name: maps[name][0] for name in (contract.ID_EMBEDDINGS, contract.RECHECK_BOXES)}
            for case in (c for c in cases if c.frame == index):
                outputs = _run(recheck, {**maps, contract.TRACKLETS: case.tracklets})
                compare_recheck(outputs, engine_maps, references[index], case.reference, stats)
    report = VerifyReport(
        meta.precision, mode, tolerance, noise, len(images), counts, tuple(stats.stats.values()),
        time.perf_counter() - started,
    )  # fmt: skip
    log.info("verified %s in %.1f s: %s", engine_dir, report.seconds, "PASSED" if report.passed else "FAILED")
    return report


def trt_feeds(
    frames: Sequence[U8], network: OMCNetwork, meta: EngineMeta, counts: Sequence[int], seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Feeds for export/trt/verify.compare_trt_with_onnxruntime: each frame with each count's tracklets."""
    images = check_frames(frames, meta)
    feeds: list[dict[str, np.ndarray]] = []
    for index in range(len(images)):
        batch = images[index : index + 1]
        if not meta.has_recheck:
            feeds.append({contract.IMAGES: batch})
            continue
        ref = reference_detector(network, batch)[0]
        top_cells = ref.cells[ref.ranked_rows()[: meta.topk]]
        for count in counts:
            tracklets = build_tracklets(ref.id_unit, top_cells, count, meta.shrink_radius, seed=seed + index)
            feeds.append({contract.IMAGES: batch, contract.TRACKLETS: tracklets.vectors})
    return feeds


def raise_if_failed(report: VerifyReport) -> None:
    """CheckFailed naming the outputs outside tolerance (the CLI's exit status 1)."""
    if not report.passed:
        raise CheckFailed(
            f"{', '.join(report.failures())} outside the {report.precision} tolerance ({report.mode.name})"
        )


# --- omc verify ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyOutcome:
    """What `verify` found: the comparison (ONNX Runtime vs PyTorch, or TensorRT vs ONNX Runtime)
    and, for an INT8 export, its drift from the float export it came from (None when that export
    or its calibration set is gone, or for other precisions)."""

    comparison: "VerifyReport | TrtComparison"
    drift: "DriftReport | None" = None

    @property
    def passed(self) -> bool:
        return self.comparison.passed and not self.drift_problems()

    def drift_problems(self) -> list[str]:
        return self.drift.violations() if self.drift is not None else []

    def text(self) -> str:
        """The drift table (INT8), then the comparison table, whose last line is PASSED or FAILED."""
        if isinstance(self.comparison, VerifyReport):
            table = self.comparison.table()
        else:
            table = self.comparison.summary()
        if self.drift is None:
            return table
        return "INT8 vs its float export\n" + self.drift.table() + "\n\n" + table

    def raise_if_failed(self) -> None:
        """CheckFailed naming what is outside the bounds (the CLI's exit status 1)."""
        if isinstance(self.comparison, VerifyReport):
            raise_if_failed(self.comparison)
        elif not self.comparison.passed:
            raise CheckFailed(
                f"TensorRT differs from ONNX Runtime beyond the {self.comparison.precision} tolerance"
            )
        problems = self.drift_problems()
        if problems:
            raise CheckFailed("INT8 drift outside the bounds: " + "; ".join(problems))


def verify(
    onnx_dir: str | Path | None,
    weights: WeightsSource = WeightsSource(),
    *,
    export_config: ExportConfig = ExportConfig(),
    frames: str | Path | None = None,
    config: VerifyConfig = VerifyConfig(),
    backend: str = "ort",
    device: int | str = 0,
) -> VerifyOutcome:
    """`omc verify`: an export against the float32 PyTorch reference (backend "ort") or its
    TensorRT plans against ONNX Runtime (backend "trt", needs a GPU).

    onnx_dir: the export; None exports `weights` with `export_config` to a temporary folder
    first (backend "ort" only). weights: the reference network; not given, the weights the
    export's export.json records. frames: video, image folder or MOTChallenge sequence (None:
    generated frames; for an INT8 export, its calibration set's held-out frames); config: how
    many frames (at most) and which tracklet counts n the re-check runs with. device: the GPU of backend "trt" (an index or "cuda:N").
    Raises BadInput (OmcError) for what the user can fix; the outcome says whether it passed.
    """
    if backend not in LOCAL_BACKENDS:  # each judged against the one before: ort vs PyTorch, trt vs ort
        raise BadInput(f"verify backend '{backend}' is not one of {', '.join(LOCAL_BACKENDS)}")
    if onnx_dir is None:
        weights.check()
        if backend == "trt":
            raise BadInput("--backend trt compares built TensorRT plans: pass the folder that holds them with --onnx")
        from omc.export.onnx_export import export_engines

        width, height = export_config.img_size
        loaded = weights.load((height, width))
        with tempfile.TemporaryDirectory(prefix="omc-verify-") as folder:
            export_engines(loaded, export_config, folder, seed=weights.export_seed)
            return _verify_folder(Path(folder), EngineMeta.load(folder), loaded, frames, config, backend, device)
    onnx_dir = Path(onnx_dir)
    meta = EngineMeta.load(onnx_dir)
    if backend == "trt":
        from omc.export.trt.verify import check_plans_run_here

        check_plans_run_here(onnx_dir, meta, device)  # before any weights load
    return _verify_folder(onnx_dir, meta, weights_of_export(meta, weights), frames, config, backend, device)


def _verify_folder(
    folder: Path, meta: EngineMeta, loaded: "LoadedCheckpoint", source: str | Path | None, config: VerifyConfig,
    backend: str, device: int | str,
) -> VerifyOutcome:
    counts = config.tracklet_counts(meta.max_tracklets)
    max_frames = config.max_frames
    hw = meta.input_hw
    images = generated_frames(hw, max_frames) if source is None else source_frames(source, hw, max_frames)
    if source is None and meta.precision == "int8":
        # INT8 ranges hold for frames like the calibration footage: its held-out frames (omc.calib).
        from omc.calib.dataset import holdout_frames

        images = holdout_frames(meta, max_frames) or images
    if backend == "trt":
        from omc.export.trt.verify import compare_trt_with_onnxruntime

        feeds = trt_feeds(images, loaded.network, meta, counts)
        return VerifyOutcome(compare_trt_with_onnxruntime(folder, feeds, meta.precision, device))
    report = verify_export(folder, loaded.network, images, counts)
    if meta.precision != "int8":
        return VerifyOutcome(report)
    # Against the float export it was quantized from, on the calibration set's held-out frames:
    # score, box and embedding drift and the change in detections kept after NMS.
    from omc.calib.drift import recorded_drift

    return VerifyOutcome(report, recorded_drift(folder, meta))
