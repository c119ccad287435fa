"""The driver of `omc cluster run`: starts the workers, writes every stream's results, moves the
streams of a dead worker, and publishes the status table.

`ClusterRun` runs in the driver process (the machine `omc cluster run` was started on). It
creates one Ray actor per planned worker (omc.apps.cluster.placement), hands each its streams,
then collects results and health from every worker every ClusterConfig.poll_interval_s and
writes them with omc.apps.track.StreamOutputs into the output folder: the driver is the only
writer, so a worker that dies never leaves a half-written file behind.

Faults. A worker whose actor dies (ray.kill, a crash, its machine gone) is noticed at the next
collection. Each of its streams not yet done moves to the live worker of its placement with the
fewest streams (a replacement worker is started when none has room) and starts a new epoch:
- a file resumes at the frame after the last one written: nothing is written twice and no
  frame is missing (frames the dead worker had tracked but not yet handed over are tracked again);
- a live source reopens at its live position; the frames the sender sent meanwhile (the time
  since the last written frame times the frame rate) are added to the frame index and reported
  as `skipped`, as after a reconnect;
- the new tracker's ids are offset by the largest id the stream had written, so ids stay unique
  integers within the stream's MOTChallenge file (which stays one file) and the JSON Lines records.
A downstream consumer sees at the gap: every track ends, the next record has "epoch" one higher
(and for a live stream "skipped" > 0), and new tracks get ids above every earlier one; frames
written before the failure stay as they were.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omc.apps.cluster.placement import ClusterPlan, Placement, WorkerSpec, choose_worker, eligible_nodes, worker_spec
from omc.apps.cluster.ray_session import NAMESPACE, live_nodes
from omc.apps.cluster.status import STATUS_PREFIX, ClusterStatus, StatusBoard, StreamRow
from omc.apps.cluster.worker import Assignment, StreamWorker, WorkerInfo, WorkerReport, engine_threads
from omc.apps.streams_file import StreamEntry
from omc.apps.track import StreamOutputs, StreamSummary
from omc.config import ClusterConfig, StreamConfig
from omc.errors import BadInput, OmcError
from omc.runtime.sources import is_live_location
from omc.runtime.streams import StreamHealth, StreamResult
from omc.runtime.tracks import Track

log = logging.getLogger(__name__)

# The file in the output folder that tells `omc cluster status --out-dir` where the run's Ray is.
RUN_FILE = "cluster.json"
# The JSON Lines file of every stream's records in the output folder.
RECORDS_FILE = "tracks.jsonl"
# Seconds between attempts to start a replacement worker for a placement no machine fits now.
_REPLACE_RETRY_S = 5.0
# Final stream states (omc.runtime.stream_reader.StreamState).
_FINAL_STATES = ("finished", "failed", "stopped")


@dataclass
class _Worker:
    spec: WorkerSpec
    handle: Any  # the Ray actor
    ready: Any  # ObjectRef of info() until the worker has started
    info: WorkerInfo | None = None
    alive: bool = True
    idle: bool = True
    streams: set[str] = field(default_factory=set)
    pending: Any = None  # the take() call in flight


@dataclass
class _Stream:
    entry: StreamEntry
    placement: Placement
    worker: str | None = None
    epoch: int = 0
    index_offset: int | None = 0  # None: a live stream's new epoch, fixed by its first frame
    id_offset: int = 0
    last_index: int = 0
    last_capture: float | None = None
    max_id: int = 0
    frames: int = 0
    frame_rate: float | None = None
    live: bool | None = None
    health: StreamHealth | None = None
    state: str | None = None  # set by the driver: "waiting" (no worker), "finished" (nothing left)

    @property
    def name(self) -> str:
        return self.entry.spec.name


@dataclass(frozen=True)
class ClusterSummary:
    """A finished run: every stream's summary (omc.apps.track), the records file, the seconds it
    ran (from the workers' start), how many workers died, and the final status table."""

    streams: list[StreamSummary]
    records: Path
    seconds: float
    worker_failures: int
    status: ClusterStatus


class ClusterRun:
    """One `omc cluster run` on a joined Ray (see the module docstring).

    plan: workers and first assignment (placement.plan_cluster). engine_dir, backend, device: the
    engines every worker opens (the same path on every machine, or shared storage). out_dir: the
    results (written here by the driver). run_name: names the workers and the status table.
    address: the Ray cluster's (shown in the status table). on_write: called with each result as
    written (frame index and ids as in the files), e.g. to time a run.
    """

    def __init__(
        self,
        entries: Sequence[StreamEntry],
        plan: ClusterPlan,
        engine_dir: Path,
        out_dir: Path,
        config: ClusterConfig = ClusterConfig(),
        stream_config: StreamConfig = StreamConfig(),
        backend: str = "ort",
        device: str = "auto",
        run_name: str = "omc",
        id_labels: str = "int",
        address: str = "",
        on_write: Callable[[StreamResult], None] | None = None,
    ) -> None:
        import ray

        self._ray = ray
        self.plan = plan
        self.engine_dir = engine_dir
        self.out_dir = out_dir
        self.config = config
        self.stream_config = stream_config
        self.backend = backend
        self.device = device
        self.run_name = run_name
        self.address = address
        self.on_write = on_write
        self.worker_failures = 0
        self._streams = {e.spec.name: _Stream(e, plan.placements[e.spec.name]) for e in entries}
        self._workers: dict[str, _Worker] = {}
        self._replacements = 0
        self._replace_tried: dict[Placement, float] = {}
        self._stop = False
        self._started = time.time()
        self._board: Any = None
        self._last_status = 0.0
        self._id_labels = id_labels
        self.outputs: StreamOutputs | None = None  # opened once the workers have started

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> float:
        """Register the status table, start the workers and give them their streams; returns the
        seconds the workers took to start. OmcError when they do not start in start_timeout_s
        (what was started is stopped again)."""
        try:
            return self._start()
        except BaseException:
            self._stop_actors()
            (self.out_dir / RUN_FILE).unlink(missing_ok=True)
            raise

    def _start(self) -> float:
        started = time.perf_counter()
        board_name = STATUS_PREFIX + self.run_name
        try:
            self._ray.get_actor(board_name, namespace=NAMESPACE)
        except ValueError:
            pass
        else:
            raise BadInput(f"a run named '{self.run_name}' is already running on this Ray cluster; give another --name")
        remote_board = self._ray.remote(num_cpus=0)(StatusBoard)
        self._board = remote_board.options(name=board_name, namespace=NAMESPACE).remote()
        self._write_run_file()
        for spec in self.plan.workers:
            self._start_worker(spec)
        pending = {w.ready: w for w in self._workers.values()}
        deadline = time.perf_counter() + self.config.start_timeout_s
        while pending:
            done, _ = self._ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.perf_counter()))
            if not done:
                names = ", ".join(w.spec.name for w in pending.values())
                raise OmcError(
                    f"worker(s) {names} did not start within {self.config.start_timeout_s:g} s: the Ray cluster lacks "
                    "the CPUs, GPUs or resources they reserve, or a machine is busy (raise [cluster] start_timeout_s)"
                )
            worker = pending.pop(done[0])
            try:
                self._ready(worker, self._ray.get(done[0]))
            except self._ray.exceptions.RayError as exc:
                raise OmcError(f"worker {worker.spec.name} did not start: {_cause(exc)}") from None
        self.outputs = StreamOutputs(
            {name: self.out_dir / f"{name}.txt" for name in self._streams}, {}, self.out_dir / RECORDS_FILE, self._id_labels
        )
        by_worker: dict[str, list[Assignment]] = {}
        for name, worker_name in self.plan.assignment.items():
            by_worker.setdefault(worker_name, []).append(Assignment(self._streams[name].entry.spec))
        for worker_name, assignments in by_worker.items():
            self._assign(self._workers[worker_name], assignments)
        self._publish(force=True)
        return time.perf_counter() - started

    def run(self) -> ClusterSummary:
        """Collect and write results until every stream is done or `stop()`; always finalises the
        files and stops the workers (after Ctrl-C or an error the frames written so far are kept)."""
        completed = False
        try:
            while not self._stop:
                tick = time.perf_counter()
                self._collect()
                self._place_waiting()
                self._publish()
                if self._all_done():
                    completed = True
                    break
                time.sleep(max(0.0, self.config.poll_interval_s - (time.perf_counter() - tick)))
        finally:
            summary = self._finish(completed)
        return summary

    def stop(self) -> None:
        """Ask `run()` to finish after its current collection (from another thread)."""
        self._stop = True

    # --- what tests and `omc cluster status` read ---------------------------------------------

    def status(self) -> ClusterStatus:
        """Every stream's row (health, worker, machine, frames/s) now."""
        rows = []
        for stream in self._streams.values():
            worker = self._workers.get(stream.worker) if stream.worker else None
            health = stream.health
            state = stream.state or (health.state if health is not None else "starting")
            rows.append(
                StreamRow(
                    stream.name, state, stream.worker or "-",
                    worker.info.ip if worker is not None and worker.info is not None else "-",
                    stream.epoch, stream.frames, health.frames_per_second if health is not None and state == "running" else 0.0,
                    health.frames_dropped if health is not None else 0, health.reconnects if health is not None else 0,
                    health.last_error if health is not None else None,
                )  # fmt: skip
            )
        return ClusterStatus(self.run_name, self.address, str(self.out_dir), self._started, time.time(), rows)

    def worker_handle(self, name: str) -> Any:
        """The Ray actor of a worker (tests kill it with ray.kill)."""
        return self._workers[name].handle

    def frames_written(self, stream: str) -> int:
        return self._streams[stream].frames

    # --- workers -------------------------------------------------------------------------------

    def _start_worker(self, spec: WorkerSpec) -> _Worker:
        options: dict[str, Any] = {
            "name": spec.name, "namespace": NAMESPACE, "num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus,
            "max_restarts": 0, "max_task_retries": 0,
        }  # fmt: skip
        if spec.custom_resources:
            options["resources"] = spec.custom_resources
        if spec.node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.node_id, soft=False)
        actor_class: Any = self._ray.remote(StreamWorker)
        handle: Any = actor_class.options(**options).remote(
            spec.name, str(self.engine_dir), self.backend, self.device, self.stream_config, engine_threads(spec.num_cpus)
        )
        worker = _Worker(spec, handle, handle.info.remote())
        self._workers[spec.name] = worker
        return worker

    def _ready(self, worker: _Worker, info: WorkerInfo) -> None:
        worker.info = info
        worker.ready = None
        log.info("worker %s started on %s (pid %d)", worker.spec.name, info.ip, info.pid)

    def _assign(self, worker: _Worker, assignments: list[Assignment]) -> None:
        for item in assignments:
            stream = self._streams[item.spec.name]
            stream.worker = worker.spec.name
            stream.state = None
            worker.streams.add(stream.name)
        worker.idle = False
        worker.handle.assign.remote(assignments)  # ordered before this caller's next take()

    def _collect(self) -> None:
        """One take() from every live, started worker; their results written, their deaths handled."""
        calls = {}
        for worker in self._workers.values():
            if worker.alive and worker.info is not None:
                if worker.pending is None:
                    worker.pending = worker.handle.take.remote()
                calls[worker.pending] = worker
        if calls:
            done, _ = self._ray.wait(list(calls), num_returns=len(calls), timeout=self.config.poll_interval_s)
            for ref in done:
                worker = calls[ref]
                worker.pending = None
                try:
                    report = self._ray.get(ref)
                except self._ray.exceptions.RayActorError as exc:
                    self._worker_died(worker, _cause(exc))
                    continue
                self._accept(worker, report)
        self._check_replacements()

    def _accept(self, worker: _Worker, report: WorkerReport) -> None:
        for result in report.results:
            stream = self._streams.get(result.stream)
            if stream is not None and stream.worker == worker.spec.name:
                self._write(stream, result)
        for name, health in report.health.items():
            stream = self._streams.get(name)
            if stream is not None and stream.worker == worker.spec.name:
                stream.health = health
                stream.live = health.live if health.live is not None else stream.live
                stream.frame_rate = report.frame_rates.get(name) or stream.frame_rate
        worker.idle = report.idle

    def _write(self, stream: _Stream, result: StreamResult) -> None:
        """Write one result with the stream's frame index and id offsets (see the module docstring)."""
        skipped = result.skipped
        if stream.index_offset is None:  # a live stream's first frame after a move
            gap = 0
            if stream.last_capture is not None and stream.frame_rate:
                gap = max(0, round((result.capture_time - stream.last_capture) * stream.frame_rate) - 1)
            stream.index_offset = stream.last_index + gap
            skipped += gap
        index = result.frame_index + stream.index_offset
        if index <= stream.last_index:  # never written twice
            log.debug("stream %s: frame %d already written", stream.name, index)
            return
        tracks = [Track(t.track_id + stream.id_offset, t.box, t.score, t.restored) for t in result.tracks]
        mapped = replace(result, frame_index=index, tracks=tracks, skipped=skipped)
        assert self.outputs is not None  # opened by start(), before any stream is assigned
        self.outputs.write(mapped, epoch=stream.epoch)
        stream.last_index = index
        stream.last_capture = result.capture_time
        stream.max_id = max([stream.max_id, *(t.track_id for t in tracks)])
        stream.frames += 1
        if self.on_write is not None:
            self.on_write(mapped)

    def _worker_died(self, worker: _Worker, cause: str) -> None:
        worker.alive = False
        self.worker_failures += 1
        moved = [name for name in sorted(worker.streams) if not self._nothing_left(self._streams[name], worker)]
        log.warning("worker %s died (%s); moving stream(s) %s", worker.spec.name, cause, ", ".join(moved) or "none")
        for name in worker.streams:
            stream = self._streams[name]
            if name in moved:
                stream.worker = None
                stream.state = "waiting"
                stream.health = None
            elif stream.health is not None:
                stream.state = stream.health.state  # done before its worker died
        worker.streams.clear()

    def _stream_done(self, stream: _Stream, worker: _Worker) -> bool:
        """Every frame of the stream is tracked and handed over: its state is final and its worker
        reported idle (results() returned: nothing queued or in flight)."""
        return stream.health is not None and worker.idle and stream.health.state in _FINAL_STATES

    def _nothing_left(self, stream: _Stream, worker: _Worker) -> bool:
        """A stream not to move when its worker dies: done, or failed on its own (a bad file
        fails again anywhere; the frames it still had queued are lost with the worker)."""
        return self._stream_done(stream, worker) or (stream.health is not None and stream.health.state == "failed")

    def _place_waiting(self) -> None:
        """Give every waiting stream to a live worker of its placement, or start a replacement."""
        waiting = [s for s in self._streams.values() if s.state == "waiting"]
        if not waiting:
            return
        loads = {
            name: (w.spec.placement, len(w.streams))
            for name, w in self._workers.items()
            if w.alive and w.info is not None
        }
        batches: dict[str, list[Assignment]] = {}
        for stream in waiting:
            target = choose_worker(stream.placement, loads, self.config.streams_per_worker)
            if target is None:
                self._replace_for(stream.placement)
                continue
            assignment = self._next_epoch(stream)
            if assignment is None:
                continue
            placement, load = loads[target]
            loads[target] = (placement, load + 1)
            batches.setdefault(target, []).append(assignment)
        for target, assignments in batches.items():
            self._assign(self._workers[target], assignments)
            log.warning("stream(s) %s now on worker %s", ", ".join(a.spec.name for a in assignments), target)

    def _next_epoch(self, stream: _Stream) -> Assignment | None:
        """The stream's assignment for its next epoch, from its live position; None (and the stream
        finished) when a file stream had already written all the frames it was asked for."""
        spec = stream.entry.spec
        live = stream.live if stream.live is not None else (
            is_live_location(spec.source) if not callable(spec.source) else True
        )
        start_after = 0 if live else stream.last_index
        max_frames = spec.max_frames
        if max_frames is not None:
            max_frames -= stream.last_index if not live else stream.frames
            if max_frames < 1:
                stream.state = "finished"
                return None
        stream.epoch += 1
        stream.id_offset = stream.max_id
        stream.index_offset = None if live else start_after
        return Assignment(replace(spec, max_frames=max_frames), stream.epoch, start_after)

    def _replace_for(self, placement: Placement) -> None:
        """Start a worker for `placement` unless one is already starting, or one was tried within
        _REPLACE_RETRY_S (no machine fitted then)."""
        if any(w.alive and w.info is None and w.spec.placement == placement for w in self._workers.values()):
            return
        now = time.perf_counter()
        if now - self._replace_tried.get(placement, -math.inf) < _REPLACE_RETRY_S:
            return
        self._replace_tried[placement] = now
        try:
            node_choices = eligible_nodes(placement, self.config, live_nodes())
        except BadInput as exc:
            log.warning("no machine can take a replacement worker yet: %s", exc)
            return
        self._replacements += 1
        name = f"{self.run_name}-r{self._replacements}"
        spec = worker_spec(name, placement, self.config, node_choices, 0)
        log.warning("starting replacement worker %s for %s", name, placement.describe())
        self._start_worker(spec)

    def _check_replacements(self) -> None:
        starting = {w.ready: w for w in self._workers.values() if w.alive and w.info is None}
        if not starting:
            return
        done, _ = self._ray.wait(list(starting), num_returns=len(starting), timeout=0)
        for ref in done:
            worker = starting[ref]
            try:
                self._ready(worker, self._ray.get(ref))
            except self._ray.exceptions.RayError as exc:
                worker.alive = False
                log.warning("replacement worker %s did not start: %s", worker.spec.name, _cause(exc))

    def _all_done(self) -> bool:
        for stream in self._streams.values():
            if stream.state in _FINAL_STATES:
                continue
            worker = self._workers.get(stream.worker) if stream.worker else None
            if worker is None or not worker.alive or not self._stream_done(stream, worker):
                return False
        return True

    # --- status and the end --------------------------------------------------------------------

    def _publish(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self._board is not None and (force or now - self._last_status >= self.config.status_interval_s):
            self._last_status = now
            self._board.publish.remote(self.status())

    def _write_run_file(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        run_file = {"address": self.address, "namespace": NAMESPACE, "run": self.run_name}
        (self.out_dir / RUN_FILE).write_text(json.dumps(run_file) + "\n", encoding="utf-8")

    def _finish(self, completed: bool) -> ClusterSummary:
        status = self.status()
        health = {s.name: s.health for s in self._streams.values() if s.health is not None}
        summaries = self.outputs.close(complete=completed, health=health) if self.outputs is not None else []
        self._stop_actors()
        (self.out_dir / RUN_FILE).unlink(missing_ok=True)
        return ClusterSummary(summaries, self.out_dir / RECORDS_FILE, time.time() - self._started, self.worker_failures, status)


    def _stop_actors(self) -> None:
        for worker in self._workers.values():
            if worker.alive:
                worker.alive = False
                self._ray.kill(worker.handle)
        if self._board is not None:
            self._ray.kill(self._board)
            self._board = None


def _cause(exc: BaseException) -> str:
    """The last meaningful line of a Ray error (its cause), for a one-line message."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line
    return lines[-1] if lines else exc.__class__.__name__

