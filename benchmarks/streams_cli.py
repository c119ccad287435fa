"""`omc bench-streams`: the multi-stream runtime against the naive loop, a live run, a memory soak.

Only argparse lives here; omc.benchmarks.streams measures and writes the results.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from omc.apps.cli import TRACKER_FLAGS
from omc.config import StreamsBenchConfig
from omc.flags import ConfigFlags

log = logging.getLogger(__name__)

PARTS = ("sweep", "live", "soak")
DEFAULT_RESULTS_DIR = Path("benchmarks/results/streams")


BENCH_FLAGS = ConfigFlags(StreamsBenchConfig)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-streams",
        help="many streams in one process: the stream runtime against the naive loop, a live run, a memory soak",
        description=(
            "Measure the multi-stream runtime on this machine: aggregate frames/s and capture-to-tracks "
            "latency of N synthetic live cameras, side by side with N trackers called one after another "
            "on the cameras' newest frames, and the runtime with the detector forced one batch ahead (rotating rounds); a live run of synthetic cameras in latest-frame mode (latency per minute); "
            "a soak for memory (RSS slope). Results go to benchmarks/results/streams/NAME.{json,md,png}."
        ),
    )
    parser.add_argument("--onnx", required=True, type=Path, metavar="DIR", help="engines folder (omc export)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=["sweep"], help="what to measure (default: sweep)")
    BENCH_FLAGS.add_to(parser)
    parser.add_argument("--name", default=None, help="result name (default: streams_<engines folder>)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR", help=f"where results go (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--plot", action="store_true", help="also draw the charts (matplotlib)")
    TRACKER_FLAGS.add_to(parser)
    parser.set_defaults(func=run_bench_streams)


def run_bench_streams(args: argparse.Namespace) -> int:
    from omc.benchmarks import streams
    from omc.benchmarks.environment import collect_environment
    from omc.runtime.backends import open_engine_pair

    config = BENCH_FLAGS.config(args)
    tracker = TRACKER_FLAGS.config(args)
    command = "omc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("omc") else "omc bench-streams"
    options: dict[str, Any] = {"intra_op_threads": config.threads} if config.threads and config.backend == "ort" else {}
    engines, meta = open_engine_pair(args.onnx, backend=config.backend, device=config.device, **options)
    name = args.name or f"streams_{args.onnx.name}"
    result: dict = {
        "schema": streams.RESULT_SCHEMA,
        "name": name,
        "model": f"{meta.variant} at {meta.input_hw[1]}x{meta.input_hw[0]} ({args.onnx}), max batch {meta.max_batch}",
        "environment": collect_environment(
            command, {"backend": config.backend, "device": config.device, "onnxruntime_threads": config.threads or "default"}
        ),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="omc-bench-streams-") as workdir:
            if "sweep" in args.parts:
                result["sweep_seconds"] = config.seconds
                result["sweep"] = streams.sweep(engines, meta, config.streams, config.seconds, config.rounds, tracker)
            if "live" in args.parts:
                result["live"] = streams.live_run(engines, meta, config.live_streams, config.live_seconds, tracker)
            if "soak" in args.parts:
                per_stream = max(1, config.soak_frames // config.soak_streams)
                result["soak"] = streams.soak(engines, meta, Path(workdir), config.soak_streams, per_stream, tracker)
    finally:
        engines.close()
    for path in streams.write_result(result, args.results_dir, args.plot):
        log.info("wrote %s", path)
    print(streams.markdown(result))
    return 0
