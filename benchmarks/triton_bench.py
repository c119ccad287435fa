"""Tracking through a Triton server versus the local backend, on the same streams, in one run.

N streams (generated clips of different seeds), each with its own `Tracker` in its own thread,
run F frames through the local ONNX Runtime backend, then through the `triton` backend (the
server batching the streams' detector calls), and again, alternately, for R rounds: the two
share whatever else the machine is doing. Per mode: aggregate frames/s (N x F frames over the
wall time of the round, median over rounds) and per-frame latency (each `update`: letterbox,
engines, host post-processing; p50 and p99 over every frame of every round); then Triton's over
local. Triton's detector batch sizes come from the server's own statistics.

The server is either one already running (`url`) or the tritonserver that nvidia-pytriton
bundles, started here on a repository written with `--platform python` (ONNX Runtime inside
Triton's Python backend: the same engine runtime as the local backend, so the ratio shows what
serving costs or gains on this machine, not a different engine).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omc.config import TrackerConfig, TritonBenchConfig, TritonRepoConfig
from omc.errors import OmcError
from omc.runtime.tracker import Tracker

log = logging.getLogger(__name__)

MODES = ("local", "triton")
# Not `omc bench`'s schema: `omc bench-report` leaves these results alone.
RESULT_SCHEMA = "omc-bench-triton/1"


@dataclass(frozen=True)
class ModeResult:
    """One mode's numbers: frames/s per round, latency percentiles over all frames (ms)."""

    frames_per_second: list[float]
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def median_fps(self) -> float:
        return float(np.median(self.frames_per_second))


def _run_streams(clips: list[list[np.ndarray]], open_tracker: Any) -> tuple[float, list[float]]:
    """All streams at once, one thread each: (aggregate frames/s, per-frame latencies in ms)."""
    trackers = [open_tracker() for _ in clips]
    latencies: list[list[float]] = [[] for _ in clips]
    failures: list[BaseException] = []
    ready = threading.Barrier(len(clips) + 1)

    def stream(index: int) -> None:
        try:
            ready.wait()
            for frame in clips[index]:
                start = time.perf_counter()
                trackers[index].update(frame)
                latencies[index].append((time.perf_counter() - start) * 1e3)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(clips))]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    finally:
        for tracker in trackers:
            tracker.close()
    if failures:
        raise failures[0]
    frames = sum(len(clip) for clip in clips)
    return frames / wall, [ms for stream_ms in latencies for ms in stream_ms]


def _detector_batches(url: str, model: str) -> dict[int, int]:
    """Batch size -> executions of the served detector, from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return {int(e["batch_size"]): int(e["compute_infer"]["count"]) for e in stats.get("batch_stats", [])}


def benchmark(export: Path, url: str, config: TritonBenchConfig, tracker_config: TrackerConfig, model_name: str = "omc") -> dict[str, Any]:
    """Interleaved local / Triton rounds on the same clips; the result as a JSON-ready dict."""
    from omc.benchmarks.clip import generated_clip

    load_before = os.getloadavg()
    clips = [generated_clip(config.clip_size, config.frames, seed=stream) for stream in range(config.streams)]
    openers = {
        "local": lambda: Tracker.from_engines(export, config=tracker_config),
        "triton": lambda: Tracker.from_engines(export, backend="triton", url=url, config=tracker_config, model_name=model_name),
    }
    # One warm-up round per mode: sessions, connections, the server's first batches.
    for mode in MODES:
        _run_streams([clip[:2] for clip in clips], openers[mode])
    before = _detector_batches(url, model_name + "_detector")
    fps: dict[str, list[float]] = {mode: [] for mode in MODES}
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_index in range(config.rounds):
        for mode in MODES if round_index % 2 == 0 else MODES[::-1]:
            rate, frame_ms = _run_streams(clips, openers[mode])
            fps[mode].append(rate)
            latencies[mode] += frame_ms
            log.info("round %d %s: %.1f frames/s, p50 %.1f ms", round_index + 1, mode, rate, float(np.percentile(frame_ms, 50)))
    after = _detector_batches(url, model_name + "_detector")
    results = {
        mode: ModeResult(fps[mode], float(np.percentile(latencies[mode], 50)), float(np.percentile(latencies[mode], 99)))
        for mode in MODES
    }
    local, served = results["local"], results["triton"]
    return {
        "schema": RESULT_SCHEMA,
        # Load averages (1, 5, 15 min) before and after: on a shared machine they say how busy it was.
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "config": asdict(config),
        "tracker": tracker_config.to_dict(),
        "modes": {mode: {**asdict(r), "median_fps": r.median_fps} for mode, r in results.items()},
        "ratios": {
            "fps": served.median_fps / local.median_fps,
            "latency_p50": served.latency_p50_ms / local.latency_p50_ms,
            "latency_p99": served.latency_p99_ms / local.latency_p99_ms,
        },
        "detector_batches": {size: count - before.get(size, 0) for size, count in sorted(after.items()) if count > before.get(size, 0)},
    }


def run_with_local_server(export: Path, server_venv: Path, config: TritonBenchConfig, tracker_config: TrackerConfig) -> dict[str, Any]:
    """`benchmark` against PyTriton's bundled tritonserver, started here on a --platform python repository."""
    from omc.export.triton.local_server import LocalTritonServer
    from omc.export.triton.repository import write_repository

    with tempfile.TemporaryDirectory(prefix="omc-bench-triton-") as folder:
        repository = Path(folder) / "repo"
        repo_config = TritonRepoConfig(
            platform="python", max_queue_delay_us=config.max_queue_delay_us, frame_instances=config.streams
        )
        write_repository(export, repository, repo_config)
        with LocalTritonServer(repository, server_venv) as server:
            result = benchmark(export, server.url, config, tracker_config)
            result["server"] = {"kind": "nvidia-pytriton bundled tritonserver, Python backend + ONNX Runtime (CPU)",
                                "startup_s": server.startup_s, "repository": asdict(repo_config)}  # fmt: skip
    return result


def report(result: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    modes, ratios = result["modes"], result["ratios"]
    lines = [
        "| mode | aggregate frames/s (median of rounds) | latency p50 (ms) | latency p99 (ms) |",
        "| --- | --- | --- | --- |",
    ]
    for mode in MODES:
        m = modes[mode]
        lines.append(f"| {mode} | {m['median_fps']:.1f} | {m['latency_p50_ms']:.1f} | {m['latency_p99_ms']:.1f} |")
    lines.append(f"| triton / local | {ratios['fps']:.2f}x | {ratios['latency_p50']:.2f}x | {ratios['latency_p99']:.2f}x |")
    batches = ", ".join(f"{size}: {count}" for size, count in result["detector_batches"].items())
    lines.append("")
    lines.append(f"Server detector batches (size: executions): {batches or 'none recorded'}")
    return "\n".join(lines)


def _loads(values: list[float] | None) -> str:
    return "?" if not values else ", ".join(f"{v:.1f}" for v in values)


def markdown(result: dict[str, Any]) -> str:
    """The recorded result as a Markdown page: command, machine, load, server, table."""
    environment = result["environment"]
    cpu = environment["cpu"]
    flags = ", ".join(name for name, present in cpu["flags"].items() if present) or "none of note"
    config = result["config"]
    load = result.get("load_average", {})
    lines = [
        "# Triton vs local backend",
        "",
        f"`{environment['command']}`",
        "",
        f"- CPU: {cpu['model']}, {cpu['usable_cores']} usable cores; flags: {flags}",
        f"- load average (1, 5, 15 min) before: {_loads(load.get('before'))}, after: {_loads(load.get('after'))}",
        f"- streams {config['streams']} x {config['frames']} frames x {config['rounds']} rounds per mode, "
        f"clips {config['clip_size'][0]}x{config['clip_size'][1]}",
    ]
    if "server" in result:
        server = result["server"]
        lines.append(f"- server: {server['kind']}; ready in {server['startup_s']:.1f} s")
    lines += ["", report(result), ""]
    return "\n".join(lines)


def check_export(export: Path) -> None:
    from omc import contract

    if not (export / contract.EXPORT_JSON).is_file():
        raise OmcError(f"--onnx {export} has no {contract.EXPORT_JSON}; point it at the output folder of omc export")
