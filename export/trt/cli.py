"""`omc build`: TensorRT engines from an ONNX export (light module: TensorRT loads inside the command)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omc.config import TensorRTBuildConfig
from omc.flags import ConfigFlags

log = logging.getLogger(__name__)

# The profile's optimum shapes keep their defaults (the TensorRT backend's live-tracking case).
BUILD_FLAGS = ConfigFlags(TensorRTBuildConfig, only=("edition", "gpu_targets"), names={"gpu_targets": "--gpu-target"})


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build TensorRT engines (detector.plan, recheck.plan) from an ONNX export",
        description=(
            "Build detector.plan and recheck.plan, each with a <plan>.json sidecar, from the folder "
            "`omc export` wrote. TensorRT for RTX builds without a GPU; full TensorRT needs one."
        ),
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="folder with export.json and the ONNX files")
    BUILD_FLAGS.add_to(parser)
    parser.add_argument(
        "--timing-cache", type=Path, metavar="FILE", help="timing cache to read and update (full TensorRT only)"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="where the plans go (default: the --onnx folder)")
    parser.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from omc.export.trt.builder import build_engines

    config = BUILD_FLAGS.config(args)
    out_dir = args.out if args.out is not None else args.onnx
    _declare_files(args.onnx, out_dir, args.timing_cache)
    built = build_engines(args.onnx, out_dir, config, timing_cache=args.timing_cache)
    for engine in built:
        print(engine.plan_path)
    log.info("next: omc track VIDEO --engines %s --backend trt", out_dir)
    return 0


def _declare_files(onnx_dir: Path, out_dir: Path, timing_cache: Path | None) -> None:
    """BadInput when a plan, header, export.json copy or the timing cache would replace an input
    (export.json, the ONNX graphs) or each other (omc.files.RunFiles)."""
    from omc import contract
    from omc.files import RunFiles

    files = RunFiles()
    files.read_all((onnx_dir / name for name in (contract.EXPORT_JSON, contract.DETECTOR_ONNX, contract.RECHECK_ONNX)), "--onnx")
    outputs = [contract.DETECTOR_PLAN, contract.RECHECK_PLAN]
    outputs += [plan + contract.PLAN_HEADER_SUFFIX for plan in outputs]
    if out_dir.resolve() != onnx_dir.resolve():
        outputs.append(contract.EXPORT_JSON)
    for name in outputs:
        files.write(out_dir / name, "--out")
    if timing_cache is not None:
        files.write(timing_cache, "--timing-cache")  # read and updated: only other files are refused
