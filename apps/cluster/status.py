"""The status table of a running `omc cluster run`, and how another shell reads it.

The run registers a small named actor (`StatusBoard`, named STATUS_PREFIX + the run's name, in the
omc namespace) and publishes a `ClusterStatus` to it every ClusterConfig.status_interval_s. It
lives as long as the run (not detached): when the run ends, so does its table. `omc cluster
status` joins the Ray cluster, finds every table by name and prints each with `format_status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# Name prefix of the status actors (the run's name follows).
STATUS_PREFIX = "status:"
_COLUMNS = ("STREAM", "STATE", "WORKER", "MACHINE", "EPOCH", "FRAMES", "FPS", "DROPPED", "RECONNECTS", "LAST ERROR")


@dataclass(frozen=True)
class StreamRow:
    """One stream in the table: its state, the worker and machine (IP) running it, its epoch (times
    it moved to another worker), frames written, frames/s now, dropped frames, reconnects, last error."""

    stream: str
    state: str
    worker: str
    machine: str
    epoch: int
    frames: int
    frames_per_second: float
    dropped: int
    reconnects: int
    last_error: str | None


@dataclass(frozen=True)
class ClusterStatus:
    """A run's table: its name, Ray address, output folder, start and update times (s since the epoch)."""

    run: str
    address: str
    out_dir: str
    started: float
    updated: float
    rows: list[StreamRow]

    @property
    def frames_per_second(self) -> float:
        return sum(row.frames_per_second for row in self.rows)


class StatusBoard:
    """Holds the latest ClusterStatus of one run (a Ray actor; see the module docstring)."""

    def __init__(self) -> None:
        self._status: ClusterStatus | None = None

    def publish(self, status: ClusterStatus) -> None:
        self._status = status

    def read(self) -> ClusterStatus | None:
        return self._status


def format_status(status: ClusterStatus, now: float | None = None) -> str:
    """The table as text: a heading line, then one aligned row per stream."""
    now = time.time() if now is None else now
    heading = (
        f"run {status.run} on {status.address or 'Ray'}: {len(status.rows)} streams, "
        f"{status.frames_per_second:.1f} frames/s, up {now - status.started:.0f} s, "
        f"updated {max(0.0, now - status.updated):.1f} s ago, results in {status.out_dir}"
    )
    cells = [list(_COLUMNS)] + [
        [
            row.stream, row.state, row.worker, row.machine, str(row.epoch), str(row.frames),
            f"{row.frames_per_second:.1f}", str(row.dropped), str(row.reconnects), row.last_error or "-",
        ]  # fmt: skip
        for row in status.rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in cells]
    return "\n".join([heading, *(line.rstrip() for line in lines)])


def read_statuses(ray: Any, namespace: str) -> list[ClusterStatus]:
    """Every published table of the runs on the joined Ray cluster, by run name."""
    names = sorted(
        item["name"] for item in ray.util.list_named_actors(all_namespaces=True)
        if item.get("namespace") == namespace and item["name"].startswith(STATUS_PREFIX)
    )  # fmt: skip
    statuses = []
    for name in names:
        try:
            status = ray.get(ray.get_actor(name, namespace=namespace).read.remote(), timeout=10)
        except (ValueError, ray.exceptions.RayError):
            continue  # the run ended meanwhile
        if status is not None:
            statuses.append(status)
    return statuses
