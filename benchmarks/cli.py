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
from typing import Any

from omc.config import DEFAULT_ENGINES_DIR, BenchConfig, ExportConfig, default_engines_dir
from omc.contract import FLOAT_PRECISIONS
from omc.errors import BadInput
from omc.flags import ConfigFlags

log = logging.getLogger(__name__)

DEFAULT_RESULTS_DIR = Path("benchmarks/results")
DEFAULT_README = Path("README.md")


# The BenchConfig fields omc bench takes as flags.
BENCH_FLAGS = ConfigFlags(
    BenchConfig,
    only=("backends", "frames", "warmup", "tracklets", "headline_tracklets", "batch", "batch_repeats", "threads",
          "host_frames", "ceiling_size", "seed"),
    names={"backends": "--backend"},
)  # fmt: skip
# The input size of a new export.
IMG_SIZE_FLAG = ConfigFlags(ExportConfig, only=("img_size",))
# The other options of the recorded command, in its order around BENCH_FLAGS' ((flag, dest); a
# switch has no value): before, then after the config's flags.
_RECORDED_BEFORE = (("--onnx", "onnx"), ("--weights", "weights"), ("--precision", "precision"))
_RECORDED_AFTER = (("--source", "source"), ("--reference-repo", "reference_repo"), ("--name", "name"),
                   ("--note", "note"), ("--json", "json"), ("--plot", "plot"))  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
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
    BENCH_FLAGS.add_to(parser)
    parser.add_argument("--precision", choices=FLOAT_PRECISIONS, default="fp32",
                        help="engines for ort / trt: the fp32 export, or its fp16 graphs in <onnx>/fp16 (default: fp32)")
    parser.add_argument("--source", type=Path, metavar="PATH",
                        help="video, image folder or MOTChallenge sequence (default: a generated 1920x1080 clip)")
    parser.add_argument("--weights", type=Path, metavar="CKPT",
                        help="checkpoint for the export and the torch backend (default: what export.json records, "
                             "or seeded random L weights for a new export)")
    parser.add_argument("--onnx", type=Path, metavar="DIR",
                        help=f"export folder (default: {DEFAULT_ENGINES_DIR.format(size='WxH')} for --img-size; exported when absent)")
    IMG_SIZE_FLAG.add_to(parser)
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


def _recorded(args: argparse.Namespace, options: tuple[tuple[str, str], ...]) -> list[str]:
    """The options given with other values than their defaults, as words."""
    defaults: dict[str, Any] = args.parser_defaults
    words: list[str] = []
    for flag, dest in options:
        value = getattr(args, dest)
        if value is None or value is False or value == defaults.get(dest):
            continue
        words += [flag] if value is True else [flag, str(value)]
    return words


def recorded_command(args: argparse.Namespace, config: BenchConfig, img_size: tuple[int, int]) -> str:
    """`omc bench` with the options that differ from their defaults, in a fixed order."""
    words = ["omc", "bench", *_recorded(args, _RECORDED_BEFORE)]
    words += IMG_SIZE_FLAG.words(ExportConfig(img_size=img_size)) + BENCH_FLAGS.words(config)
    return shlex.join(words + _recorded(args, _RECORDED_AFTER))


def run_bench(args: argparse.Namespace) -> int:
    from omc.benchmarks.bench import BenchSetup, run_benchmark
    from omc.benchmarks.report import stage_table, update_readme, write_result

    config = BENCH_FLAGS.config(args)
    img_size = IMG_SIZE_FLAG.config(args).img_size
    onnx_dir = args.onnx if args.onnx is not None else Path(default_engines_dir(img_size))
    setup = BenchSetup(onnx_dir, args.weights, img_size, args.precision, args.source, args.reference_repo)
    if args.reference_repo is not None and not args.reference_repo.is_dir():
        raise BadInput(f"--reference-repo {args.reference_repo} is not a folder (a checkout of JudasDie/SOTS)")
    if args.plot:
        from omc.benchmarks.plots import require_matplotlib

        require_matplotlib()  # a missing matplotlib is an error now, not after the run
    name = args.name or onnx_dir.name
    result = run_benchmark(config, setup, recorded_command(args, config, img_size), name, note=args.note)
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
