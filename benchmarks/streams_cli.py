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

from omc.errors import BadInput

log = logging.getLogger(__name__)

PARTS = ("sweep", "live", "soak")
DEFAULT_RESULTS_DIR = Path("benchmarks/results/streams")


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("stream counts must be at least 1")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-streams",
        help="many streams in one process: the stream runtime against the naive loop, a live run, a memory soak",
        description=(
            "Measure the multi-stream runtime on this machine: aggregate frames/s and capture-to-tracks "
            "latency of N synthetic live cameras, side by side with N trackers called one after another "
            "on the cameras' newest frames (alternating rounds); a live run of synthetic cameras in latest-frame mode (latency per minute); "
            "a soak for memory (RSS slope). Results go to benchmarks/results/streams/NAME.{json,md,png}."
        ),
    )
    parser.add_argument("--onnx", required=True, type=Path, metavar="DIR", help="engines folder (omc export)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=["sweep"], help="what to measure (default: sweep)")
    parser.add_argument("--streams", type=_counts, default=(1, 2, 4, 8), metavar="N,N", help="stream counts of the sweep (default: 1,2,4,8)")
    parser.add_argument("--seconds", type=float, default=30.0, metavar="S", help="length of each sweep run (default: 30)")
    parser.add_argument("--rounds", type=int, default=2, metavar="N", help="alternating rounds per stream count (default: 2)")
    parser.add_argument("--live-streams", type=int, default=4, metavar="N", help="cameras of the live run (default: 4)")
    parser.add_argument("--live-seconds", type=float, default=600.0, metavar="S", help="length of the live run (default: 600)")
    parser.add_argument("--soak-streams", type=int, default=4, metavar="N", help="streams of the soak (default: 4)")
    parser.add_argument("--soak-frames", type=int, default=10000, metavar="N", help="frames of the soak, all streams together (default: 10000)")
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="ONNX Runtime threads per engine (default: 0, its own choice)")
    parser.add_argument("--conf-thres", type=float, default=0.5, help="tracker detection threshold (default: 0.5)")
    parser.add_argument("--name", default=None, help="result name (default: streams_<engines folder>)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR", help=f"where results go (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--plot", action="store_true", help="also draw the charts (matplotlib)")
    parser.set_defaults(func=run_bench_streams)


def run_bench_streams(args: argparse.Namespace) -> int:
    from omc.benchmarks import streams
    from omc.benchmarks.environment import collect_environment
    from omc.config import TrackerConfig
    from omc.runtime.backends import open_engine_pair

    for name in ("rounds", "live_streams", "soak_streams", "soak_frames"):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("seconds", "live_seconds"):
        if not 0 < getattr(args, name) < float("inf"):
            raise BadInput(f"--{name.replace('_', '-')} must be a positive number")
    tracker = TrackerConfig(conf_thres=args.conf_thres)
    command = "omc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("omc") else "omc bench-streams"
    options = {"intra_op_threads": args.threads} if args.threads else {}
    engines, meta = open_engine_pair(args.onnx, **options)
    name = args.name or f"streams_{args.onnx.name}"
    result: dict = {
        "schema": streams.RESULT_SCHEMA,
        "name": name,
        "model": f"{meta.variant} at {meta.input_hw[1]}x{meta.input_hw[0]} ({args.onnx}), max batch {meta.max_batch}",
        "environment": collect_environment(command, {"onnxruntime_threads": args.threads or "default"}),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="omc-bench-streams-") as workdir:
            if "sweep" in args.parts:
                result["sweep_seconds"] = args.seconds
                result["sweep"] = streams.sweep(engines, meta, args.streams, args.seconds, args.rounds, tracker)
            if "live" in args.parts:
                result["live"] = streams.live_run(engines, meta, args.live_streams, args.live_seconds, tracker)
            if "soak" in args.parts:
                per_stream = max(1, args.soak_frames // args.soak_streams)
                result["soak"] = streams.soak(engines, meta, Path(workdir), args.soak_streams, per_stream, tracker)
    finally:
        engines.close()
    for path in streams.write_result(result, args.results_dir, args.plot):
        log.info("wrote %s", path)
    print(streams.markdown(result))
    return 0
