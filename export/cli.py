"""`omc` subcommands of the export package: `inspect` (what a checkpoint holds), `export` (the
ONNX engines and export.json) and `verify` (an export against the PyTorch reference).

Registered through omc.cli's COMMAND_MODULES. Nothing heavy is imported at module level (torch
loads only when a subcommand of this module runs), so other subcommands stay torch-free.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from omc.config import LOCAL_BACKENDS, ExportConfig, VerifyConfig
from omc.errors import BadInput
from omc.flags import ConfigFlags
from omc.export.weights_source import DEFAULT_RANDOM_SEED, DEFAULT_RANDOM_VARIANT, RANDOM_VARIANTS, WeightsSource

log = logging.getLogger(__name__)

# Config keys holding layer rows, in layer order.
LAYER_LISTS = ("backbone", "head")


def add_weights_arguments(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    """The checkpoint source options shared by subcommands: CKPT (or --weights) or --random-weights.

    Either way the path lands in `args.checkpoint` (None when not given).
    """
    what = "checkpoint file (reference stage-1/2 training checkpoint, state dict or omc format)"
    if positional:
        parser.add_argument("checkpoint", nargs="?", type=Path, metavar="CKPT", help=what)
    else:
        parser.add_argument("--weights", dest="checkpoint", type=Path, metavar="CKPT", help=what)
    parser.add_argument("--random-weights", action="store_true",
                        help="use a seeded random network instead of a checkpoint (its detections mean nothing)")
    parser.add_argument("--variant", choices=RANDOM_VARIANTS, default=DEFAULT_RANDOM_VARIANT,
                        help="variant of the random network (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_RANDOM_SEED,
                        help="seed of the random network (default: %(default)s)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show what a checkpoint holds: variant, parameters, re-check network, config, training options",
        description="Read a checkpoint safely (no code from the file runs) and print what it holds.",
    )
    add_weights_arguments(parser, positional=True)
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    parser.set_defaults(func=run_inspect)
    _register_export(subparsers)
    _register_verify(subparsers)


def weights_from_args(args: argparse.Namespace) -> WeightsSource:
    """The checkpoint source options (add_weights_arguments) as a WeightsSource."""
    return WeightsSource(args.checkpoint, args.random_weights, args.variant, args.seed)


def _flow(value: Any) -> str:
    """One-line YAML of a value."""
    import yaml

    text: str = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("\n...").strip()


def _write_mapping(out: TextIO, mapping: Mapping[str, Any], indent: str) -> None:
    for key in sorted(mapping, key=str):
        out.write(f"{indent}{key}: {json.dumps(mapping[key])}\n")


def print_summary(summary: Mapping[str, Any], out: TextIO) -> None:
    """Human-readable facts of LoadedCheckpoint.summary()."""
    from omc.export.checkpoint import describe_format

    rows = [
        ("checkpoint", summary["checkpoint"] or "(none: random weights)"),
        ("sha256", summary["sha256"] or "-"),
        ("format", describe_format(summary["format"])),
        ("variant", f"{summary['variant']} (depth_multiple {summary['depth_multiple']}, "
                    f"width_multiple {summary['width_multiple']})"),
        ("parameters", f"{summary['parameters']:,} (base {summary['base_parameters']:,}, "
                       f"re-check {summary['recheck_parameters']:,})"),
        ("re-check", f"yes, channel base C = {summary['recheck_channels']}, Global_Point "
                     f"{'on' if summary['global_point'] else 'off'}, shrink radius {summary['shrink_radius']}"
         if summary["has_recheck"] else "no (stage-1 / CSTrack only)"),
        ("ID embedding", f"{summary['embedding_dim']}-d"),
        ("levels", f"channels {summary['level_channels']} at strides {summary['level_strides']}"),
        ("epoch", "-" if summary["epoch"] is None else summary["epoch"]),
    ]
    layer = 0
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.write(f"{name:<{width}}  {value}\n")
    out.write("config:\n")
    for key, value in summary["config"].items():
        if isinstance(value, list) and key in LAYER_LISTS:
            # One layer per line: [from, repeats, module, args].
            out.write(f"  {key}:\n" + "".join(f"    - {_flow(row)}  # {i}\n" for i, row in enumerate(value, start=layer)))
            layer += len(value)
        else:
            out.write(f"  {key}: {_flow(value)}\n")
    options = summary["training_options"]
    out.write("training options:" + ("\n" if options else " (none recorded)\n"))
    _write_mapping(out, options, "  ")


def run_inspect(args: argparse.Namespace) -> int:
    loaded = weights_from_args(args).load()
    summary = loaded.summary()
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print_summary(summary, sys.stdout)
    return 0


# --- omc export ------------------------------------------------------------------------------------


# The options that shape an export (every ExportConfig field), shared by `export` and `verify`.
EXPORT_FLAGS = ConfigFlags(ExportConfig, title="export options")
VERIFY_FLAGS = ConfigFlags(VerifyConfig)


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export detector.onnx, recheck.onnx and export.json from a checkpoint",
        description=(
            "Trace the OMC network to the two ONNX graphs of the engine contract (detector, re-check) and "
            "write export.json. Files are written under temporary names and renamed at the end."
        ),
    )
    add_weights_arguments(parser, positional=False)
    EXPORT_FLAGS.add_to(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the export into")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    config = EXPORT_FLAGS.config(args)
    weights = weights_from_args(args)
    weights.check()
    from omc.export.onnx_export import check_output_folder, export_engines

    check_output_folder(args.out)
    from omc.contract import DETECTOR_ONNX, EXPORT_JSON, RECHECK_ONNX
    from omc.files import RunFiles

    files = RunFiles()
    if args.checkpoint is not None:
        files.read(args.checkpoint, "--weights")
    for name in (DETECTOR_ONNX, RECHECK_ONNX, EXPORT_JSON):
        files.write(args.out / name, "--out")
    width, height = config.img_size
    loaded = weights.load((height, width))
    result = export_engines(loaded, config, args.out, seed=weights.export_seed)
    for written in result.files:
        print(written.path)
    print(result.out_dir / "export.json")
    out = result.out_dir
    next_steps = (f"omc verify --onnx {out}", f"omc build --onnx {out}", f"omc track VIDEO --engines {out}")
    log.info("export finished in %.1f s; next: %s", sum(f.seconds for f in result.files), " | ".join(next_steps))
    return 0


# --- omc verify ------------------------------------------------------------------------------------


def _register_verify(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="compare an export with the PyTorch reference (exit 1 outside tolerance)",
        description=(
            "Run the exported graphs (ONNX Runtime, or TensorRT against ONNX Runtime with --backend trt) and "
            "the PyTorch reference on the same frames and tracklets; print each output's errors. fp32 exports "
            "must match within float32 rounding, fp16 exports are judged on their drift. Exit 0 within "
            "tolerance, 1 outside, 2 on bad input."
        ),
    )
    parser.add_argument("--onnx", type=Path, metavar="DIR",
                        help="export folder (export.json names the weights it came from); without it, the "
                             "checkpoint is exported to a temporary folder first")
    add_weights_arguments(parser, positional=False)
    parser.add_argument("--frames", type=Path, metavar="SOURCE",
                        help="video, image folder or MOTChallenge sequence (default: generated frames; for an "
                             "INT8 export, the held-out frames of its calibration set)")
    VERIFY_FLAGS.add_to(parser)
    parser.add_argument("--backend", choices=LOCAL_BACKENDS, default="ort",
                        help="ort: ONNX Runtime vs PyTorch; trt: the TensorRT plans in --onnx DIR vs ONNX Runtime "
                             "(needs a GPU) (default: %(default)s)")
    parser.add_argument("--device", default="0", help="GPU of --backend trt (default: %(default)s)")
    EXPORT_FLAGS.add_to(parser)
    parser.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from omc.export.verify import verify

    config = EXPORT_FLAGS.config(args)
    given = [EXPORT_FLAGS.flag(name) for name in EXPORT_FLAGS.given(args)]
    if args.onnx is not None and given:
        raise BadInput(f"{', '.join(given)} shape a new export and do not apply to --onnx {args.onnx}")
    outcome = verify(
        args.onnx, weights_from_args(args), export_config=config, frames=args.frames, config=VERIFY_FLAGS.config(args),
        backend=args.backend, device=int(args.device) if args.device.isdigit() else args.device,
    )  # fmt: skip
    sys.stdout.write(outcome.text() + "\n")
    outcome.raise_if_failed()
    return 0
