"""`omc bench` (time every backend side by side) and `omc bench-report` (regenerate reports).

Only argparse lives here: flags become a `BenchConfig` and a `BenchSetup` before anything below
runs, and heavy modules (torch, onnxruntime, matplotlib) load inside the commands.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from omc.config import BENCH_BACKENDS, BenchConfig, ExportConfig, parse_size
from omc.contract import FLOAT_PRECISIONS
from omc.errors import BadInput

log = logging.getLogger(__name__)

DEFAULT_RESULTS_DIR = Path("benchmarks/results")
DEFAULT_README = Path("README.md")
# The Makefile's engine folder for an input size (ENGINES ?= engines/omc_l_$(IMG_SIZE)).
DEFAULT_ENGINES = "engines/omc_l_{size}"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _join(values: tuple[Any, ...]) -> str:
    return ",".join(str(v) for v in values)


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# (flag, dest, how to write the value back; None for a switch): the order of the recorded command.
_RECORDED: tuple[tuple[str, str, Callable[[Any], str] | None], ...] = (
    ("--onnx", "onnx", str),
    ("--weights", "weights", str),
    ("--img-size", "img_size", _size_text),
    ("--precision", "precision", str),
    ("--backend", "backend", _join),
    ("--source", "source", str),
    ("--frames", "frames", str),
    ("--warmup", "warmup", str),
    ("--tracklets", "tracklets", _join),
    ("--headline-tracklets", "headline_tracklets", str),
    ("--batch", "batch", _join),
    ("--batch-repeats", "batch_repeats", str),
    ("--threads", "threads", str),
    ("--host-frames", "host_frames", str),
    ("--ceiling-size", "ceiling_size", str),
    ("--seed", "seed", str),
    ("--reference-repo", "reference_repo", str),
    ("--name", "name", str),
    ("--note", "note", str),
    ("--json", "json", str),
    ("--plot", "plot", None),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = BenchConfig()
    parser = subparsers.add_parser(
        "bench",
        help="per-stage latency of every backend side by side with the PyTorch reference path",
        description=(
            "Time the tracker stage by stage (letterbox, h2d, detector, re-check, d2h, NMS + fusion, "
            "association) with each backend on the same frames and threads, side by side with the PyTorch "
            "eager path that mirrors the reference implementation. Exports the default model first when "
            "--onnx has no export. Feeds the re-check n synthetic tracklets (rows of the frame's own ID map) "
            "so its cost is measured even with random weights. Writes benchmarks/results/<name>.json and .md."
        ),
    )
    parser.add_argument("--backend", type=_name_list, default=defaults.backends, metavar="LIST",
                        help=f"comma-separated backends of {', '.join(BENCH_BACKENDS)} (default: {_join(defaults.backends)})")
    parser.add_argument("--precision", choices=FLOAT_PRECISIONS, default="fp32",
                        help="engines for ort / trt: the fp32 export, or its fp16 graphs in <onnx>/fp16 (default: fp32)")
    parser.add_argument("--frames", type=int, default=defaults.frames, metavar="N", help="timed frames per backend (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, metavar="N", help="untimed frames first (default: %(default)s)")
    parser.add_argument("--tracklets", type=_int_list, default=defaults.tracklets, metavar="LIST",
                        help=f"tracklet counts n of the re-check sweep (default: {_join(defaults.tracklets)})")
    parser.add_argument("--headline-tracklets", type=int, default=defaults.headline_tracklets, metavar="N",
                        help="n of the stage table and the re-check comparisons (default: %(default)s)")
    parser.add_argument("--batch", type=_int_list, default=defaults.batch, metavar="LIST",
                        help=f"detector batch sizes to time (default: {_join(defaults.batch)})")
    parser.add_argument("--batch-repeats", type=int, default=defaults.batch_repeats, metavar="N",
                        help="timed detector calls per batch size (default: %(default)s)")
    parser.add_argument("--source", type=Path, metavar="PATH",
                        help="video, image folder or MOTChallenge sequence (default: a generated 1920x1080 clip)")
    parser.add_argument("--weights", type=Path, metavar="CKPT",
                        help="checkpoint for the export and the torch backend (default: what export.json records, "
                             "or seeded random L weights for a new export)")
    parser.add_argument("--onnx", type=Path, metavar="DIR",
                        help=f"export folder (default: {DEFAULT_ENGINES.format(size='WxH')} for --img-size; exported when absent)")
    parser.add_argument("--img-size", type=_size, default=ExportConfig.img_size, metavar="WxH",
                        help="network input of a new export (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads, metavar="N",
                        help="ONNX Runtime intra-op threads = torch threads (default: 0, every usable core)")
    parser.add_argument("--host-frames", type=int, default=defaults.host_frames, metavar="N",
                        help="frames of the host post-processing workload (default: %(default)s)")
    parser.add_argument("--ceiling-size", type=int, default=defaults.ceiling_size, metavar="N",
                        help="side of the sgemm timed as the ceiling (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="N", help="seed of the clip and tracklets (default: %(default)s)")
    parser.add_argument("--reference-repo", type=Path, metavar="PATH",
                        help="checkout of JudasDie/SOTS (branch MOT): also time the reference tracker's own post-processing")
    parser.add_argument("--name", metavar="NAME", help="result name (default: the export folder's name)")
    parser.add_argument("--note", default="", metavar="TEXT",
                        help="a remark recorded with the result and shown in its reports (e.g. 'machine shared, noisy')")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the result JSON here")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR",
                        help="folder of recorded results (default: %(default)s)")
    parser.add_argument("--plot", action="store_true", help="write PNG charts beside the result (needs the bench extra)")
    parser.add_argument("--update-readme", type=Path, nargs="?", const=DEFAULT_README, metavar="README",
                        help="regenerate the performance section of README (default README.md) from the results folder")
    parser.set_defaults(func=run_bench)

    report = subparsers.add_parser(
        "bench-report",
        help="regenerate the Markdown reports and the README performance section from recorded results",
        description="Rewrite <results>/<name>.md of every recorded result and the README section between "
                    "<!-- perf:start --> and <!-- perf:end --> (deterministic: the same results give the same text).",
    )
    report.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR, metavar="DIR", help="(default: %(default)s)")
    report.add_argument("--readme", type=Path, default=DEFAULT_README, metavar="README", help="(default: %(default)s)")
    report.add_argument("--plot", action="store_true", help="redraw the PNG charts too (needs the bench extra)")
    report.set_defaults(func=run_report)
    parser.set_defaults(parser_defaults={a.dest: a.default for a in parser._actions})


def recorded_command(args: argparse.Namespace) -> str:
    """`omc bench` with the options that differ from their defaults, in a fixed order."""
    defaults: dict[str, Any] = args.parser_defaults
    words = ["omc", "bench"]
    for flag, dest, render in _RECORDED:
        value = getattr(args, dest)
        if value is None or value == defaults.get(dest) or value is False:
            continue
        words += [flag] if render is None else [flag, render(value)]
    return shlex.join(words)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        backends=tuple(args.backend),
        frames=args.frames,
        warmup=args.warmup,
        tracklets=tuple(args.tracklets),
        headline_tracklets=args.headline_tracklets,
        batch=tuple(args.batch),
        batch_repeats=args.batch_repeats,
        threads=args.threads,
        seed=args.seed,
        host_frames=args.host_frames,
        ceiling_size=args.ceiling_size,
    )


def run_bench(args: argparse.Namespace) -> int:
    from omc.benchmarks.bench import BenchSetup, run_benchmark
    from omc.benchmarks.report import stage_table, update_readme, write_result

    config = config_from_args(args)
    onnx_dir = args.onnx if args.onnx is not None else Path(DEFAULT_ENGINES.format(size=_size_text(args.img_size)))
    setup = BenchSetup(onnx_dir, args.weights, args.img_size, args.precision, args.source, args.reference_repo)
    if args.reference_repo is not None and not args.reference_repo.is_dir():
        raise BadInput(f"--reference-repo {args.reference_repo} is not a folder (a checkout of JudasDie/SOTS)")
    if args.plot:
        from omc.benchmarks.plots import require_matplotlib

        require_matplotlib()  # a missing matplotlib is an error now, not after the run
    name = args.name or onnx_dir.name
    result = run_benchmark(config, setup, recorded_command(args), name, note=args.note)
    written = write_result(result, args.results, name, args.json)
    if args.plot:
        from omc.benchmarks.plots import write_plots

        written += write_plots(result, args.results, name)
    sys.stdout.write("\n".join(stage_table(result)) + "\n")
    for path in written:
        log.info("wrote %s", path)
    if args.update_readme is not None and update_readme(args.update_readme, args.results):
        log.info("updated the performance section of %s", args.update_readme)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from omc.benchmarks.report import load_results, update_readme, write_text_atomically, markdown_report

    results = load_results(args.results)
    for result in results:
        write_text_atomically(args.results / f"{result['name']}.md", markdown_report(result))
        if args.plot:
            from omc.benchmarks.plots import write_plots

            write_plots(result, args.results, result["name"])
    changed = update_readme(args.readme, args.results)
    log.info("%d result(s); %s %s", len(results), "updated" if changed else "unchanged", args.readme)
    return 0
