"""Time one backend over the benchmark's frames: stages, the tracklet sweep, OMC vs CSTrack, batches.

Per frame (warm-up frames first, untimed):
1. letterbox (with the source's decode when frames come from a file), h2d, detector;
2. the re-check once per tracklet count n of the sweep (n = 0: no call), each with n synthetic
   tracklet rows from the frame's own ID map at seeded cells (omc.benchmarks.pipelines);
3. d2h of the detector's and the headline n's re-check outputs;
4. host, twice on two trackers: as OMC (NMS + fusion of the headline re-check's boxes +
   association) and as CSTrack (the same engines without the re-check call).

The OMC frame is letterbox + h2d + detector + re-check(headline n) + d2h + NMS/fusion +
association; the CSTrack frame drops the re-check and uses its own host stages. Then the
detector alone per batch size. Results are plain JSON-able dicts (omc.benchmarks.report).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omc.config import BenchConfig
from omc.errors import BadInput

from omc.benchmarks.association import DetectionsTracker
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
            sweep.append({"n": n, "recheck": recheck.to_dict(), "total": total.to_dict(), "fps": fps_from(total)})
        detector = stages["detector"].median_ms
        recheck_headline = stages["recheck"].median_ms
        return {
            "status": "ok",
            "tracklets": headline_tracklets,
            "stages": {name: s.to_dict() for name, s in stages.items()},
            "fps": fps,
            "recheck_share_of_total": _share(recheck_headline, stages["total"].median_ms),
            "recheck_vs_detector": {"n": headline_tracklets, "share": _share(recheck_headline, detector)},
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


def run_backend(
    pipeline: FramePipeline,
    frames: Iterator[FrameBGR],
    config: BenchConfig,
    progress: Callable[[int], None] = lambda done: None,
) -> BackendRun:
    """Time `pipeline` on `config.warmup + config.frames` frames drawn from `frames`, then its batches.

    frames: an endless iterator of uint8 BGR frames; drawing one is timed as part of letterbox
    (a file source decodes lazily; a generated clip is already in memory).
    progress: called with the number of frames done, for a progress bar.
    """
    check_limits(pipeline, config)
    counts = [n for n in config.tracklet_counts if n > 0] if pipeline.has_recheck else []
    if not pipeline.has_recheck and config.headline_tracklets > 0:
        log.warning("%s: the export has no re-check network; every n counts as 0", pipeline.name)
    headline = config.headline_tracklets if pipeline.has_recheck else 0
    largest = max(counts, default=0)
    omc_tracker = DetectionsTracker.for_meta(pipeline.meta, pipeline.config)
    cstrack_tracker = DetectionsTracker.for_meta(pipeline.meta, pipeline.config)
    run = BackendRun(recheck_by_n={n: [] for n in config.tracklet_counts})
    prepared = None
    for index in range(config.warmup + config.frames):
        timed_frame = index >= config.warmup
        t0 = _clock()
        frame = next(frames)
        prepared = pipeline.letterbox(frame)
        t1 = _clock()
        images = pipeline.to_device(prepared)
        t2 = _clock()
        detected = pipeline.detect(images)
        t3 = _clock()
        cells = tracklet_cells(config.seed, index, pipeline.meta.map_hw, largest)
        recheck_ms: dict[int, float] = {}
        headline_out = None
        for n in counts:
            tracklets = pipeline.tracklet_rows(detected, (cells[0][:n], cells[1][:n]))
            start = _clock()
            out = pipeline.recheck(detected, tracklets)
            recheck_ms[n] = (_clock() - start) * 1e3
            if n == headline:
                headline_out = out
        t4 = _clock()
        host_detected, host_rechecked = pipeline.to_host(detected, headline_out)
        t5 = _clock()
        detections = pipeline.detections(host_detected, host_rechecked, prepared.transform)
        t6 = _clock()
        omc_tracker.track_detections(detections)
        t7 = _clock()
        baseline = pipeline.detections(host_detected, None, prepared.transform)
        t8 = _clock()
        cstrack_tracker.track_detections(baseline)
        t9 = _clock()
        if timed_frame:
            shared = {"letterbox": (t1 - t0) * 1e3, "h2d": (t2 - t1) * 1e3, "detector": (t3 - t2) * 1e3, "d2h": (t5 - t4) * 1e3}
            run.omc.add({**shared, "recheck": recheck_ms.get(headline, 0.0), "nms_fusion": (t6 - t5) * 1e3, "association": (t7 - t6) * 1e3})
            run.cstrack.add({**shared, "nms_fusion": (t8 - t7) * 1e3, "association": (t9 - t8) * 1e3})
            for n in run.recheck_by_n:
                run.recheck_by_n[n].append(recheck_ms.get(n, 0.0))
            run.detections_per_frame.append(len(detections))
            run.restored_per_frame.append(int(detections.restored.sum()))
        progress(index + 1)
    if prepared is not None:
        run.batch_ms = time_batches(pipeline, prepared, config)
    return run


def time_batches(pipeline: FramePipeline, prepared: Any, config: BenchConfig) -> dict[int, list[float]]:
    """Detector milliseconds per call for each batch size (copies of one frame), after one untimed call."""
    results: dict[int, list[float]] = {}
    for batch in config.batch:
        images = pipeline.batch_input(prepared, batch)
        pipeline.detect(images)
        samples = []
        for _ in range(config.batch_repeats):
            start = _clock()
            pipeline.detect(images)
            samples.append((_clock() - start) * 1e3)
        results[batch] = samples
    return results


__all__ = ["STAGES", "BackendRun", "check_limits", "run_backend", "time_batches", "tracklet_cells"]
