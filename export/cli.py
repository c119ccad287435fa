"""`omc` subcommands of the export package: `inspect` (what a checkpoint holds).

Registered through omc.cli's COMMAND_MODULES. Nothing heavy is imported at module level (torch
loads only when a subcommand of this module runs), so other subcommands stay torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TextIO

from omc.errors import BadInput

if TYPE_CHECKING:
    from omc.export.checkpoint import LoadedCheckpoint

# Variants `--random-weights` can build (omc.export.model.VARIANT_MULTIPLES; kept literal here
# so that building the parser does not import torch).
RANDOM_VARIANTS = ("s", "m", "l", "x")
DEFAULT_RANDOM_VARIANT = "l"
DEFAULT_RANDOM_SEED = 0
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


def checkpoint_from_args(checkpoint: Path | None, random_weights: bool, variant: str, seed: int) -> "LoadedCheckpoint":
    """LoadedCheckpoint from the shared options; BadInput when both or neither source is given."""
    if random_weights and checkpoint is not None:
        raise BadInput("give either a checkpoint or --random-weights, not both")
    if not random_weights and checkpoint is None:
        raise BadInput("give a checkpoint file, or --random-weights for a seeded random network")
    from omc.export.checkpoint import load_checkpoint, random_checkpoint

    if checkpoint is None:
        return random_checkpoint(variant, seed=seed)
    return load_checkpoint(checkpoint)


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
    loaded = checkpoint_from_args(args.checkpoint, args.random_weights, args.variant, args.seed)
    summary = loaded.summary()
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print_summary(summary, sys.stdout)
    return 0
