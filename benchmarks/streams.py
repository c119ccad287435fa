"""The multi-stream runtime measured against the naive way, over time, and for memory.

Three measurements (`omc bench-streams`), each recorded with the machine, the command and the
load average:

- sweep: N synthetic cameras (1, 2, 4, 8 by default) sending frames in real time, faster than
  the engines, for a fixed time; the aggregate frames/s tracked and each frame's latency from
  capture (the moment the camera sent it) to its tracks, for the StreamRuntime (latest-frame
  mode; its default configuration, and with the detector forced one batch ahead) and for the naive way (N
  trackers over the same engines, called one after another in one loop, each taking its
  camera's newest frame when its turn comes), interleaved in rotating rounds so load bursts hit
  every mode; plus the runtime's detector batch sizes. Live
  cameras because capture-to-tracks has a meaning only for frames that arrive in time (a file's
  frames all exist before the run: latency there measures how far a reader reads ahead).
- live: N synthetic cameras sending frames in real time (latest-frame mode) for a long run;
  latency p50 / p99 per minute (flat when no backlog grows) and the frames dropped.
- soak: N file streams for many frames; the process's resident memory sampled along the way and
  its least-squares slope (MB per 1,000 frames): flat memory is a slope near 0.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import numpy.typing as npt

from omc.benchmarks.clip import generated_clip
from omc.config import StreamConfig, TrackerConfig
from omc.contract import EngineMeta
from omc.files import replacing
from omc.runtime.engines import EnginePair
from omc.runtime.sources import FrameSource
from omc.runtime.streams import StreamRuntime, StreamSpec
from omc.runtime.tracker import Tracker

log = logging.getLogger(__name__)

RESULT_SCHEMA = "omc-bench-streams/2"
# Frame size of the generated clips (MOT17's), fps of the files and synthetic cameras.
CLIP_SIZE = (1920, 1080)
CLIP_FPS = 25.0
# Soak: memory is sampled every this many frames (all streams together).
SOAK_SAMPLE_FRAMES = 100
# A synthetic camera sends this much longer than its run measures: the run's clock starts at its
# first tracked frame and stops after the batch in flight, so a camera must not end first.
CAMERA_SPARE_S = 60.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (the peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_clip(path: Path, frames: int, seed: int, size: tuple[int, int] = CLIP_SIZE) -> Path:
    """A generated clip (omc.benchmarks.clip) of `frames` frames as an mp4 file."""
    distinct = generated_clip(size, min(frames, 16), seed=seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), CLIP_FPS, size)
    for index in range(frames):
        writer.write(distinct[index % len(distinct)])
    writer.release()
    return path


class SyntheticCamera(FrameSource):
    """A live source sending a generated clip in real time at `fps`, for `seconds` (then it ends)."""

    is_live = True

    def __init__(self, name: str, seed: int, fps: float, seconds: float, size: tuple[int, int] = CLIP_SIZE) -> None:
        super().__init__(f"synthetic://{name}", name, fps, None)
        self._clip = generated_clip(size, 16, seed=seed)
        self._count = int(fps * seconds)

    def _frames(self) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
        start = time.perf_counter()
        for index in range(1, self._count + 1):
            delay = start + index / self.frame_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield index, self._clip[index % len(self._clip)]


@dataclass
class RunFigures:
    """One timed run: frames, wall seconds, per-frame latencies (ms), batch sizes."""

    frames: int
    seconds: float
    latencies_ms: list[float]
    batch_sizes: dict[int, int]

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_streams(
    engines: EnginePair, meta: EngineMeta, streams: int, seconds: float, tracker: TrackerConfig, overlap: str = "auto"
) -> RunFigures:
    """The StreamRuntime over `streams` synthetic cameras for `seconds` (latest-frame mode);
    overlap: StreamConfig.overlap (auto, on, off)."""
    specs = [StreamSpec(f"cam{i}", _camera_factory(f"cam{i}", i, seconds), tracker=tracker) for i in range(streams)]
    config = StreamConfig(max_reconnect_attempts=1, overlap=overlap)
    runtime = StreamRuntime(engines, meta, specs, config)
    latencies: list[float] = []
    start: float | None = None  # the clock starts at the first tracked frame: opening the cameras is not timed
    last = 0.0
    try:
        for result in runtime.results():
            now = time.perf_counter()
            if start is None:
                start = last = now
                runtime.batch_sizes.clear()
                continue
            if now - start > seconds:
                break
            latencies.append(result.latency_ms)
            last = now
    finally:
        runtime.close()
    # Frames counted after the first, over the time from the first to the last counted: as the
    # naive loop counts every frame it finished within its time.
    elapsed = last - start if start is not None else 0.0
    return RunFigures(len(latencies), elapsed, latencies, dict(runtime.batch_sizes))


class PolledCamera:
    """A camera the naive loop polls: at any moment its newest frame is the one sent at
    floor(elapsed x fps); taking it gives that frame and the moment it was sent. A frame is
    taken once: when the newest was taken already, `newest` waits for the next one (as a
    blocking read of a camera does), so no frame is tracked twice."""

    def __init__(self, seed: int, fps: float, size: tuple[int, int] = CLIP_SIZE) -> None:
        self._clip = generated_clip(size, 16, seed=seed)
        self.fps = fps
        self.start = time.perf_counter()
        self._taken = -1

    def newest(self) -> tuple[float, npt.NDArray[np.uint8]]:
        index = int((time.perf_counter() - self.start) * self.fps)
        if index <= self._taken:
            index = self._taken + 1
            time.sleep(max(0.0, self.start + index / self.fps - time.perf_counter()))
        self._taken = index
        return self.start + index / self.fps, self._clip[index % len(self._clip)]


def run_naive(engines: EnginePair, meta: EngineMeta, streams: int, seconds: float, tracker: TrackerConfig) -> RunFigures:
    """N trackers called one after another in one loop, each on its camera's newest frame."""
    cameras = [PolledCamera(i, CLIP_FPS) for i in range(streams)]
    trackers = [Tracker.with_engines(engines, meta, tracker, CLIP_FPS) for _ in range(streams)]
    latencies = []
    start = time.perf_counter()  # the cameras are open: as for the runtime, from the first frame on
    while time.perf_counter() - start < seconds:
        for camera, stream_tracker in zip(cameras, trackers):
            captured, frame = camera.newest()
            stream_tracker.update(frame)
            latencies.append((time.perf_counter() - captured) * 1e3)
    return RunFigures(len(latencies), time.perf_counter() - start, latencies, {1: len(latencies)})


def sweep(
    engines: EnginePair, meta: EngineMeta, counts: tuple[int, ...], seconds: float, rounds: int,
    tracker: TrackerConfig, progress: Callable[[str], None] = log.info,
) -> list[dict[str, Any]]:  # fmt: skip
    """The runtime (its defaults, and with the detector forced one batch ahead) against the naive
    loop for each stream count: `rounds` rounds of `seconds` per mode, the modes' order rotating."""
    # Warm-up: the engines' first calls allocate.
    run_naive(engines, meta, 1, 1.0, tracker)
    modes: dict[str, Callable[[int], RunFigures]] = {
        "runtime": lambda count: run_streams(engines, meta, count, seconds, tracker),
        "runtime_overlap": lambda count: run_streams(engines, meta, count, seconds, tracker, overlap="on"),
        "naive": lambda count: run_naive(engines, meta, count, seconds, tracker),
    }
    names = list(modes)
    rows = []
    for count in counts:
        runs: dict[str, list[RunFigures]] = {name: [] for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for mode in names[shift:] + names[:shift]:
                figures = modes[mode](count)
                runs[mode].append(figures)
                progress(f"N={count} round {round_index + 1} {mode}: {figures.frames_per_second:.2f} frames/s")
        row: dict[str, Any] = {"streams": count, "load_average": load_average()}
        for mode, figures_list in runs.items():
            latencies = [v for f in figures_list for v in f.latencies_ms]
            row[mode] = {
                "frames_per_second": float(np.median([f.frames_per_second for f in figures_list])),
                "frames_per_second_rounds": [round(f.frames_per_second, 3) for f in figures_list],
                "frames": sum(f.frames for f in figures_list),
                "latency_p50_ms": percentile(latencies, 50),
                "latency_p99_ms": percentile(latencies, 99),
            }
        batches: dict[int, int] = {}
        for figures in runs["runtime"]:
            for size, n in figures.batch_sizes.items():
                batches[size] = batches.get(size, 0) + n
        row["runtime"]["batch_sizes"] = {str(k): v for k, v in sorted(batches.items())}
        row["ratio"] = row["runtime"]["frames_per_second"] / row["naive"]["frames_per_second"]
        row["overlap_gain"] = row["runtime_overlap"]["frames_per_second"] / row["runtime"]["frames_per_second"]
        rows.append(row)
    return rows


def live_run(
    engines: EnginePair, meta: EngineMeta, streams: int, seconds: float, tracker: TrackerConfig,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:  # fmt: skip
    """`streams` synthetic cameras at CLIP_FPS for `seconds`, latest-frame mode: latency per minute."""
    specs = [
        StreamSpec(f"cam{i}", _camera_factory(f"cam{i}", i, seconds), tracker=tracker) for i in range(streams)
    ]  # fmt: skip
    config = StreamConfig(max_reconnect_attempts=1, reconnect_initial_s=0.1, reconnect_max_s=0.1)
    runtime = StreamRuntime(engines, meta, specs, config)
    per_minute: dict[int, list[float]] = {}
    start = time.perf_counter()
    last = start
    try:
        for result in runtime.results():
            now = time.perf_counter()
            if now - start > seconds:
                break
            per_minute.setdefault(int((now - start) // 60), []).append(result.latency_ms)
            if now - last > 60:
                last = now
                progress(f"live {now - start:.0f} s: {len(per_minute.get(int((now - start) // 60), []))} frames this minute")
        health = runtime.health()
    finally:
        runtime.close()
    minutes = [
        {"minute": m + 1, "frames": len(v), "latency_p50_ms": percentile(v, 50), "latency_p99_ms": percentile(v, 99)}
        for m, v in sorted(per_minute.items())
    ]  # fmt: skip
    return {
        "streams": streams,
        "seconds": seconds,
        "camera_fps": CLIP_FPS,
        "minutes": minutes,
        "frames_tracked": sum(h.frames_tracked for h in health.values()),
        "frames_dropped": sum(h.frames_dropped for h in health.values()),
        "load_average": load_average(),
    }


def _camera_factory(name: str, seed: int, seconds: float) -> Callable[[], FrameSource]:
    def open_camera() -> FrameSource:
        return SyntheticCamera(name, seed, CLIP_FPS, seconds + CAMERA_SPARE_S)

    return open_camera


def soak(
    engines: EnginePair, meta: EngineMeta, workdir: Path, streams: int, frames_per_stream: int, tracker: TrackerConfig,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:  # fmt: skip
    """`streams` file streams of `frames_per_stream` frames each; RSS every SOAK_SAMPLE_FRAMES frames."""
    clips = [write_clip(workdir / f"soak{seed}.mp4", frames_per_stream, 100 + seed, size=(640, 360)) for seed in range(streams)]
    specs = [StreamSpec(f"s{i}", clip, mode="every", tracker=tracker) for i, clip in enumerate(clips)]
    runtime = StreamRuntime(engines, meta, specs, StreamConfig())
    samples: list[tuple[int, float]] = [(0, rss_mb())]
    done = 0
    start = time.perf_counter()
    try:
        for _ in runtime.results():
            done += 1
            if done % SOAK_SAMPLE_FRAMES == 0:
                samples.append((done, rss_mb()))
            if done % (SOAK_SAMPLE_FRAMES * 20) == 0:
                progress(f"soak: {done} frames, RSS {samples[-1][1]:.0f} MB")
    finally:
        runtime.close()
    seconds = time.perf_counter() - start
    # The slope over the second half: the first frames grow buffers and pools once.
    half = samples[len(samples) // 2 :]
    x = np.array([f for f, _ in half], np.float64)
    y = np.array([m for _, m in half], np.float64)
    slope = float(np.polyfit(x, y, 1)[0] * 1000) if len(half) > 2 else float("nan")
    return {
        "streams": streams,
        "frames": done,
        "seconds": seconds,
        "rss_mb": [[f, round(m, 1)] for f, m in samples],
        "rss_slope_mb_per_1000_frames": slope,
        "rss_first_mb": samples[0][1],
        "rss_last_mb": samples[-1][1],
        "load_average": load_average(),
    }


# --- results -------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown report (tables; the plots sit beside it)."""
    env = result["environment"]
    cpu = env.get("cpu", {})
    flags = ", ".join(name for name, on in cpu.get("flags", {}).items() if on)
    lines = [
        f"# {result['name']}: many streams in one process",
        "",
        f"{cpu.get('model', '?')} ({cpu.get('usable_cores', '?')} usable cores; {flags}); model {result['model']}.",
        "",
        f"Command: `{env.get('command', '')}`",
        "",
    ]
    if "sweep" in result:
        lines += [
            f"## Live cameras at {CLIP_FPS:g} fps, runtime against the naive loop ({result.get('sweep_seconds', '?')} s runs, rotating rounds)",
            "",
            "Runtime: its default StreamConfig (overlap auto, so on the CPU one batch after the other); "
            "overlap on: the detector forced one batch ahead of the host work.",
            "",
            "| streams | runtime frames/s | naive frames/s | runtime / naive | overlap on frames/s | overlap on / runtime | runtime latency p50 / p99 ms | naive latency p50 / p99 ms | runtime batches (size: count) | load average |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in result["sweep"]:
            rt, nv, ov = row["runtime"], row["naive"], row["runtime_overlap"]
            batches = ", ".join(f"{k}: {v}" for k, v in rt["batch_sizes"].items())
            lines.append(
                f"| {row['streams']} | {rt['frames_per_second']:.2f} | {nv['frames_per_second']:.2f} | {row['ratio']:.2f}x | "
                f"{ov['frames_per_second']:.2f} | {row['overlap_gain']:.2f}x | "
                f"{rt['latency_p50_ms']:.0f} / {rt['latency_p99_ms']:.0f} | {nv['latency_p50_ms']:.0f} / {nv['latency_p99_ms']:.0f} | "
                f"{batches} | {' '.join(str(v) for v in row['load_average'])} |"
            )
        lines.append("")
    if "live" in result:
        live = result["live"]
        lines += [
            f"## Live: {live['streams']} camera(s) at {live['camera_fps']:g} fps for {live['seconds']:.0f} s, latest-frame mode",
            "",
            f"Tracked {live['frames_tracked']} frames, dropped {live['frames_dropped']} (the newest frame is tracked).",
            "",
            "| minute | frames | latency p50 ms | latency p99 ms |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {m['minute']} | {m['frames']} | {m['latency_p50_ms']:.0f} | {m['latency_p99_ms']:.0f} |" for m in live["minutes"]]
        lines.append("")
    if "soak" in result:
        soak_result = result["soak"]
        lines += [
            f"## Soak: {soak_result['frames']} frames across {soak_result['streams']} streams ({soak_result['seconds']:.0f} s)",
            "",
            f"RSS {soak_result['rss_first_mb']:.0f} MB at the start, {soak_result['rss_last_mb']:.0f} MB at the end; "
            f"slope over the second half {soak_result['rss_slope_mb_per_1000_frames']:+.2f} MB per 1,000 frames.",
            "",
        ]
    return "\n".join(lines)


def _save(plt: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    """Charts beside the report: throughput by stream count, live latency by minute, soak RSS."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (the 'bench' extra); no charts")
        return []
    written = []
    if "sweep" in result:
        figure, axis = plt.subplots(figsize=(6, 3.5))
        counts = [row["streams"] for row in result["sweep"]]
        positions = np.arange(len(counts))
        bars = (("runtime", "stream runtime"), ("runtime_overlap", "runtime, overlap on"), ("naive", "naive loop"))
        for offset, (mode, label) in zip((-0.27, 0.0, 0.27), bars):
            axis.bar(positions + offset, [row[mode]["frames_per_second"] for row in result["sweep"]], 0.27, label=label)
        axis.set_xticks(positions, [str(c) for c in counts])
        axis.set_xlabel("streams")
        axis.set_ylabel("aggregate frames/s")
        axis.legend(loc="lower center")  # the bars fill the top
        written.append(_save(plt, figure, out.with_name(out.name + "_throughput.png")))
    if "live" in result and result["live"]["minutes"]:
        figure, axis = plt.subplots(figsize=(6, 3.5))
        minutes = result["live"]["minutes"]
        axis.plot([m["minute"] for m in minutes], [m["latency_p50_ms"] for m in minutes], marker="o", label="p50")
        axis.plot([m["minute"] for m in minutes], [m["latency_p99_ms"] for m in minutes], marker="o", label="p99")
        axis.set_xlabel("minute of the live run")
        axis.set_ylabel("capture to tracks, ms")
        axis.set_ylim(bottom=0)
        axis.legend()
        written.append(_save(plt, figure, out.with_name(out.name + "_live.png")))
    if "soak" in result:
        figure, axis = plt.subplots(figsize=(6, 3.5))
        samples = result["soak"]["rss_mb"]
        axis.plot([s[0] for s in samples], [s[1] for s in samples])
        axis.set_xlabel("frames tracked (all streams)")
        axis.set_ylabel("resident memory, MB")
        axis.set_ylim(bottom=0)
        written.append(_save(plt, figure, out.with_name(out.name + "_soak.png")))
    return written


def write_result(result: dict[str, Any], results_dir: Path, with_plots: bool) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / result["name"]
    written = []
    for suffix, text in ((".json", json.dumps(result, indent=2, sort_keys=True) + "\n"), (".md", markdown(result))):
        path = stem.with_suffix(suffix)
        with replacing(path) as temporary:
            temporary.write_text(text)
        written.append(path)
    if with_plots:
        written += plot(result, stem)
    return written
