"""omc.benchmarks.runner: the backends take turns frame by frame in every pass, so every ratio of
a report compares frames timed in the same conditions."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from omc.benchmarks.pipelines import Cells, FramePipeline, Prepared
from omc.benchmarks.runner import run_backends
from omc.config import BenchConfig, TrackerConfig
from omc.contract import EngineMeta
from omc.runtime.detections import FrameDetections
from omc.runtime.letterbox import LetterboxTransform, letterbox

META = EngineMeta(input_hw=(64, 96), max_batch=2, max_tracklets=8, has_recheck=True)


class LoggingPipeline(FramePipeline):
    """A pipeline without engines that logs (name, call) to a shared list."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name, self.calls = name, calls
        self.meta, self.config, self.description = META, TrackerConfig(), {}

    def letterbox(self, frame: np.ndarray) -> Prepared:
        self.calls.append((self.name, "frame"))
        images, transform = letterbox(frame, self.meta.input_hw)
        return Prepared(images, transform)

    def to_device(self, prepared: Prepared) -> Any:
        return prepared.array

    def detect(self, images: Any) -> Any:
        self.calls.append((self.name, f"detect {len(images)}"))
        return images

    def tracklet_rows(self, detected: Any, cells: Cells) -> Any:
        return np.zeros((len(cells[0]), 4), np.float32)

    def recheck(self, detected: Any, tracklets: Any) -> Any:
        self.calls.append((self.name, f"recheck {len(tracklets)}"))
        return tracklets

    def to_host(self, detected: Any, rechecked: Any | None) -> tuple[Any, Any | None]:
        return detected, rechecked

    def detections(self, host_detected: Any, host_rechecked: Any | None, transform: LetterboxTransform) -> FrameDetections:
        empty = np.zeros((0, 4), np.float32)
        return FrameDetections(empty, empty, np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                               np.zeros(0, bool), np.zeros(0, np.int64))  # fmt: skip

    def batch_input(self, prepared: Prepared, batch: int) -> Any:
        return np.repeat(prepared.array, batch, axis=0)


def test_backends_take_turns_frame_by_frame_in_both_passes_and_the_batch_sweep() -> None:
    calls: list[tuple[str, str]] = []
    pipelines = {name: LoggingPipeline(name, calls) for name in ("a", "b")}
    config = BenchConfig(frames=2, warmup=1, tracklets=(0, 2), headline_tracklets=2, batch=(1, 2), batch_repeats=2)
    frame = np.full((48, 80, 3), 100, np.uint8)
    runs = run_backends(pipelines, lambda: itertools.repeat(frame), config)
    frames = [name for name, call in calls if call == "frame"]
    # 3 frames per pass, 2 passes; the order alternates from frame to frame.
    assert frames == ["a", "b", "b", "a", "a", "b"] * 2
    # OMC pass: each frame's in-frame re-check (n = 2) and the sweep's call (n = 2) run before the
    # other backend's frame starts; the CSTrack pass has no re-check call.
    first_frame = calls[: calls.index(("b", "frame"))]
    assert first_frame == [("a", "frame"), ("a", "detect 1"), ("a", "recheck 2"), ("a", "recheck 2")]
    assert sum(call.startswith("recheck") for _, call in calls) == 2 * 2 * 3
    # Batches: one untimed call each, then the backends alternate call by call.
    sweep = [(name, call) for name, call in calls[-12:]]
    assert sweep == [("a", "detect 1"), ("b", "detect 1")] * 3 + [("a", "detect 2"), ("b", "detect 2")] * 3
    for run in runs.values():
        assert len(run.omc) == len(run.cstrack) == 2
        assert sorted(run.batch_ms) == [1, 2] and all(len(v) == 2 for v in run.batch_ms.values())
        assert [len(v) for v in run.recheck_by_n.values()] == [2, 2]
