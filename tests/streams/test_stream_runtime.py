"""The multi-stream runtime: batching across streams, per-stream trackers and ids, latest-frame mode,
failures that stay in their stream, gaps, and adding/removing streams while it runs.

Fast cases run on the toy engines (tests/toy_engines.py); the equivalence with tracking each file
alone runs the small real export (tests/small_export.py) so that the re-check and the tracker do
real work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from scripted_scenes import NET_HW, Scene, SceneDetector, SceneRecheck, ScriptedObject, scene_meta, walk

from omc.config import StreamConfig, TrackerConfig
from omc.runtime import StreamRuntime, StreamSpec, Tracker
from omc.runtime.backends import open_engine_pair
from omc.runtime.engines import BackendPair, NetworkOutputs
from omc.runtime.sources import FrameSource, open_source
from omc.runtime.stream_reader import StreamState

W, H = 320, 192
# Boxes of a stream tracked in a batch against the same file tracked alone: ONNX Runtime may pick
# other kernels for B > 1, whose float32 sums differ in the last bits; a few 1e-5 of a pixel after
# the Kalman filter. 1e-2 px is far below anything a box is used for and far above that noise.
BOX_NOISE_PX = 1e-2


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def moving_frames(count: int, seed: int, size: tuple[int, int] = (W, H)) -> list[np.ndarray]:
    """Frames whose brightness varies (the toy detector's boxes follow the mean brightness)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200)
    frames = []
    for i in range(count):
        frame = np.full((size[1], size[0], 3), (base + 3 * i) % 256, np.uint8)
        cv2.rectangle(frame, (10 + 4 * i, 20), (60 + 4 * i, 150), (230, 230, 230), -1)
        frames.append(frame)
    return frames


def collect(runtime: StreamRuntime) -> dict[str, list]:
    out: dict[str, list] = {}
    for result in runtime.results():
        out.setdefault(result.stream, []).append(result)
    return out


def tracks_alone(engine_dir: Path, source: Path, config: TrackerConfig) -> list[list[tuple[int, np.ndarray]]]:
    with Tracker.from_engines(engine_dir, config=config, frame_rate=25.0) as tracker, open_source(source) as frames:
        return [[(t.track_id, t.box.copy()) for t in tracker.update(frame)] for _, frame in frames]


# --- equivalence and batching ----------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [True, False], ids=["detector-ahead", "one-after-the-other"])
def test_batched_streams_track_each_file_as_if_alone(tmp_path: Path, overlap: bool) -> None:
    """Three file streams through the batched path: every stream gets the tracks of its file
    tracked alone (ids exactly, boxes within BOX_NOISE_PX), and batches of 2-3 frames were formed.
    With the detector one batch ahead (ONNX Runtime allows it), detector batches started while
    the batch before was still in its host work."""
    from small_export import small_export  # the tests' small random network; a low threshold gives it tracks

    from omc.benchmarks.clip import generated_clip

    engines = small_export()
    config = TrackerConfig(conf_thres=0.05)
    clips = [write_video(tmp_path / f"clip{seed}.mp4", generated_clip((W, H), 12, seed=seed)) for seed in range(3)]
    specs = [StreamSpec(clip.stem, clip, tracker=config) for clip in clips]
    stream_config = StreamConfig(batch_wait_ms=200, max_batch=4, overlap="on" if overlap else "off")
    with StreamRuntime.from_engines(engines, specs, config=stream_config) as runtime:
        got = collect(runtime)
        sizes = dict(runtime.batch_sizes)
        health = runtime.health()
        assert runtime.overlaps is overlap
        overlapped = runtime.batches_overlapped
    assert overlapped >= 1 if overlap else overlapped == 0
    assert max(sizes) >= 2 and sum(size * n for size, n in sizes.items()) == 36, sizes
    assert sum(n for size, n in sizes.items() if size == 3) >= 6, sizes  # most frames went three at a time
    total_tracks = 0
    for clip in clips:
        alone = tracks_alone(engines, clip, config)
        batched = got[clip.stem]
        assert [r.frame_index for r in batched] == list(range(1, 13))
        assert health[clip.stem].state == "finished" and health[clip.stem].frames_tracked == 12
        for frame_alone, result in zip(alone, batched):
            assert [i for i, _ in frame_alone] == [t.track_id for t in result.tracks]
            for (_, box), track in zip(frame_alone, result.tracks):
                np.testing.assert_allclose(track.box, box, atol=BOX_NOISE_PX)
            total_tracks += len(frame_alone)
    assert total_tracks > 20  # the comparison compared something


def test_ids_never_leak_between_streams(tmp_path: Path, toy_engines: Path) -> None:
    clip = write_video(tmp_path / "a.mp4", moving_frames(8, 0))
    specs = [StreamSpec("one", clip), StreamSpec("two", clip)]
    with StreamRuntime.from_engines(toy_engines, specs, config=StreamConfig(batch_wait_ms=200, max_batch=4)) as runtime:
        got = collect(runtime)
    one = [[t.track_id for t in r.tracks] for r in got["one"]]
    two = [[t.track_id for t in r.tracks] for r in got["two"]]
    assert one == two and min(i for ids in one for i in ids) == 1  # each stream counts from 1
    assert runtime.batch_sizes[2] >= 6


# --- latest-frame mode -----------------------------------------------------------------------------


class FastCamera(FrameSource):
    """A live source sending `fps` frames a second for `seconds` (faster than the engines)."""

    is_live = True

    def __init__(self, fps: float, seconds: float) -> None:
        super().__init__("camera://fast", "fast", fps, None)
        self.count = int(fps * seconds)

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        frames = moving_frames(16, 3)
        start = time.perf_counter()
        for index in range(1, self.count + 1):
            delay = start + index / self.frame_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield index, frames[index % len(frames)]


class SlowPair:
    """Engines that take `seconds` per batch (sleeping: a GPU busy elsewhere)."""

    def __init__(self, pair: BackendPair, seconds: float) -> None:
        self.pair, self.seconds = pair, seconds

    def run(self, images: np.ndarray, tracklets: list) -> list[NetworkOutputs]:
        time.sleep(self.seconds)
        return self.pair.run(images, tracklets)

    def close(self) -> None:
        self.pair.close()


def test_latest_frame_mode_keeps_latency_bounded_and_counts_drops(toy_engines: Path) -> None:
    engine_seconds = 0.05
    pair, meta = open_engine_pair(toy_engines)
    camera_fps, seconds = 100.0, 3.0
    spec = StreamSpec("fast", lambda: FastCamera(camera_fps, seconds), max_frames=None)
    config = StreamConfig(reconnect_initial_s=60.0, reconnect_max_s=60.0, max_reconnect_attempts=1)
    with StreamRuntime(SlowPair(pair, engine_seconds), meta, [spec], config, own_engines=True) as runtime:
        latencies, skipped = [], 0
        for result in runtime.results():
            latencies.append(result.latency_ms)
            skipped += result.skipped
            if result.frame_index > camera_fps * seconds - 5:
                break
        health = runtime.health()["fast"]
    # Drops are counted, and handed on as `skipped` with the next tracked frame (the last
    # frame's may still be queued when the loop stops).
    assert health.frames_dropped > 100 and health.frames_dropped - 10 <= skipped <= health.frames_dropped
    # Each tracked frame waits for about one engine run besides its own. Had the 250 frames of
    # backlog per 100 tracked queued up instead, latency would climb by seconds over the run.
    assert np.percentile(latencies, 99) < 8 * engine_seconds * 1e3, latencies
    third = len(latencies) // 3
    assert np.median(latencies[-third:]) < np.median(latencies[:third]) + 2 * engine_seconds * 1e3, latencies


# --- failures stay in their stream -----------------------------------------------------------------


def test_bad_streams_fail_alone(tmp_path: Path, toy_engines: Path) -> None:
    good = write_video(tmp_path / "good.mp4", moving_frames(10, 1))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    resized = tmp_path / "resized"
    resized.mkdir()
    for i, frame in enumerate(moving_frames(3, 2), 1):
        cv2.imwrite(str(resized / f"{i:06d}.png"), frame if i < 3 else cv2.resize(frame, (W + 32, H)))
    from rtsp import free_port

    unreachable = f"rtsp://127.0.0.1:{free_port()}/nobody"
    config = StreamConfig(open_timeout_s=2.0, reconnect_initial_s=0.05, reconnect_max_s=0.1, max_reconnect_attempts=2)
    specs = [StreamSpec("good", good), StreamSpec("corrupt", corrupt), StreamSpec("resized", resized), StreamSpec("gone", unreachable)]
    with StreamRuntime.from_engines(toy_engines, specs, config=config) as runtime:
        got = collect(runtime)
        health = runtime.health()
    assert [r.frame_index for r in got["good"]] == list(range(1, 11))
    assert health["good"].state == "finished" and health["good"].last_error is None
    assert health["corrupt"].state == "failed" and "cannot open video" in (health["corrupt"].last_error or "")
    assert health["resized"].state == "failed" and "must have the same size" in (health["resized"].last_error or "")
    assert [r.frame_index for r in got["resized"]] == [1, 2]  # frames before the change were tracked
    assert health["gone"].state == "failed" and "gave up after 2 reconnect attempts" in (health["gone"].last_error or "")
    assert "corrupt" not in got and "gone" not in got


# --- gaps --------------------------------------------------------------------------------------------


class FlakyCamera(FrameSource):
    """A live source that sends `frames` frames and then stops (a camera dropping out)."""

    is_live = True
    opened = 0

    def __init__(self, frames: int) -> None:
        super().__init__("camera://flaky", "flaky", 25.0, None)
        self.frames = frames
        type(self).opened += 1

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        images = moving_frames(self.frames, 4)
        for index in range(1, self.frames + 1):
            time.sleep(0.01)
            yield index, images[index - 1]


def test_a_reconnect_shows_in_results_and_health(toy_engines: Path) -> None:
    FlakyCamera.opened = 0
    gap_s = 0.4
    config = StreamConfig(reconnect_initial_s=gap_s, reconnect_max_s=gap_s)
    spec = StreamSpec("flaky", lambda: FlakyCamera(5), mode="every", max_frames=10)
    with StreamRuntime.from_engines(toy_engines, [spec], config=config) as runtime:
        results = list(runtime.results())
        health = runtime.health()["flaky"]
    assert FlakyCamera.opened == 2 and health.reconnects == 1 and health.state == "finished"
    assert [r.reconnected for r in results] == [False] * 5 + [True] + [False] * 4
    after = results[5]
    # 0.4 s at 25 fps: about 10 frames missed (give or take scheduling), in the index and in `skipped`.
    assert 6 <= after.skipped <= 16 and after.frame_index == 6 + after.skipped
    assert "ended or stalled" in (health.last_error or "")


def static_scene(frames: int, missed: range = range(0)) -> Scene:
    """One person standing still, detected every frame except those in `missed`."""
    scores = np.full(frames, 0.9, np.float32)
    scores[list(missed)] = 0.0
    heat = np.zeros(frames, np.float32)  # no re-check peaks: only the detector finds them
    return Scene([ScriptedObject(walk(frames, (200, 100), (0, 0), (60, 160)), scores, heat)], frames)


def track_ids(scene: Scene, gap_at: int, gap: str, gap_frames: int) -> list[list[int]]:
    detector, recheck = SceneDetector(scene), SceneRecheck(scene)
    tracker = Tracker(detector, recheck, scene_meta())
    blank = np.zeros((*NET_HW, 3), np.uint8)
    ids = []
    for f in range(scene.frames):
        detector.frame = recheck.frame = f
        if f == gap_at:
            if gap == "forget":
                tracker.forget_tracks()
            tracker.skip_frames(gap_frames)
        ids.append([t.track_id for t in tracker.update(blank)])
    return ids


def test_a_tracked_person_keeps_the_id_across_skipped_frames() -> None:
    # 45 frames skipped (more than the 30-frame buffer) while the person was tracked: matched again.
    ids = track_ids(static_scene(20), gap_at=10, gap="skip", gap_frames=45)
    assert ids[9] == [1] and ids[-1] == [1]


@pytest.mark.parametrize(("gap_frames", "same_id"), [(10, True), (40, False)])
def test_lost_tracks_age_through_skipped_frames(gap_frames: int, same_id: bool) -> None:
    """Lost at frame 8 (missed for frames 8-9), then a gap: 2 + 10 frames lost keeps the id
    (under the 30-frame buffer), 2 + 40 ends the track and the person comes back as id 2."""
    ids = track_ids(static_scene(20, missed=range(8, 10)), gap_at=10, gap="skip", gap_frames=gap_frames)
    assert ids[7] == [1] and ids[9] == []
    assert ids[-1] == ([1] if same_id else [2])


def test_forget_tracks_starts_new_ids() -> None:
    ids = track_ids(static_scene(20), gap_at=10, gap="forget", gap_frames=40)
    assert ids[9] == [1] and ids[-1] == [2]  # new tracks, new ids; id 1 is never reused


class SteadyCamera(FrameSource):
    """A live source sending `frames` copies of one frame at 50 fps, then stopping."""

    is_live = True

    def __init__(self, frames: int) -> None:
        super().__init__("camera://steady", "steady", 50.0, None)
        self.frames = frames

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        image = moving_frames(1, 7)[0]
        for index in range(1, self.frames + 1):
            time.sleep(0.02)
            yield index, image


@pytest.mark.parametrize(("gap_s", "same_ids"), [(0.2, True), (1.2, False)])
def test_ids_across_a_reconnect(toy_engines: Path, gap_s: float, same_ids: bool) -> None:
    """A short dropout (10 frames at 50 fps, under the 50-frame buffer) keeps the ids of the people
    still there; a long one (60 frames) ends every track and they come back with new ids."""
    config = StreamConfig(reconnect_initial_s=gap_s, reconnect_max_s=gap_s)
    spec = StreamSpec("steady", lambda: SteadyCamera(8), mode="every", max_frames=16)
    with StreamRuntime.from_engines(toy_engines, [spec], config=config) as runtime:
        results = list(runtime.results())
    before = {t.track_id for t in results[7].tracks}
    after = {t.track_id for t in results[-1].tracks}
    assert results[8].reconnected and before and after
    if same_ids:
        assert after == before
    else:
        assert not after & before and min(after) > max(before)


# --- the runtime while it runs ---------------------------------------------------------------------


def test_add_and_remove_streams_while_running(tmp_path: Path, toy_engines: Path) -> None:
    first = write_video(tmp_path / "first.mp4", moving_frames(30, 5))
    second = write_video(tmp_path / "second.mp4", moving_frames(6, 6))
    seen: dict[str, int] = {}
    with StreamRuntime.from_engines(toy_engines, [StreamSpec("first", first)]) as runtime:
        for result in runtime.results():
            seen[result.stream] = seen.get(result.stream, 0) + 1
            if result.stream == "first" and result.frame_index == 3:
                runtime.add_stream(StreamSpec("second", second))
            if result.stream == "second" and result.frame_index == 6:
                runtime.remove_stream("first")
        assert runtime.stream_names == ["second"]
    assert seen["second"] == 6 and 3 < seen["first"] < 30
    # A stream added after results() ended is tracked by the next results() (an app's, or a
    # cluster worker's, loop between batches of streams).
    with StreamRuntime.from_engines(toy_engines, [StreamSpec("one", second)], config=StreamConfig(overlap="on")) as runtime:
        assert runtime.overlaps  # the detector thread ends with each results() and starts with the next
        for round_index in range(3):
            results = list(runtime.results())
            assert [r.frame_index for r in results] == list(range(1, 7)), round_index
            runtime.remove_stream(results[0].stream)
            runtime.add_stream(StreamSpec(f"again{round_index}", second))
    with pytest.raises(Exception, match="already running"):
        with StreamRuntime.from_engines(toy_engines, [StreamSpec("x", first), StreamSpec("x", second)]):
            pass


def test_stream_state_is_final_only_when_done() -> None:
    assert [s.is_final for s in StreamState] == [False, False, False, True, True, True]


def test_the_automatic_batch_is_one_frame_on_the_cpu(toy_engines: Path) -> None:
    """On the CPU a batch of B frames costs B single frames: by default the runtime sends one."""
    with StreamRuntime.from_engines(toy_engines) as runtime:
        assert runtime.max_batch == 1
        assert not runtime.overlaps  # nor is the detector run ahead (automatic overlap is off on the CPU)
    with StreamRuntime.from_engines(toy_engines, config=StreamConfig(max_batch=3)) as runtime:
        assert runtime.max_batch == 3
    pair, meta = open_engine_pair(toy_engines)
    with StreamRuntime(SlowPair(pair, 0.0), meta, own_engines=True) as runtime:  # a pair that does not say
        assert runtime.max_batch == meta.max_batch == 4
        assert not runtime.overlaps  # nor that its outputs outlive its next run: one batch after the other
