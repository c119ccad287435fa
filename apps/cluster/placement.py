"""Which worker runs which stream: placements, pins, the worker plan and the check against the machines.

A stream's placement comes from its keys in the streams file (omc.apps.streams_file):
- `node = "..."`: run on a machine matching it: its Ray node id, its IP, or a `key=value` node
  label (`ray start --labels=site=b`). Workers for these streams are pinned there with
  Ray's NodeAffinitySchedulingStrategy (hard: never elsewhere).
- `resources = {name = amount}`: the stream's worker asks Ray for these custom resources, so Ray
  places it on a machine started with them (`ray start --resources='{"site_b": 4}'`).

Streams with the same placement form a group with workers of its own: the unpinned group gets
[cluster] workers (or as many as streams_per_worker needs), every pinned group as many as
streams_per_worker needs (one without a limit). Within a group, streams go to its workers
round-robin in the streams file's order. `plan_cluster` refuses, with one line, a pin that no
machine of the cluster can meet and workers that do not fit the cluster's CPUs and GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from omc.apps.streams_file import StreamEntry
from omc.config import ClusterConfig
from omc.errors import BadInput

# Where a [cluster] or stream key is documented, for error messages.
_PIN_HELP = "pin a node id, an IP or a key=value node label"


@dataclass(frozen=True)
class Placement:
    """Where a stream may run. node: a node id, IP or `key=value` label (None: anywhere).
    resources: custom Ray resources its worker asks for, as sorted (name, amount) pairs."""

    node: str | None = None
    resources: tuple[tuple[str, float], ...] = ()

    @property
    def pinned(self) -> bool:
        return self.node is not None or bool(self.resources)

    def describe(self) -> str:
        parts = [f"node {self.node}"] if self.node is not None else []
        parts += [f"{name}={amount:g}" for name, amount in self.resources]
        return ", ".join(parts) or "any machine"


def placement_of(entry: StreamEntry) -> Placement:
    """The placement a stream's `node` / `resources` keys ask for; BadInput for a malformed value."""
    where = f"stream {entry.spec.name}"
    node = entry.placement.get("node")
    if node is not None and (not isinstance(node, str) or not node.strip()):
        raise BadInput(f"{where}: node must be a non-empty string ({_PIN_HELP})")
    resources = entry.placement.get("resources", {})
    if not isinstance(resources, Mapping):
        raise BadInput(f"{where}: resources must be a table of name = amount, e.g. resources = {{ site_b = 1 }}")
    pairs = []
    for name, amount in resources.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < math.inf:
            raise BadInput(f"{where}: resource {name} must be a positive number, got {amount!r}")
        if name in ("CPU", "GPU", "memory"):
            raise BadInput(f"{where}: resources name custom Ray resources; CPUs and GPUs come from [cluster] cpus_per_worker / gpus_per_worker")
        pairs.append((str(name), float(amount)))
    return Placement(node.strip() if node is not None else None, tuple(sorted(pairs)))


@dataclass(frozen=True)
class NodeInfo:
    """One machine of the Ray cluster: its node id, IP, labels and total resources."""

    node_id: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)

    def matches(self, pin: str) -> bool:
        """The node pin names this machine: its node id, its IP, or one of its labels as key=value."""
        if pin in (self.node_id, self.ip):
            return True
        key, sep, value = pin.partition("=")
        return bool(sep) and self.labels.get(key.strip()) == value.strip()

    def describe(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in self.labels.items() if not k.startswith("ray.io/"))
        custom = ", ".join(f"{k}={v:g}" for k, v in self.resources.items() if _is_custom(k))
        extra = "; ".join(part for part in (labels, custom) if part)
        return f"{self.ip} ({extra})" if extra else self.ip


def _is_custom(resource: str) -> bool:
    return resource not in ("CPU", "GPU", "memory", "object_store_memory") and not resource.startswith("node:")


@dataclass(frozen=True)
class WorkerSpec:
    """One stream worker to start: its name, the placement group it serves, the node it is pinned
    to (node pins; None: anywhere Ray likes), and the Ray resources it reserves."""

    name: str
    placement: Placement
    node_id: str | None
    num_cpus: float
    num_gpus: float

    @property
    def custom_resources(self) -> dict[str, float]:
        return dict(self.placement.resources)


@dataclass(frozen=True)
class ClusterPlan:
    """The workers to start and, per stream, the worker it starts on (stream name -> worker name)."""

    workers: list[WorkerSpec]
    assignment: dict[str, str]
    placements: dict[str, Placement]

    def streams_of(self, worker: str) -> list[str]:
        return [stream for stream, name in self.assignment.items() if name == worker]


def cluster_config(table: Mapping[str, object], where: str = "[cluster]") -> ClusterConfig:
    """ClusterConfig from a streams file's [cluster] table; BadInput naming a bad key or value."""
    from omc.apps.streams_file import dataclass_from_table

    config: ClusterConfig = dataclass_from_table(ClusterConfig, table, where)
    return config


def workers_per_group(entries: Sequence[StreamEntry], config: ClusterConfig) -> dict[Placement, int]:
    """How many workers each placement group gets (see the module docstring); BadInput when
    [cluster] workers cannot hold the unpinned streams under streams_per_worker."""
    groups: dict[Placement, int] = {}
    for entry in entries:
        placement = placement_of(entry)
        groups[placement] = groups.get(placement, 0) + 1
    limit = config.streams_per_worker
    counts = {}
    for placement, streams in groups.items():
        needed = math.ceil(streams / limit) if limit else 1
        if not placement.pinned and config.workers:
            if config.workers < needed:
                raise BadInput(
                    f"[cluster] workers = {config.workers} with streams_per_worker = {limit} hold "
                    f"{config.workers * limit} streams, but {streams} streams have no pin; raise either"
                )
            needed = config.workers
        counts[placement] = needed
    return counts


def resource_demand(entries: Sequence[StreamEntry], config: ClusterConfig) -> tuple[float, float]:
    """(CPUs, GPUs) that all the planned workers reserve together."""
    workers = sum(workers_per_group(entries, config).values())
    return workers * config.cpus_per_worker, workers * config.gpus_per_worker


def plan_cluster(
    entries: Sequence[StreamEntry], config: ClusterConfig, nodes: Sequence[NodeInfo], prefix: str
) -> ClusterPlan:
    """Workers and the streams each starts with, checked against the live machines `nodes`.

    prefix: the start of every worker's name (the run's name). BadInput, one line, for a stream
    whose pin no machine meets, or workers the cluster's CPUs / GPUs cannot hold.
    """
    if not nodes:
        raise BadInput("the Ray cluster has no live machine")
    for entry in entries:
        if entry.save_video is not None:
            raise BadInput(
                f"stream {entry.spec.name}: save_video is not available with omc cluster (frames stay on the "
                "worker that decodes them); use omc track for overlay videos"
            )
    counts = workers_per_group(entries, config)
    placements = {entry.spec.name: placement_of(entry) for entry in entries}
    for entry in entries:
        eligible_nodes(placements[entry.spec.name], config, nodes, entry.spec.name)
    _check_capacity(counts, config, nodes)
    workers: list[WorkerSpec] = []
    assignment: dict[str, str] = {}
    for placement, count in counts.items():
        group = [worker_spec(f"{prefix}-w{len(workers) + i + 1}", placement, config, nodes, i) for i in range(count)]
        members = [name for name, p in placements.items() if p == placement]
        for index, stream in enumerate(members):  # round-robin in the streams file's order
            assignment[stream] = group[index % count].name
        workers += group
    return ClusterPlan(workers, assignment, placements)


def eligible_nodes(placement: Placement, config: ClusterConfig, nodes: Sequence[NodeInfo], stream: str | None = None) -> list[NodeInfo]:
    """The machines where a worker of `placement` can run; BadInput (naming `stream`) when none can."""
    candidates = [n for n in nodes if placement.node is None or n.matches(placement.node)]
    who = f"stream {stream}" if stream else f"placement {placement.describe()}"
    machines = "; ".join(n.describe() for n in nodes)
    if not candidates:
        raise BadInput(
            f"{who} is pinned to node '{placement.node}' but no machine of the Ray cluster matches it "
            f"(machines: {machines}); {_PIN_HELP}"
        )
    needs = {**dict(placement.resources), "CPU": config.cpus_per_worker}
    if config.gpus_per_worker:
        needs["GPU"] = config.gpus_per_worker
    fitting = [n for n in candidates if all(n.resources.get(k, 0.0) >= v for k, v in needs.items())]
    if not fitting:
        wanted = ", ".join(f"{k}={v:g}" for k, v in needs.items())
        custom = ", ".join(f"{k}={v:g}" for k, v in placement.resources)
        hint = f"; start a machine with ray start --resources='{{{custom}}}'" if custom else ""
        raise BadInput(f"{who} needs a worker with {wanted} but no machine of the Ray cluster has them (machines: {machines}){hint}")
    return fitting


def worker_spec(name: str, placement: Placement, config: ClusterConfig, nodes: Sequence[NodeInfo], index: int) -> WorkerSpec:
    """A worker of `placement`; node pins go to the matching machines in turn (`index`)."""
    node_id = None
    if placement.node is not None:
        fitting = eligible_nodes(placement, config, nodes)
        node_id = fitting[index % len(fitting)].node_id
    return WorkerSpec(name, placement, node_id, config.cpus_per_worker, config.gpus_per_worker)


def _check_capacity(counts: Mapping[Placement, int], config: ClusterConfig, nodes: Sequence[NodeInfo]) -> None:
    workers = sum(counts.values())
    for resource, each in (("CPU", config.cpus_per_worker), ("GPU", config.gpus_per_worker)):
        total = sum(n.resources.get(resource, 0.0) for n in nodes)
        if each and workers * each > total + 1e-9:
            key = "cpus_per_worker" if resource == "CPU" else "gpus_per_worker"
            raise BadInput(
                f"{workers} workers x {each:g} {resource} do not fit the Ray cluster's {total:g} {resource}s; "
                f"lower [cluster] workers or {key}, or add machines"
            )


def choose_worker(placement: Placement, loads: Mapping[str, tuple[Placement, int]], limit: int) -> str | None:
    """The live worker of `placement` with the fewest streams and room under `limit` (0: none);
    ties go to the earlier worker. loads: worker name -> (its placement, its stream count)."""
    best: tuple[int, str] | None = None
    for name, (worker_placement, load) in loads.items():
        if worker_placement != placement or (limit and load >= limit):
            continue
        if best is None or load < best[0]:
            best = (load, name)
    return best[1] if best is not None else None
