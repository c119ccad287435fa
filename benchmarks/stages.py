"""Per-frame stage timings and their statistics.

A frame of the tracker is timed stage by stage (`STAGES`, in pipeline order); `total` is the sum
of the stages of that frame, not a separate clock, so the per-stage table always adds up.
Statistics are medians and 90th percentiles over the timed frames (robust to the odd slow frame
of a shared machine); end-to-end frames per second are 1000 / median total.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

# What one frame costs, in pipeline order. letterbox: decode-side pre-processing (resize, pad and,
# for the PyTorch path, the float NCHW conversion); h2d / d2h: placing the input where the engine
# reads it and bringing back what the host reads (copies within host memory on a CPU);
# nms_fusion: threshold, cluster-DIoU NMS and fusion of re-check boxes; association: Kalman,
# embedding and IoU matching and the track life cycle.
STAGES = ("letterbox", "h2d", "detector", "recheck", "d2h", "nms_fusion", "association")
TOTAL = "total"
STAGES_AND_TOTAL = STAGES + (TOTAL,)
# The percentile reported beside the median.
TAIL_PERCENTILE = 90.0

T = TypeVar("T")


@dataclass(frozen=True)
class StageStats:
    """Statistics of one stage over the timed frames, milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ms: Iterable[float]) -> StageStats:
    """Median, 90th percentile, mean and minimum of `samples_ms` (at least one value)."""
    values = np.asarray(list(samples_ms), np.float64)
    if values.size == 0:
        raise ValueError("summarize needs at least one sample")
    return StageStats(
        median_ms=float(np.median(values)),
        p90_ms=float(np.percentile(values, TAIL_PERCENTILE)),
        mean_ms=float(values.mean()),
        min_ms=float(values.min()),
        samples=int(values.size),
    )


def timed(function: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """(function(*args, **kwargs), wall-clock milliseconds it took)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, (time.perf_counter() - start) * 1e3


@dataclass
class FrameTimings:
    """Per-frame stage times of one run: `add(frame)` once per timed frame, then `stats()`.

    A stage missing from a frame counts 0 ms (e.g. no re-check call at n = 0).
    """

    frames: list[dict[str, float]] = field(default_factory=list)

    def add(self, stage_ms: Mapping[str, float]) -> None:
        unknown = sorted(set(stage_ms) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {STAGES}")
        frame = {stage: float(stage_ms.get(stage, 0.0)) for stage in STAGES}
        frame[TOTAL] = sum(frame[stage] for stage in STAGES)
        self.frames.append(frame)

    def __len__(self) -> int:
        return len(self.frames)

    def samples(self, stage: str) -> list[float]:
        return [frame[stage] for frame in self.frames]

    def stats(self) -> dict[str, StageStats]:
        """Stage (and total) -> statistics over the frames added so far (at least one)."""
        return {stage: summarize(self.samples(stage)) for stage in STAGES_AND_TOTAL}


def fps_from(total: StageStats) -> float:
    """End-to-end frames per second of a run: 1000 / median total ms (0 when the median is 0)."""
    return 1e3 / total.median_ms if total.median_ms > 0 else 0.0
