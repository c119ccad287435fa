"""`omc bench-triton`: tracking through a Triton server versus the local backend (light module)."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from omc.apps.cli import TRACKER_FLAGS
from omc.config import TritonBenchConfig
from omc.flags import ConfigFlags

log = logging.getLogger(__name__)

DEFAULT_SERVER_VENV = Path(".venv-triton")


# The repository a local server gets is written with this export's defaults; the clip size stays the default.
BENCH_FLAGS = ConfigFlags(TritonBenchConfig, only=("streams", "frames", "rounds", "max_queue_delay_us"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-triton",
        help="aggregate frames/s and per-frame latency through Triton vs the local backend, same streams",
        description=(
            "Run N streams (one tracker and thread each) through the local ONNX Runtime backend and through the "
            "triton backend, alternating for several rounds, and report aggregate frames/s, per-frame latency "
            "p50/p99 and their ratios. Without --url, starts the tritonserver that nvidia-pytriton bundles "
            "(from --server-venv, made by make triton-server) on a repository written with --platform python."
        ),
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="omc export folder")
    parser.add_argument("--url", default=None, metavar="HOST:PORT", help="a running server with this export's repository (omc triton-repo)")
    parser.add_argument("--server-venv", type=Path, default=DEFAULT_SERVER_VENV, metavar="DIR",
                        help=f"environment with nvidia-pytriton for the local server (default: {DEFAULT_SERVER_VENV})")
    BENCH_FLAGS.add_to(parser)
    parser.add_argument("--results", type=Path, default=None, metavar="FILE.json", help="also write the result (and FILE.md)")
    TRACKER_FLAGS.add_to(parser)
    parser.set_defaults(func=run_bench_triton)


def run_bench_triton(args: argparse.Namespace) -> int:
    from omc.benchmarks.environment import collect_environment
    from omc.benchmarks.triton_bench import benchmark, check_export, markdown, report, run_with_local_server
    from omc.files import replacing

    check_export(args.onnx)
    config = BENCH_FLAGS.config(args)
    tracker_config = TRACKER_FLAGS.config(args)
    if args.url is not None:
        result = benchmark(args.onnx, args.url, config, tracker_config)
    else:
        result = run_with_local_server(args.onnx, args.server_venv, config, tracker_config)
    command = "omc " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result["environment"] = collect_environment(command)
    table = report(result)
    print(table)
    if args.results is not None:
        with replacing(args.results) as temporary:
            temporary.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        markdown_path = args.results.with_suffix(".md")
        with replacing(markdown_path) as temporary:
            temporary.write_text(markdown(result))
        log.info("results written to %s and %s", args.results, markdown_path)
    return 0
