"""Ray for omc cluster: import it (the optional 'cluster' extra), start a local one or join a cluster.

`start_local` starts Ray inside this process on 127.0.0.1 only (no dashboard, the CPUs the
workers reserve, a bounded start-up); `connect` joins a running cluster (`ray start --head` on
one machine, `ray start --address=HEAD:6379` on the others). Both use one namespace, so the
status table a run registers (omc.apps.cluster.controller) is found from another shell.

Two settings are made before Ray is imported, process-wide, because Ray reads them at import:
- a local Ray stays on the loopback address: Ray otherwise advertises the machine's own IP
  (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it use 127.0.0.1, as on a laptop), and starts no
  idle worker processes ahead of need (RAY_enable_worker_prestart=0): each costs ~0.015 cores
  while it waits, and every worker of omc is an actor of its own anyway;
- Ray's token authentication is turned on explicitly when a token exists (or a local Ray makes
  one in ~/.ray/auth_token): a client that leaves the mode unset does not send the token and is
  refused by a cluster that requires it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from omc.apps.cluster.placement import NodeInfo
from omc.errors import BadInput, MissingDependency, OmcError

log = logging.getLogger(__name__)

# The Ray namespace of every omc cluster actor (workers, status tables).
NAMESPACE = "omc-cluster"
LOOPBACK = "127.0.0.1"
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_PRESTART_ENV = "RAY_enable_worker_prestart"
_AUTH_ENV = "RAY_AUTH_MODE"
_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def is_loopback(address: str) -> bool:
    """True for host:port addresses on 127.0.0.0/8, localhost or ::1 (a Ray on this machine only)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_ray(local: bool) -> ModuleType:
    """The `ray` module; local: keep Ray on 127.0.0.1 (see the module docstring).

    MissingDependency naming the 'cluster' extra when Ray is not installed.
    """
    if "ray" not in sys.modules:
        if local:
            os.environ.setdefault(_LOOPBACK_ENV, "0")
            os.environ.setdefault(_PRESTART_ENV, "0")
        if _AUTH_ENV not in os.environ and (local or _TOKEN_FILE.is_file()):
            os.environ[_AUTH_ENV] = "token"
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency("Ray", "cluster", str(exc)) from None
    return ray


def start_local(num_cpus: float, num_gpus: float, timeout_s: float) -> str:
    """Start Ray in this process on 127.0.0.1 with these resources; returns its address (host:port).

    OmcError when it does not start within `timeout_s` seconds (what it started is shut down).
    Ray must start in the main thread: the processes it starts end with the thread that started
    them (PR_SET_PDEATHSIG), so the bound is a SIGALRM timer there, not a helper thread.
    """
    ray = import_ray(local=True)
    started = time.perf_counter()
    bounded = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _start_timed_out) if bounded else None
    if bounded:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        ray.init(
            num_cpus=max(1, math.ceil(num_cpus)), num_gpus=math.ceil(num_gpus) if num_gpus else None,
            include_dashboard=False, _node_ip_address=LOOPBACK, namespace=NAMESPACE,
            logging_level=logging.WARNING,
        )  # fmt: skip
    except _StartTimeout:
        ray.shutdown()
        raise OmcError(f"the local Ray did not start within {timeout_s:g} s (raise [cluster] ray_start_timeout_s on a busy machine)") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        ray.shutdown()
        raise OmcError(f"the local Ray did not start: {_last_line(exc)}") from None
    finally:
        if bounded:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    address = str(ray.get_runtime_context().gcs_address)
    log.info("local Ray started at %s in %.1f s (%g CPUs)", address, time.perf_counter() - started, num_cpus)
    return address


class _StartTimeout(Exception):
    pass


def _start_timed_out(signum: int, frame: object) -> None:
    raise _StartTimeout()


def connect(address: str) -> str:
    """Join the Ray cluster at `address` (host:port, or "auto": the one `ray start` runs here)."""
    ray = import_ray(local=is_loopback(address))
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BadInput(f"cannot join a Ray cluster at {address}: {_last_line(exc)}") from None
    return str(ray.get_runtime_context().gcs_address)


def shutdown() -> None:
    """Leave Ray (a local Ray started here stops with it)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def live_nodes() -> list[NodeInfo]:
    """The cluster's live machines (their node id, IP, labels and total resources)."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive", False):
            continue
        nodes.append(
            NodeInfo(
                str(node["NodeID"]), str(node["NodeManagerAddress"]), dict(node.get("Labels") or {}),
                {str(k): float(v) for k, v in (node.get("Resources") or {}).items()},
            )  # fmt: skip
        )
    return nodes


def local_node(num_cpus: float, num_gpus: float) -> NodeInfo:
    """The one machine a local Ray will have (for checking a plan before starting it)."""
    resources: dict[str, Any] = {"CPU": float(max(1, math.ceil(num_cpus)))}
    if num_gpus:
        resources["GPU"] = float(math.ceil(num_gpus))
    return NodeInfo("local", LOOPBACK, {}, resources)


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else exc.__class__.__name__

