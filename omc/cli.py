"""The `omc` command: one entry point, one subcommand per job.

Each subpackage registers its own subcommands through a light `cli` module (no heavy imports at
module level, so `omc track` never imports torch). Exit status: 0 success, 1 a check that ran
and failed, 2 a user error (one line on stderr, no traceback), 130 interrupted. Any other
exception is a bug in omc and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from omc import __version__
from omc.errors import CheckFailed, OmcError, raised_by_interrupt

# Modules that define `register(subparsers)`; each subcommand sets `func(args) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "omc.export.cli",
    "omc.export.trt.cli",
    "omc.export.triton.cli",
    "omc.apps.cli",
    "omc.apps.cluster.cli",
    "omc.calib.cli",
    "omc.benchmarks.cli",
    "omc.benchmarks.streams_cli",
    "omc.benchmarks.triton_cli",
)

log = logging.getLogger("omc")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omc",
        description="Deploy the OMC multi-object tracker: export engines, track, calibrate, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"omc {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        register: Callable[[argparse._SubParsersAction], None] = module.register
        register(subparsers)
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("omc")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C is caught from here on, start-up (the subcommands' imports) included.
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.verbose, args.quiet)
    try:
        status = args.func(args)
    except CheckFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except OmcError as exc:
        if raised_by_interrupt(exc):
            raise KeyboardInterrupt from None
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)
