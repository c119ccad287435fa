"""`omc calib`, `omc quantize` and `omc int8-report` (light module: heavy imports inside the commands).

    omc calib SOURCE [SOURCE ...] --frames N --out calib.npz [--engines DIR]
    omc quantize --onnx DIR --calib FILE --target cpu [tensorrt] [--out DIR]
    omc int8-report --onnx DIR --calib FILE [--int8 DIR] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from omc import contract
from omc.config import FLOAT_REGIONS, QUANT_TARGETS, CalibConfig, default_engines_dir
from omc.errors import BadInput, CheckFailed
from omc.files import RunFiles
from omc.flags import ConfigFlags

log = logging.getLogger(__name__)

# The CalibConfig fields of `omc calib` and of `omc quantize`.
CALIB_FLAGS = ConfigFlags(
    CalibConfig, only=("frames", "holdout_frames", "recheck_frames"), names={"holdout_frames": "--holdout"}
)
QUANTIZE_FLAGS = ConfigFlags(CalibConfig, only=("method", "keep_float"))


def register(subparsers: argparse._SubParsersAction) -> None:
    calib = subparsers.add_parser(
        "calib",
        help="make an INT8 calibration set from your own video, image folder or MOTChallenge sequences",
        description=(
            "Sample frames evenly from the sources, letterbox them to the engines' input size and store "
            "them (uint8) with held-out frames and tracklets from the float tracker, for omc quantize."
        ),
    )
    calib.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                       help="video file, image folder or MOTChallenge sequence folder (several allowed)")
    CALIB_FLAGS.add_to(calib)
    calib.add_argument("--engines", type=Path, default=Path(default_engines_dir()), metavar="DIR",
                       help="the float export (input size, float tracker) (default: %(default)s)")
    calib.add_argument("--out", type=Path, required=True, metavar="FILE", help="calibration set to write (.npz)")
    calib.set_defaults(func=run_calib)

    quantize = subparsers.add_parser(
        "quantize",
        help="write Q/DQ INT8 graphs (ONNX Runtime CPU and/or TensorRT) from a float export and a calibration set",
        description=(
            "Quantize detector.onnx and recheck.onnx to INT8 Q/DQ graphs. Several targets come from one "
            "calibration (the activation ranges are cached in <onnx dir>/int8-ranges). The heads, the "
            "decode/top-K/gather tail and the re-check similarity stay float."
        ),
    )
    quantize.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="the fp32 export (omc export)")
    quantize.add_argument("--calib", type=Path, required=True, metavar="FILE", help="calibration set (omc calib)")
    quantize.add_argument("--target", nargs="+", choices=QUANT_TARGETS, required=True,
                          help="cpu: uint8 activations, int8 per-channel weights (ONNX Runtime on x86); "
                               "tensorrt: symmetric int8 (TensorRT explicit quantization)")
    quantize.add_argument("--out", type=Path, metavar="DIR",
                          help="output folder (one target only; default: <onnx dir>/int8-<target>)")
    QUANTIZE_FLAGS.add_to(quantize)
    quantize.set_defaults(func=run_quantize)

    report = subparsers.add_parser(
        "int8-report",
        help="INT8 vs float on this CPU: detector latency side by side, CPU flags, drift on held-out frames",
        description=(
            "Time the float and the INT8 (cpu target) detector alternately in ONNX Runtime (ORT_ENABLE_ALL), "
            "report medians, the CPU's AVX2/AVX-512/VNNI/BF16/AMX flags and the drift figures on the "
            "calibration set's held-out frames, measured with this CPU's integer kernels (they differ between "
            "AVX2, AVX-512 VNNI and AMX) and, for comparison, with the graphs run as written in float. Exit "
            "status 1 when the drift is outside the bounds."
        ),
    )
    report.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="the fp32 export")
    report.add_argument("--calib", type=Path, required=True, metavar="FILE", help="calibration set (held-out frames)")
    report.add_argument("--int8", type=Path, metavar="DIR", help="INT8 export (default: <onnx dir>/int8-cpu)")
    report.add_argument("--repeats", type=int, default=10, metavar="N", help="timed runs per graph (default: %(default)s)")
    report.add_argument("--threads", type=int, default=0, metavar="N",
                        help="ONNX Runtime intra-op threads, both graphs (default: all cores)")
    report.add_argument("--profile", type=Path, metavar="DIR",
                        help="also write ONNX Runtime profiles there and print time per operator type")
    report.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    report.set_defaults(func=run_report)


def run_calib(args: argparse.Namespace) -> int:
    from omc.calib.dataset import build_calibration_set

    config = CALIB_FLAGS.config(args)
    files = RunFiles()
    for source in args.sources:
        files.read(source, "SOURCE")
    files.read_all((args.engines / name for name in contract.ENGINE_FOLDER_FILES), "--engines")
    files.write(args.out, "--out")
    path = build_calibration_set(args.sources, config.frames, args.engines, args.out, config)
    print(path)
    log.info("next: omc quantize --onnx %s --calib %s --target cpu tensorrt", args.engines, path)
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from omc.calib.quantize import default_out_dir, quantize_targets

    targets = list(dict.fromkeys(args.target))
    if args.out is not None and len(targets) > 1:
        raise BadInput("--out names one folder; give one --target with it, or drop --out (each target gets <onnx dir>/int8-<target>)")
    config = QUANTIZE_FLAGS.config(args)
    out_dirs = {targets[0]: args.out} if args.out is not None else {}
    files = RunFiles()
    files.read_all((args.onnx / name for name in contract.ENGINE_FOLDER_FILES), "--onnx")
    files.read(args.calib, "--calib")
    for target in targets:
        out_dir = Path(out_dirs.get(target, default_out_dir(args.onnx, target)))
        for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX, contract.EXPORT_JSON):
            files.write(out_dir / name, "--out" if args.out is not None else f"the {target} output")
    written = quantize_targets(args.onnx, args.calib, targets, out_dirs, config)
    for folder in written.values():
        print(folder)
    if "cpu" in written:
        log.info("next: omc int8-report --onnx %s --calib %s --int8 %s", args.onnx, args.calib, written["cpu"])
    if "tensorrt" in written:
        log.info("next (full TensorRT host): omc build --onnx %s --edition tensorrt", written["tensorrt"])
    return 0


def run_report(args: argparse.Namespace) -> int:
    from omc.calib.dataset import CalibrationSet
    from omc.calib.drift import drift_on_holdout
    from omc.calib.quantize import default_out_dir
    from omc.calib.speed import compare_detector_speed
    from omc.contract import DETECTOR_ONNX, EngineMeta

    if args.repeats < 1 or args.threads < 0:
        raise BadInput("--repeats must be at least 1 and --threads 0 or more")
    int8_dir = args.int8 if args.int8 is not None else default_out_dir(args.onnx, "cpu")
    if args.json is not None:
        files = RunFiles()
        for folder, what in ((args.onnx, "--onnx"), (int8_dir, "--int8")):
            files.read_all((folder / name for name in contract.ENGINE_FOLDER_FILES), what)
        files.read(args.calib, "--calib")
        files.write(args.json, "--json")
    meta = EngineMeta.load(int8_dir)
    if meta.precision != "int8":
        raise BadInput(f"{int8_dir} holds a {meta.precision} export, not INT8 graphs; run omc quantize first")
    record = meta.extra.get("int8", {})
    calibration = CalibrationSet.load(args.calib)
    frames = calibration.holdout_images if len(calibration.holdout_images) else calibration.images
    speed = compare_detector_speed(args.onnx / DETECTOR_ONNX, int8_dir / DETECTOR_ONNX, frames, repeats=args.repeats,
                                   threads=args.threads, profile_dir=args.profile)
    config = replace(CalibConfig(), keep_float=tuple(record.get("kept_float", {}).get("regions", FLOAT_REGIONS)))
    drift = drift_on_holdout(args.onnx, int8_dir, args.calib, config, intra_op_threads=args.threads)
    # The same graphs run as written (every operator in float): the quantization's own drift,
    # which every CPU shares; the integer kernels add their rounding to it (AVX2 more than VNNI / AMX).
    written = drift_on_holdout(args.onnx, int8_dir, args.calib, config, intra_op_threads=args.threads,
                               integer_kernels=False)  # fmt: skip
    print(f"INT8 export       {int8_dir} (target {record.get('target', '?')}, kept float: "
          f"{', '.join(config.keep_float) or 'nothing'})")
    print(speed.table())
    print("drift below: the INT8 graphs in this CPU's integer kernels (cpu flags above); AVX2-only CPUs "
          "drift more (README, INT8)")
    print(drift.table())
    print(f"quantization alone (the graphs as written, float kernels: the same on every CPU): median box error "
          f"{written.box_error_px_median:.2f} px, mean embedding cosine {written.embedding_cosine_mean:.4f}, "
          f"largest heat-map error {written.heatmap_error_max:.4f}")
    if args.json is not None:
        from omc.files import replacing

        figures = {"speed": speed.to_dict(), "drift": drift.to_dict(), "drift_as_written": written.to_dict(), "int8": record}
        with replacing(args.json, what="--json") as temporary:
            temporary.write_text(json.dumps(figures, indent=2) + "\n")
    problems = drift.violations()
    if problems:
        raise CheckFailed("INT8 drift outside the bounds: " + "; ".join(problems))
    sys.stdout.flush()
    return 0
