"""A stream worker: one StreamRuntime inside a Ray actor, tracking the streams the driver gives it.

The class is plain Python (no Ray import here); omc.apps.cluster.controller turns it into an actor
with `ray.remote` and the worker's resources. Frames are decoded, letterboxed and tracked inside
the worker; only results and health leave it, through `take()`, which the driver calls every few
tens of milliseconds.

A stream given again after its worker died resumes from a frame (`Assignment.start_after`): a file
skips the frames already written (read and dropped before tracking), a live source simply opens
at its live position. Its tracker is new either way.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

from omc.config import StreamConfig
from omc.runtime.sources import FrameBGR, FrameSource, open_source, redact_url
from omc.runtime.stream_reader import SourceSpec
from omc.runtime.streams import StreamHealth, StreamResult, StreamRuntime, StreamSpec

log = logging.getLogger(__name__)

# Longest the worker's loop waits for a new stream when it has nothing to track (s).
_IDLE_WAIT_S = 0.1
# Longest `close()` waits for the loop thread (s).
_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Assignment:
    """A stream for a worker. start_after: frames of the source to skip first (a file resumed
    after its last written frame; 0 otherwise). epoch: how many times the stream has moved."""

    spec: StreamSpec
    epoch: int = 0
    start_after: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    """Where a worker runs: its name, Ray node id, machine IP and process id."""

    name: str
    node_id: str
    ip: str
    pid: int


@dataclass(frozen=True)
class WorkerReport:
    """What `take()` hands the driver: the results tracked since the last call, in order; every
    stream's health and frame rate (fps, None until its source is open); idle: every stream is
    done and all its results are in `results`."""

    results: list[StreamResult]
    health: dict[str, StreamHealth]
    frame_rates: dict[str, float | None]
    idle: bool


class StreamWorker:
    """One StreamRuntime over one pair of engines, run in its own thread (see the module docstring).

    name: the worker's name (the actor's). engine_dir, backend, device: the engines, opened here
    (a GPU worker opens them on its GPU). config: the runtime's queueing and batching.
    intra_op_threads: ONNX Runtime threads per operator (0: its default); ignored by TensorRT.
    """

    def __init__(
        self,
        name: str,
        engine_dir: str,
        backend: str = "ort",
        device: str = "auto",
        config: StreamConfig = StreamConfig(),
        intra_op_threads: int = 0,
    ) -> None:
        options = {"intra_op_threads": intra_op_threads} if backend == "ort" else {}
        self.name = name
        self.runtime = StreamRuntime.from_engines(engine_dir, (), backend=backend, device=device, config=config, **options)
        self._results: deque[StreamResult] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = True
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"omc-worker-{name}", daemon=True)
        self._thread.start()

    def info(self) -> WorkerInfo:
        """Where this worker runs (also the driver's sign that its engines are open)."""
        import ray  # only ever called inside a Ray actor

        context = ray.get_runtime_context()
        return WorkerInfo(self.name, context.get_node_id(), ray.util.get_node_ip_address(), os.getpid())

    def assign(self, assignments: list[Assignment]) -> None:
        """Start tracking these streams (a name that ran here before and is done is replaced)."""
        # Under the lock with the wake-up: the loop cannot report idle while a new stream's
        # frames are still to come.
        with self._lock:
            for item in assignments:
                spec = item.spec
                if item.start_after:
                    spec = replace(spec, source=ResumedSource(spec.source, item.start_after, self.runtime.config))
                if spec.name in self.runtime.stream_names:
                    self.runtime.remove_stream(spec.name)
                self.runtime.add_stream(spec)
                log.info("worker %s: stream %s (epoch %d, from frame %d)", self.name, spec.name, item.epoch, item.start_after + 1)
            self._idle = False
            self._wake.set()

    def take(self) -> WorkerReport:
        """The results tracked since the last call, and every stream's health now."""
        with self._lock:
            idle = self._idle
            results = list(self._results)
            self._results.clear()
        names = self.runtime.stream_names
        return WorkerReport(results, self.runtime.health(), {n: self.runtime.frame_rate(n) for n in names}, idle)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self.runtime.close()
        self._thread.join(_JOIN_TIMEOUT_S)

    def _loop(self) -> None:
        """Track until closed; between runs of `results()` (every stream done) wait for new streams."""
        while not self._closed.is_set():
            with self._lock:
                self._wake.clear()
            for result in self.runtime.results():
                with self._lock:
                    self._results.append(result)
                if self._closed.is_set():
                    return
            with self._lock:
                # Idle only when no stream came in while results() ran: its results are all queued.
                if not self._wake.is_set():
                    self._idle = True
            self._wake.wait(_IDLE_WAIT_S)


class ResumedSource:
    """Opens a stream's source and skips its first `start_after` frames (a callable SourceSpec).

    Frames are numbered from 1 again after the skip; the driver adds `start_after` back.
    """

    def __init__(self, source: SourceSpec, start_after: int, config: StreamConfig) -> None:
        self.source = source
        self.start_after = start_after
        self.config = config
        # StreamReader shows a callable source by its __name__ (health's source column).
        self.__name__ = _describe(source)

    def __call__(self) -> FrameSource:
        if callable(self.source):
            inner = self.source()
        else:
            inner = open_source(self.source, self.config.open_timeout_s, self.config.read_timeout_s)
        return _SkippingSource(inner, self.start_after)


class _SkippingSource(FrameSource):
    """`inner` without its first `skip` frames (they are decoded and dropped)."""

    def __init__(self, inner: FrameSource, skip: int) -> None:
        count = None if inner.frame_count is None else max(inner.frame_count - skip, 0)
        super().__init__(inner.path, inner.name, inner.frame_rate, count)
        self.is_live = inner.is_live
        self._inner = inner
        self._skip = skip

    def _frames(self) -> Iterator[tuple[int, FrameBGR]]:
        for number, (_, frame) in enumerate(self._inner, 1):
            if number > self._skip:
                yield number - self._skip, frame

    def close(self) -> None:
        self._inner.close()


def _describe(source: SourceSpec) -> str:
    if callable(source):
        return str(getattr(source, "__name__", "a source"))
    return redact_url(source) if isinstance(source, str) else str(source)


def engine_threads(cpus_per_worker: float) -> int:
    """ONNX Runtime threads per operator for a worker that reserves `cpus_per_worker` Ray CPUs."""
    return max(1, math.ceil(cpus_per_worker))
