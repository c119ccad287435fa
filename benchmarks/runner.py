"""Time the backends over the benchmark's frames, interleaved: stages, the tracklet sweep, OMC vs
CSTrack, batches.

Every backend runs in the same conditions: frame by frame, each backend takes its turn on the
same frame index before the next index starts (the order alternates from frame to frame), so a
burst of load from another process lands on all of them, and every ratio of a report compares
like with like. Three parts, warm-up frames first (untimed):

1. OMC: letterbox (with the source's decode when frames come from a file), h2d, detector, the
   re-check with n = headline synthetic tracklets (rows of the frame's own ID map at seeded
   cells, omc.benchmarks.pipelines), d2h, NMS + fusion, association: the frame as the tracker
   runs it with n live tracks. After the frame's host stages, the re-check once more for every
   n of the sweep, the headline n included, so all points of the sweep are timed alike (the
   in-frame call follows the detector directly, which can cost it more: e.g. ONNX Runtime's
   detector threads still spinning).
2. CSTrack: the same engines without any re-check call (the paper's comparison). A separate
   pass, because a re-check call also changes what runs around it (its thread pool, caches).
3. Batches: detector milliseconds per call for each batch size, the backends alternating call
   by call.

One function (`_time_frame`) times a frame of either pass. Results are plain JSON-able dicts
(omc.benchmarks.report).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omc.config import BenchConfig
from omc.errors import BadInput
from omc.runtime.detections import FrameDetections
from omc.runtime.tracker import Tracker

from omc.benchmarks.association import detections_tracker
from omc.benchmarks.pipelines import FramePipeline, FrameBGR
from omc.benchmarks.stages import STAGES, FrameTimings, StageStats, fps_from, summarize

log = logging.getLogger(__name__)


@dataclass
class BackendRun:
    """What one backend measured (statistics in ms)."""

    omc: FrameTimings = field(default_factory=FrameTimings)
    cstrack: FrameTimings = field(default_factory=FrameTimings)
    recheck_by_n: dict[int, list[float]] = field(default_factory=dict)
    batch_ms: dict[int, list[float]] = field(default_factory=dict)
    detections_per_frame: list[int] = field(default_factory=list)
    restored_per_frame: list[int] = field(default_factory=list)
    # The last frame prepared (the batch sweep's input).
    last_prepared: Any = None

    def record(
        self, stage_ms: Mapping[str, float], sweep_ms: Mapping[int, float], detections: FrameDetections, *, omc: bool,
        timed: bool,
    ) -> None:
        """Keep one frame's figures (timed frames only): OMC frames with their sweep and
        detection counts, CSTrack frames without a re-check stage."""
        if not timed:
            return
        if not omc:
            self.cstrack.add({stage: ms for stage, ms in stage_ms.items() if stage != "recheck"})
            return
        self.omc.add(stage_ms)
        for n in self.recheck_by_n:
            self.recheck_by_n[n].append(sweep_ms.get(n, 0.0))
        self.detections_per_frame.append(len(detections))
        self.restored_per_frame.append(int(detections.restored.sum()))

    def summary(self, headline_tracklets: int) -> dict[str, Any]:
        """JSON-able results: stages, fps, tracklet sweep, OMC vs CSTrack, batch sweep."""
        stages = self.omc.stats()
        cstrack = self.cstrack.stats()
        fps = fps_from(stages["total"])
        fps_cstrack = fps_from(cstrack["total"])
        without_recheck = np.array(self.omc.samples("total")) - np.array(self.omc.samples("recheck"))
        sweep = []
        for n, samples in sorted(self.recheck_by_n.items()):
            recheck = summarize(samples)
            total = summarize(without_recheck + np.array(samples))
            # The frame at n: its other stages as measured with the headline n, plus the re-check at n.
            sweep.append({"n": n, "recheck": recheck.to_dict(), "frame_estimate": total.to_dict(),
                          "fps_estimate": fps_from(total)})
        detector = stages["detector"].median_ms
        recheck_headline = stages["recheck"].median_ms
        alone_samples = self.recheck_by_n.get(headline_tracklets, [])
        alone = summarize(alone_samples).median_ms if alone_samples else 0.0
        return {
            "status": "ok",
            "tracklets": headline_tracklets,
            "stages": {name: s.to_dict() for name, s in stages.items()},
            "fps": fps,
            "recheck_share_of_total": _share(recheck_headline, stages["total"].median_ms),
            # In the frame (right after the detector) and alone (the sweep's call at the same n).
            "recheck_vs_detector": {
                "n": headline_tracklets,
                "share": _share(recheck_headline, detector),
                "share_engine_alone": _share(alone, detector),
            },
            "omc_vs_cstrack": {
                "n": headline_tracklets,
                "cstrack_stages": {name: s.to_dict() for name, s in cstrack.items()},
                "fps_omc": fps,
                "fps_cstrack": fps_cstrack,
                "time_increase": _share(stages["total"].median_ms, cstrack["total"].median_ms) - 1.0
                if cstrack["total"].median_ms > 0 else 0.0,
            },
            "tracklet_sweep": sweep,
            "batch_sweep": [_batch_entry(b, samples) for b, samples in sorted(self.batch_ms.items())],
            "frames": len(self.omc),
            "median_detections": int(np.median(self.detections_per_frame)) if self.detections_per_frame else 0,
            "median_restored": int(np.median(self.restored_per_frame)) if self.restored_per_frame else 0,
        }


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def _batch_entry(batch: int, samples: list[float]) -> dict[str, Any]:
    stats: StageStats = summarize(samples)
    per_image = stats.median_ms / batch
    return {
        "batch": batch,
        **stats.to_dict(),
        "per_image_ms": per_image,
        "images_per_s": 1e3 / per_image if per_image > 0 else 0.0,
    }


def check_limits(pipeline: FramePipeline, config: BenchConfig) -> None:
    """Refuse sweeps the engines cannot run (before any frame is timed)."""
    meta = pipeline.meta
    too_big = [b for b in config.batch if b > meta.max_batch]
    if too_big:
        raise BadInput(
            f"--batch {', '.join(map(str, too_big))} exceeds the export's max batch {meta.max_batch}; "
            "re-export with a larger --max-batch or choose smaller sizes"
        )
    too_many = [n for n in config.tracklet_counts if n > meta.max_tracklets]
    if too_many:
        raise BadInput(
            f"--tracklets {', '.join(map(str, too_many))} exceeds the export's max of {meta.max_tracklets} tracklets; "
            "re-export with a larger --max-tracklets"
        )


def tracklet_cells(seed: int, frame_index: int, map_hw: tuple[int, int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct (rows, cols) cells of the map, seeded by (seed, frame_index): the same for
    every backend. Prefixes give the smaller counts of the sweep."""
    h, w = map_hw
    rng = np.random.default_rng((seed, frame_index))
    flat = rng.choice(h * w, size=min(count, h * w), replace=False)
    return (flat // w).astype(np.int64), (flat % w).astype(np.int64)


def _clock() -> float:
    return time.perf_counter()


@dataclass
class _Lane:
    """One backend's state in an interleaved pass: its frames, tracker and recheck plan."""

    pipeline: FramePipeline
    frames: Iterator[FrameBGR]
    tracker: Tracker
    headline: int
    sweep: list[int]
    run: BackendRun
    prepared: Any = None


def _plan(pipeline: FramePipeline, config: BenchConfig) -> tuple[int, list[int]]:
    """(headline n, sweep counts) of a backend: 0 and [] without a re-check network."""
    if not pipeline.has_recheck:
        if config.headline_tracklets > 0:
            log.warning("%s: the export has no re-check network; every n counts as 0", pipeline.name)
        return 0, []
    return config.headline_tracklets, [n for n in config.tracklet_counts if n > 0]


def run_backends(
    pipelines: Mapping[str, FramePipeline],
    frames: Callable[[], Iterator[FrameBGR]],
    config: BenchConfig,
    progress: Callable[[int], None] = lambda done: None,
) -> dict[str, BackendRun]:
    """Time every pipeline as OMC, then as CSTrack, each on `config.warmup + config.frames` frames,
    then batches; the backends interleaved frame by frame (module docstring).

    frames: makes an endless iterator of uint8 BGR frames (called once per backend and pass, so
    every backend sees the same frames); drawing one is timed as part of letterbox (a file
    source decodes lazily; a generated clip is already in memory).
    progress: called with the number of frames done over both passes and all backends.
    """
    for pipeline in pipelines.values():
        check_limits(pipeline, config)
    runs = {name: BackendRun(recheck_by_n={n: [] for n in config.tracklet_counts}) for name in pipelines}
    done = 0
    for recheck in (True, False):
        lanes = []
        for name, pipeline in pipelines.items():
            headline, sweep = _plan(pipeline, config) if recheck else (0, [])
            lanes.append(_Lane(pipeline, frames(), detections_tracker(pipeline.meta, pipeline.config), headline, sweep,
                               runs[name]))  # fmt: skip
        for index in range(config.warmup + config.frames):
            # Alternate the order, so no backend always runs right after the same other one.
            for lane in lanes if index % 2 == 0 else lanes[::-1]:
                stage_ms, sweep_ms, detections = _time_frame(lane, index, config.seed)
                lane.run.record(stage_ms, sweep_ms, detections, omc=recheck, timed=index >= config.warmup)
                done += 1
                progress(done)
        for lane in lanes:
            lane.run.last_prepared = lane.prepared
    batch_ms = time_batches({name: (p, runs[name].last_prepared) for name, p in pipelines.items()}, config)
    for name, samples in batch_ms.items():
        runs[name].batch_ms = samples
    return runs


def _time_frame(lane: _Lane, index: int, seed: int) -> tuple[dict[str, float], dict[int, float], FrameDetections]:
    """Time one frame of a lane: (ms per stage, re-check ms per sweep n, the frame's detections).

    With a headline n > 0 the re-check runs in the frame on n synthetic tracklets; after the
    frame's host stages it runs once more for each n of the sweep.
    """
    pipeline = lane.pipeline
    largest = max([lane.headline, *lane.sweep])
    t0 = _clock()
    prepared = pipeline.letterbox(next(lane.frames))
    t1 = _clock()
    images = pipeline.to_device(prepared)
    t2 = _clock()
    detected = pipeline.detect(images)
    t3 = _clock()
    cells = tracklet_cells(seed, index, pipeline.meta.map_hw, largest) if largest else None
    rechecked = None
    recheck_ms = 0.0
    if lane.headline > 0 and cells is not None:
        # The rows stand in for the tracker's own tracklets: building them is not timed.
        tracklets = pipeline.tracklet_rows(detected, (cells[0][: lane.headline], cells[1][: lane.headline]))
        start = _clock()
        rechecked = pipeline.recheck(detected, tracklets)
        recheck_ms = (_clock() - start) * 1e3
    t4 = _clock()
    host_detected, host_rechecked = pipeline.to_host(detected, rechecked)
    t5 = _clock()
    detections = pipeline.detections(host_detected, host_rechecked, prepared.transform)
    t6 = _clock()
    lane.tracker.update_from_detections(detections)
    t7 = _clock()
    sweep_ms = {n: _time_recheck(pipeline, detected, cells, n) for n in lane.sweep} if cells is not None else {}
    lane.prepared = prepared
    stage_ms = {
        "letterbox": (t1 - t0) * 1e3, "h2d": (t2 - t1) * 1e3, "detector": (t3 - t2) * 1e3, "recheck": recheck_ms,
        "d2h": (t5 - t4) * 1e3, "nms_fusion": (t6 - t5) * 1e3, "association": (t7 - t6) * 1e3,
    }  # fmt: skip
    return stage_ms, sweep_ms, detections


def _time_recheck(pipeline: FramePipeline, detected: Any, cells: tuple[np.ndarray, np.ndarray], n: int) -> float:
    tracklets = pipeline.tracklet_rows(detected, (cells[0][:n], cells[1][:n]))
    start = _clock()
    pipeline.recheck(detected, tracklets)
    return (_clock() - start) * 1e3


def time_batches(
    pipelines: Mapping[str, tuple[FramePipeline, Any]], config: BenchConfig
) -> dict[str, dict[int, list[float]]]:
    """Detector milliseconds per call for each batch size (copies of one prepared frame) and
    backend, the backends alternating call by call, after one untimed call each.

    pipelines: name -> (pipeline, a prepared frame of it)."""
    results: dict[str, dict[int, list[float]]] = {name: {} for name in pipelines}
    for batch in config.batch:
        inputs = {name: pipeline.batch_input(prepared, batch) for name, (pipeline, prepared) in pipelines.items()}
        for name, (pipeline, _) in pipelines.items():
            pipeline.detect(inputs[name])
            results[name][batch] = []
        for _ in range(config.batch_repeats):
            for name, (pipeline, _) in pipelines.items():
                start = _clock()
                pipeline.detect(inputs[name])
                results[name][batch].append((_clock() - start) * 1e3)
    return results


__all__ = ["STAGES", "BackendRun", "check_limits", "run_backends", "time_batches", "tracklet_cells"]
