"""`omc cluster run` (a streams file over Ray workers), `omc cluster status` (the table of a running
run, from any shell) and `omc cluster bench` (Ray's cost against one process).

Only argparse lives here; Ray and the runtime are imported inside the commands (the 'cluster'
extra; `omc --help` works without it).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from omc.config import AUTO_DEVICE, DEVICES, ID_LABELS, LOCAL_BACKENDS
from omc.errors import BadInput

if TYPE_CHECKING:
    from omc.apps.cluster.controller import ClusterSummary

log = logging.getLogger(__name__)



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="track a streams file's streams on Ray workers spread over several machines",
        description=(
            "Spread the streams of a streams file (the one omc track --streams reads, plus a [cluster] "
            "table) over stream workers on a Ray cluster: each worker runs the multi-stream runtime on "
            "its machine; only results and health travel. Needs the 'cluster' extra (pip install '.[cluster]')."
        ),
    )
    commands = parser.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    _register_run(commands)
    _register_status(commands)
    from omc.benchmarks.cluster_bench import register as register_bench

    register_bench(commands)


def _register_run(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="run a streams file on Ray workers until every stream is done (live streams: until Ctrl-C)",
        description=(
            "Start the workers of the streams file's [cluster] table, give each its streams (round-robin "
            "within each placement; node / resources pins respected), and write per stream DIR/<stream>.txt "
            "(MOTChallenge) and DIR/tracks.jsonl (one record per tracked frame) on this machine. A worker "
            "that dies has its streams moved to the others (a new epoch: files resume after their last "
            "written frame, ids are offset above the stream's earlier ids). Without --address a local "
            "Ray is started on 127.0.0.1 with the CPUs the workers reserve."
        ),
    )
    parser.add_argument("streams", type=Path, metavar="STREAMS.toml", help="streams file (see omc.apps.streams_file; [cluster]: see omc.apps.cluster)")
    parser.add_argument("--engines", required=True, type=Path, metavar="DIR", help="folder with export.json and the engines (the same path on every machine)")
    parser.add_argument("--out-dir", required=True, type=Path, metavar="DIR", help="folder for <stream>.txt and tracks.jsonl (written by this process)")
    parser.add_argument("--address", default=None, metavar="HOST:PORT", help="join this Ray cluster (ray start --head prints it; 'auto': the one started on this machine) instead of starting a local Ray")
    parser.add_argument("--name", default=None, metavar="RUN", help="run name: names the workers and the status table (default: the streams file's name)")
    parser.add_argument("--id-labels", choices=ID_LABELS, default="int", help="ids in the JSON records: int or stream ('door:3') (default: int)")
    parser.add_argument("--backend", choices=LOCAL_BACKENDS, default="ort", help="inference backend of every worker (default: ort)")
    parser.add_argument("--device", choices=DEVICES, default=AUTO_DEVICE, help="device of every worker (default: auto)")
    parser.set_defaults(func=run_cluster)


def _register_status(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "status",
        help="print every stream's health, worker, machine and frames/s of the runs on a Ray cluster",
        description="Join the Ray cluster and print the status table of every omc cluster run on it.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", default="auto", metavar="HOST:PORT", help="the Ray cluster (default: auto, the one ray start runs on this machine)")
    where.add_argument("--out-dir", type=Path, default=None, metavar="DIR", help="the run writing to DIR (a local run: its Ray address is in DIR/cluster.json)")
    parser.set_defaults(func=run_status)


def run_cluster(args: argparse.Namespace) -> int:
    from omc import contract
    from omc.apps.cluster.controller import ClusterRun
    from omc.apps.cluster.placement import cluster_config, plan_cluster, resource_demand
    from omc.apps.cluster.ray_session import connect, live_nodes, local_node, shutdown, start_local
    from omc.apps.streams_file import load_streams_file

    engines: Path = args.engines.resolve()
    if not (engines / contract.EXPORT_JSON).is_file():
        raise BadInput(f"--engines {args.engines} has no {contract.EXPORT_JSON}; point it at the output folder of omc export")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise BadInput(f"--out-dir {args.out_dir} exists and is not a folder")
    streams_file = load_streams_file(args.streams)
    config = cluster_config(streams_file.cluster, f"{args.streams} [cluster]")
    run_name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", args.streams.stem) or "omc"
    entries = streams_file.streams
    if args.address is None:
        cpus, gpus = resource_demand(entries, config)
        plan_cluster(entries, config, [local_node(cpus, gpus)], run_name)  # refuse before starting Ray
        address = start_local(cpus, gpus, config.ray_start_timeout_s)
    else:
        address = connect(args.address)
    try:
        plan = plan_cluster(entries, config, live_nodes(), run_name)
        run = ClusterRun(
            entries, plan, engines, args.out_dir.resolve(), config, streams_file.config, args.backend, args.device,
            run_name, args.id_labels, address,
        )  # fmt: skip
        log.info("%d streams on %d workers (Ray at %s); status: omc cluster status --out-dir %s", len(entries), len(plan.workers), address, args.out_dir)
        seconds = run.start()
        log.info("workers ready in %.1f s", seconds)
        summary = run.run()
    finally:
        shutdown()
    for line in _summary_lines(summary):
        log.info("%s", line)
    failed = [row for row in summary.status.rows if row.state == "failed"]
    if failed and len(failed) == len(summary.status.rows):
        raise BadInput("every stream failed: " + "; ".join(f"{row.stream}: {row.last_error}" for row in failed))
    return 0


def _summary_lines(summary: "ClusterSummary") -> list[str]:
    """The end-of-run lines: each stream's (as omc track), frames/s and workers lost, the table."""
    from omc.apps.cluster.status import format_status
    from omc.apps.track import TrackSummary, summary_lines

    lines = summary_lines(TrackSummary(summary.streams, summary.records, summary.seconds, {}))
    frames = sum(s.frames for s in summary.streams)
    rate = frames / summary.seconds if summary.seconds > 0 else 0.0
    lines.append(f"{frames} frames in {summary.seconds:.1f} s, {rate:.1f} frames/s; {summary.worker_failures} worker(s) lost")
    return lines + format_status(summary.status).splitlines()


def run_status(args: argparse.Namespace) -> int:
    from omc.apps.cluster.controller import RUN_FILE
    from omc.apps.cluster.ray_session import NAMESPACE, connect, import_ray, shutdown
    from omc.apps.cluster.status import format_status, read_statuses

    address = args.address
    if args.out_dir is not None:
        run_file = args.out_dir / RUN_FILE
        try:
            address = json.loads(run_file.read_text(encoding="utf-8"))["address"]
        except (OSError, ValueError, KeyError):
            raise BadInput(f"no running omc cluster run writes to {args.out_dir} ({run_file} is missing or unreadable)") from None
    connect(address)
    try:
        statuses = read_statuses(import_ray(local=False), NAMESPACE)
    finally:
        shutdown()
    if not statuses:
        raise BadInput(f"no omc cluster run is registered on the Ray cluster at {address}")
    print("\n\n".join(format_status(status) for status in statuses))
    return 0
