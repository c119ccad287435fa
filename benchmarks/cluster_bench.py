"""`omc cluster bench`: what going through Ray costs, against the multi-stream runtime in one process.

The same N file streams (generated clips, or --video repeated) are tracked end to end, results
files written, three ways in turn: the single-process StreamRuntime (`single`), and `omc
cluster`'s driver with 1 and with 2 stream workers on a local Ray (`ray-1`, `ray-2`). The
machine's cores are split evenly: the single process and the one worker run ONNX Runtime with
all of them, two workers with half each. Per way it records:
- start-up: from nothing to the workers ready (Ray start included) or to the engines open;
- steady frames/s: frames written per second between the 10th and the 90th percentile of the
  written frames' times (start-up and the last stragglers left out);
- end-to-end frames/s: all frames over the whole run from the first frame.
- CPU per frame: CPU seconds of the whole process tree (the single process; or the driver, its
  Ray daemons and the workers) over the steady window, per frame written.
Ray's cost is the CPU ratio ray-N / single - 1: on a machine shared with other work (as the
2-core development machine is) wall-clock rates mostly say how much of the machine each way won
from its neighbours (more processes win more), while CPU seconds per frame do not depend on
them. Rounds (--repeats) alternate the ways; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omc.errors import BadInput

log = logging.getLogger(__name__)

MODES = ("single", "ray-1", "ray-2")
# Share of the written frames left out at each end of the steady-state window.
STEADY_TRIM = 0.1
# Seconds over which Ray's fixed cost is measured, after this long for its start-up to settle.
FIXED_COST_WINDOW_S = 10.0
FIXED_COST_SETTLE_S = 3.0


@dataclass(frozen=True)
class ModeResult:
    """One way through one round: start-up (s), steady and end-to-end frames/s, CPU ms per frame
    over the steady window (the whole process tree), frames written."""

    mode: str
    startup_s: float
    steady_fps: float
    end_to_end_fps: float
    cpu_ms_per_frame: float
    frames: int


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and every live descendant (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) "
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    total, stack = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="measure Ray's cost: the same streams in one process and on 1 and 2 local Ray workers",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--engines", required=True, type=Path, metavar="DIR", help="an omc export folder")
    parser.add_argument("--streams", type=int, default=4, metavar="N", help="file streams (default: 4)")
    parser.add_argument("--frames", type=int, default=300, metavar="F", help="frames per stream (default: 300)")
    parser.add_argument("--video", type=Path, default=None, help="a video for every stream (default: a generated clip at the engines' input size)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"ways to run, comma separated (default: {','.join(MODES)})")
    parser.add_argument("--repeats", type=int, default=2, metavar="R", help="rounds over the ways (default: 2)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="also write the record as JSON (and FILE.md)")
    parser.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from omc.benchmarks.environment import collect_environment

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise BadInput(f"--modes: unknown {', '.join(unknown)}; known: {', '.join(MODES)}")
    if args.streams < 1 or args.frames < 10 or args.repeats < 1:
        raise BadInput("--streams and --repeats must be at least 1, --frames at least 10")
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="omc-cluster-bench-") as tmp:
        video = args.video or _generated_video(Path(tmp) / "clip.mp4", args.engines, args.frames)
        results: list[ModeResult] = []
        for round_index in range(args.repeats):
            for mode in modes:
                out = Path(tmp) / f"{mode}-{round_index}"
                result = _run_mode(mode, args.engines.resolve(), video, args.streams, args.frames, cores, out)
                log.info("round %d %s: start-up %.1f s, steady %.1f frames/s, end to end %.1f frames/s (%d frames)",
                         round_index + 1, mode, result.startup_s, result.steady_fps, result.end_to_end_fps, result.frames)
                results.append(result)
        fixed = ray_fixed_cost(args.engines.resolve()) if any(m != "single" for m in modes) else {}
    load_after = os.getloadavg()
    record = _record(results, modes, args, cores, load_before, load_after)
    record["ray_fixed_cost"] = fixed
    record["environment"] = collect_environment(
        "omc cluster bench " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in _flags(args).items()),
        {"ray": _ray_version()},
    )
    text = format_record(record)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    return 0


def ray_fixed_cost(engines: Path, seconds: float = FIXED_COST_WINDOW_S) -> dict[str, float]:
    """What Ray costs whatever the frames: the CPU (cores) of a local Ray with one idle worker
    (its daemons, the worker, the driver) over `seconds`, and the CPU (ms) of one collection
    (the driver's take() call on a worker with nothing to hand over), both on the process tree."""
    from omc.apps.cluster.ray_session import shutdown, start_local
    from omc.apps.cluster.worker import StreamWorker

    try:
        start_local(1, 0, 90.0)
        import ray

        worker: Any = ray.remote(num_cpus=1)(StreamWorker).remote("idle", str(engines))
        ray.get(worker.take.remote())
        time.sleep(FIXED_COST_SETTLE_S)  # Ray's start-up work settles
        before = tree_cpu_seconds(os.getpid())
        time.sleep(seconds)
        idle_cores = (tree_cpu_seconds(os.getpid()) - before) / seconds
        before, started, calls = tree_cpu_seconds(os.getpid()), time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            ray.get(worker.take.remote())
            calls += 1
        elapsed = time.perf_counter() - started
        busy = tree_cpu_seconds(os.getpid()) - before
        per_call_ms = (busy - idle_cores * elapsed) * 1e3 / calls
    finally:
        shutdown()
    return {"idle_cores": idle_cores, "cpu_ms_per_collection": per_call_ms, "window_s": seconds}


def _ray_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "not installed"


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in ("engines", "streams", "frames", "video", "modes", "repeats") and v is not None}


def _generated_video(path: Path, engines: Path, frames: int) -> Path:
    import cv2

    from omc import contract
    from omc.benchmarks.clip import generated_clip

    height, width = contract.EngineMeta.load(engines / contract.EXPORT_JSON).input_hw
    clip = generated_clip((width, height), seed=0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (width, height))
    for index in range(frames):
        writer.write(clip[index % len(clip)])
    writer.release()
    return path


def _entries(video: Path, streams: int, frames: int) -> list[Any]:
    from omc.apps.streams_file import StreamEntry
    from omc.runtime.streams import StreamSpec

    return [StreamEntry(StreamSpec(f"s{i + 1}", video, mode="every", max_frames=frames)) for i in range(streams)]


def _run_mode(mode: str, engines: Path, video: Path, streams: int, frames: int, cores: int, out: Path) -> ModeResult:
    entries = _entries(video, streams, frames)
    expected = streams * frames
    window = (int(expected * STEADY_TRIM), int(expected * (1 - STEADY_TRIM)) - 1)
    times: list[float] = []
    cpu: list[float] = []

    def written(_: object = None) -> None:
        times.append(time.perf_counter())
        if len(times) - 1 in window:
            cpu.append(tree_cpu_seconds(os.getpid()))

    started = time.perf_counter()
    if mode == "single":
        from omc.apps.track import StreamOutputs
        from omc.runtime.streams import StreamRuntime

        outputs = StreamOutputs({e.spec.name: out / f"{e.spec.name}.txt" for e in entries}, {}, out / "tracks.jsonl")
        with StreamRuntime.from_engines(engines, [e.spec for e in entries], intra_op_threads=cores) as runtime:
            startup = time.perf_counter() - started
            for result in runtime.results():
                outputs.write(result)
                written()
        outputs.close(complete=True)
    else:
        from omc.apps.cluster.controller import ClusterRun
        from omc.apps.cluster.placement import plan_cluster
        from omc.apps.cluster.ray_session import live_nodes, shutdown, start_local
        from omc.config import ClusterConfig

        workers = int(mode.split("-")[1])
        config = ClusterConfig(workers=workers, cpus_per_worker=cores / workers)
        try:
            address = start_local(cores, 0, config.ray_start_timeout_s)
            plan = plan_cluster(entries, config, live_nodes(), "bench")
            run = ClusterRun(entries, plan, engines, out, config, address=address, run_name="bench", on_write=written)
            run.start()
            startup = time.perf_counter() - started
            run.run()
        finally:
            shutdown()
    total = len(times)
    if total != expected or len(cpu) != 2:
        raise BadInput(f"{mode}: {total} frames were written, {expected} expected")
    first, last = window
    steady = (last - first) / (times[last] - times[first]) if times[last] > times[first] else math.nan
    end_to_end = total / (times[-1] - times[0] + 1e-9)
    cpu_ms = (cpu[1] - cpu[0]) * 1e3 / (last - first)
    return ModeResult(mode, startup, steady, end_to_end, cpu_ms, total)


def _record(results: list[ModeResult], modes: list[str], args: argparse.Namespace, cores: int,
            load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> dict[str, Any]:  # fmt: skip
    summary: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in results if r.mode == mode]
        summary[mode] = {
            "startup_s_median": statistics.median(r.startup_s for r in mine),
            "steady_fps_median": statistics.median(r.steady_fps for r in mine),
            "end_to_end_fps_median": statistics.median(r.end_to_end_fps for r in mine),
            "cpu_ms_per_frame_median": statistics.median(r.cpu_ms_per_frame for r in mine),
            "frames": mine[0].frames,
        }
    ratios, cpu_ratios = {}, {}
    if "single" in summary:
        base, base_cpu = summary["single"]["steady_fps_median"], summary["single"]["cpu_ms_per_frame_median"]
        for mode in modes:
            if mode != "single":
                ratios[mode] = summary[mode]["steady_fps_median"] / base
                cpu_ratios[mode] = summary[mode]["cpu_ms_per_frame_median"] / base_cpu
    return {
        "streams": args.streams, "frames_per_stream": args.frames, "repeats": args.repeats, "cores": cores,
        "load_average_before": list(load_before), "load_average_after": list(load_after),
        "runs": [r.__dict__ for r in results], "summary": summary, "steady_ratio_to_single": ratios,
        "cpu_per_frame_ratio_to_single": cpu_ratios,
    }  # fmt: skip


def format_record(record: dict[str, Any]) -> str:
    """The record as Markdown: the run's facts, Ray's fixed cost, then one table row per way."""
    lines = [
        f"{record['streams']} file streams x {record['frames_per_stream']} frames, {record['cores']} cores, "
        f"{record['repeats']} rounds (medians); load average before {record['load_average_before'][0]:.2f}, "
        f"after {record['load_average_after'][0]:.2f}",
    ]
    environment = record.get("environment")
    if environment is not None:
        cpu = environment["cpu"]
        flags = ", ".join(name for name, present in cpu["flags"].items() if present) or "none of note"
        lines += [
            f"CPU {cpu['model']} ({cpu['usable_cores']} usable cores; {flags}), Ray {environment.get('ray')}, "
            f"onnxruntime {environment['libraries'].get('onnxruntime', '?')}",
            f"command: `{environment['command']}`",
        ]
    fixed = record.get("ray_fixed_cost")
    if fixed:
        lines.append(
            f"Ray's fixed cost: {fixed['idle_cores']:.3f} cores idle (daemons, one idle worker, the driver), "
            f"{fixed['cpu_ms_per_collection']:.1f} ms CPU per collection (driver + worker)"
        )
    lines += [
        "",
        "| way | start-up s | steady frames/s | end-to-end frames/s | steady / single | CPU ms per frame | CPU / single |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, item in record["summary"].items():
        ratio = record["steady_ratio_to_single"].get(mode)
        cpu_ratio = record["cpu_per_frame_ratio_to_single"].get(mode)
        lines.append(
            f"| {mode} | {item['startup_s_median']:.1f} | {item['steady_fps_median']:.1f} | "
            f"{item['end_to_end_fps_median']:.1f} | {_ratio(mode, ratio)} | {item['cpu_ms_per_frame_median']:.1f} | "
            f"{_ratio(mode, cpu_ratio)} |"
        )
    return "\n".join(lines)


def _ratio(mode: str, value: float | None) -> str:
    return "1.000" if mode == "single" else f"{value:.3f}" if value is not None else "-"
