"""Many streams in one process: readers per stream, the detector batched across streams, a tracker each.

What an application embeds to track several cameras and files at once::

    from omc.runtime import StreamRuntime, StreamSpec

    streams = [StreamSpec("door", "rtsp://10.0.0.7/stream1"), StreamSpec("lobby", "lobby.mp4")]
    with StreamRuntime.from_engines("engines/omc_l_1088x608", streams) as runtime:
        for result in runtime.results():          # every stream's frames, as they are tracked
            for track in result.tracks:
                print(result.stream, result.frame_index, track.track_id, track.box)

How a frame travels:
1. Its stream's reader thread reads and letterboxes it (omc.runtime.stream_reader): files in
   every-frame mode, live sources in latest-frame mode (older frames dropped and counted).
2. The runtime takes one frame from each stream that has one ready, waiting at most
   StreamConfig.batch_wait_ms for the other running streams (never for one that is reconnecting
   or done), the streams served longest ago first, at most max_batch frames (StreamConfig.max_batch; automatic:
   one frame at a time when the detector runs on the CPU, where batching gains nothing).
3. The engines run the batch (omc.runtime.engines): the detector over all of them, then each
   frame's re-check on its own slice with its own stream's tracklets (n differs).
4. Each stream's own `Tracker` does NMS, fusion and association, in stream order; ids count
   from 1 per stream and never leak between streams.

Where the engines allow it (a local pair whose detector returns new buffers each run: ONNX
Runtime) and the detector does not run on the CPU (StreamConfig.overlap "auto"; "on" forces it),
the detector runs one batch ahead in a thread of its own: batch k + 1's detector runs while the
results() thread does batch k's re-checks, NMS, fusion and association, which need batch k's
tracklets and so cannot start earlier. Never more than one batch ahead, so a live frame waits for at most one batch. TensorRT
binds its output buffers once and a Triton client sends a frame's two engines in one request:
their batches run one after the other.

Failures stay in their stream: a reader that fails ends (file) or reconnects (live) its stream
only; an error in one stream's host work fails that stream only; a remote engine server that is
down (EngineUnavailable) fails the batch's frames, which are counted as dropped, and the runtime
retries with the next frames after a capped backoff, as a live source does.

Across a gap the stream's tracker is told how many frames it missed (`Tracker.skip_frames`), so
lost tracks age by the gap's wall-clock length, as they would have in those frames:
- frames dropped in latest-frame mode (the engines were busy): tracked tracks stay tracked and
  the next frame matches them as usual; a lost one whose loss, gap included, exceeds the
  lost-track buffer (TrackerConfig.track_buffer frames at 30 fps: 1 s) is removed;
- a live source that reconnects after a short dropout (up to the buffer): the same, so the
  people still there keep their ids;
- after a longer dropout every track ends (`Tracker.forget_tracks`): the motion model predicts
  one frame ahead and cannot bridge it. People still there get new ids; the id counter never
  restarts, so no id is used twice in a stream. A downstream consumer sees the gap as missing
  frame numbers, a record with `reconnected` true and `skipped` frames, and (after a long one)
  only new ids.

The loop runs in the thread that iterates `results()`; `add_stream` / `remove_stream` may be
called from the loop body or from another thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator

import numpy as np
import numpy.typing as npt

from omc.config import STREAM_MODES, StreamConfig, TrackerConfig
from omc.contract import EngineMeta
from omc.errors import BadInput, EngineUnavailable, OmcError
from omc.runtime.engines import EnginePair, NetworkOutputs
from omc.runtime.stream_reader import SourceSpec, StreamFrame, StreamReader, StreamState
from omc.runtime.tracker import Track, Tracker

log = logging.getLogger(__name__)

# Recent frames over which a stream's frames/s is measured.
_RATE_WINDOW = 64
# How often (s) a waiting runtime wakes to look for stopped streams and new ones.
_IDLE_WAIT_S = 0.1
# Longest a closing runtime waits for each reader thread (s); they are daemons either way.
_JOIN_TIMEOUT_S = 2.0
# Longest a closing runtime waits for the detector thread to finish the batch it runs (s): longer
# than one detector batch of the L model on a 2-core CPU, so the engines are never closed under it.
_DETECTOR_JOIN_TIMEOUT_S = 30.0
# Batches taken from the readers and not yet handed out: the one whose host work runs, and the
# one the detector runs meanwhile.
_BATCHES_IN_FLIGHT = 2


@dataclass(frozen=True)
class StreamSpec:
    """One stream: a name (unique; output files are named after it) and where its frames come from.

    source: a video file, image folder or MOTChallenge sequence (path), a live URL (rtsp://,
    rtmp://, http(s)://), a camera index, or a callable that opens a FrameSource. mode: "auto"
    (latest-frame for live sources, every-frame for files), "every" or "latest". frame_rate:
    overrides the source's (fps). tracker: this stream's thresholds. max_frames: stop after this
    many frames (None: until the source ends). keep_frames: hand each frame on with its result
    (for drawing; costs a reference per result).
    """

    name: str
    source: SourceSpec
    mode: str = "auto"
    frame_rate: float | None = None
    tracker: TrackerConfig = TrackerConfig()
    max_frames: int | None = None
    keep_frames: bool = False

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\\0") or self.name in (".", ".."):
            raise BadInput(f"stream name '{self.name}' must be non-empty and usable as a file name")
        if self.mode not in STREAM_MODES:
            raise BadInput(f"stream {self.name}: mode '{self.mode}' is not one of {', '.join(STREAM_MODES)}")
        if self.frame_rate is not None and not (0 < self.frame_rate < float("inf")):
            raise BadInput(f"stream {self.name}: frame_rate must be a positive number, got {self.frame_rate}")
        if self.max_frames is not None and self.max_frames < 1:
            raise BadInput(f"stream {self.name}: max_frames must be at least 1, got {self.max_frames}")


@dataclass(frozen=True)
class StreamResult:
    """One tracked frame of one stream.

    frame_index: the stream's 1-based frame index. capture_time: when the frame was read (s since
    the epoch). latency_ms: from reading the frame to its tracks. tracks: the confirmed tracks
    (boxes in frame pixels). batch_size: frames in the detector batch it went through. skipped:
    frames of this stream not tracked just before this one (dropped, or in a reconnect gap).
    reconnected: the first frame after its live source came back. frame: the frame (uint8
    [h, w, 3]) when the stream keeps frames, else None.
    """

    stream: str
    frame_index: int
    capture_time: float
    latency_ms: float
    tracks: list[Track]
    batch_size: int
    skipped: int = 0
    reconnected: bool = False
    frame: npt.NDArray[np.uint8] | None = None


@dataclass(frozen=True)
class StreamHealth:
    """A stream's state and counters at one moment.

    frames_read: frames its reader read. frames_tracked: frames tracked. frames_dropped: frames
    read but never tracked (latest-frame mode replaced them, or the engines were unavailable).
    reconnects: times its live source came back. frames_per_second: tracked frames per second
    over its recent frames. last_error: the latest error (None if none).
    """

    name: str
    source: str
    live: bool | None
    state: str
    frames_read: int
    frames_tracked: int
    frames_dropped: int
    reconnects: int
    frames_per_second: float
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class _Detected:
    """A batch on its way from the detector thread to the results() thread: the detector's
    outputs, or what the detector raised."""

    batch: list[tuple[_Stream, StreamFrame]]
    outputs: Any


@dataclass
class _Stream:
    spec: StreamSpec
    reader: StreamReader
    tracker: Tracker | None = None
    frames_tracked: int = 0
    frames_lost: int = 0  # read but not tracked for reasons outside the reader (engines down)
    last_served: int = -1  # the batch round that last took a frame of this stream
    failure: str | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_RATE_WINDOW))

    @property
    def is_done(self) -> bool:
        return self.failure is not None or self.reader.is_done

    @property
    def is_running(self) -> bool:
        return self.failure is None and self.reader.state is StreamState.RUNNING


class StreamRuntime:
    """Tracks many streams in one process over one pair of engines (see the module docstring).

    engines: any EnginePair (a local BackendPair, a Triton client); meta: its export.json.
    streams: the streams to start with. config: queueing, batching and reconnection.
    own_engines: close the engines with the runtime (from_engines sets it).

    `batch_sizes` counts the detector batches run by size; `results()` yields each tracked frame.
    `overlaps`: the detector runs one batch ahead in its own thread (module docstring);
    `batches_overlapped` counts the detector batches that started while the host work of the
    batch before was still running.
    """

    def __init__(
        self,
        engines: EnginePair,
        meta: EngineMeta,
        streams: Iterable[StreamSpec] = (),
        config: StreamConfig = StreamConfig(),
        own_engines: bool = False,
    ) -> None:
        if config.max_batch > meta.max_batch:
            raise BadInput(f"max_batch {config.max_batch} exceeds the export's maximum batch of {meta.max_batch}")
        self.engines = engines
        self.meta = meta
        self.config = config
        self.max_batch = config.max_batch or (1 if getattr(engines, "runs_on_cpu", False) else meta.max_batch)
        self.batch_sizes: Counter[int] = Counter()
        self._own_engines = own_engines
        self._ready = threading.Condition()
        self._streams: dict[str, _Stream] = {}
        self._order: list[str] = []
        self._closed = False
        self._engine_failures = 0
        self._letterbox_pool: ThreadPoolExecutor | None = None
        self._rounds = 0
        on_cpu = bool(getattr(engines, "runs_on_cpu", False))
        wanted = config.overlap == "on" or (config.overlap == "auto" and not on_cpu)
        self.overlaps = wanted and bool(getattr(engines, "outputs_stay_valid", False))
        self.batches_overlapped = 0
        self._detector_thread: threading.Thread | None = None
        self._detected: queue.Queue[_Detected | None] = queue.Queue()
        self._batch_slots = threading.Semaphore(_BATCHES_IN_FLIGHT)
        self._host_busy = False
        for spec in streams:
            self.add_stream(spec)

    @classmethod
    def from_engines(
        cls,
        engine_dir: str | Path | None,
        streams: Iterable[StreamSpec] = (),
        backend: str = "ort",
        device: str = "auto",
        config: StreamConfig = StreamConfig(),
        **options: Any,
    ) -> "StreamRuntime":
        """Open the engines (see omc.runtime.backends.open_engine_pair: an engine folder for "ort" and
        "trt"; for "triton" a `url` option, the folder optional) and track `streams`."""
        from omc.runtime.backends import open_engine_pair

        engines, meta = open_engine_pair(engine_dir, backend=backend, device=device, **options)
        try:
            return cls(engines, meta, streams, config, own_engines=True)
        except BaseException:
            engines.close()
            raise

    # --- streams -------------------------------------------------------------------------------

    def add_stream(self, spec: StreamSpec) -> None:
        """Start reading a stream; its frames join the next batches. BadInput for a name in use."""
        with self._ready:
            if self._closed:
                raise OmcError("this stream runtime is closed")
            if spec.name in self._streams:
                raise BadInput(f"a stream named '{spec.name}' is already running; stream names must be unique")
            reader = StreamReader(
                spec.name, spec.source, self.meta.input_hw, self._ready, spec.mode, self.config,
                frame_rate=spec.frame_rate, max_frames=spec.max_frames,
            )  # fmt: skip
            self._streams[spec.name] = _Stream(spec, reader)
            self._order.append(spec.name)
            reader.start()
            self._ready.notify_all()
        log.info("stream %s: %s", spec.name, reader.location)

    def remove_stream(self, name: str) -> None:
        """Stop a stream; frames it had queued are dropped. BadInput for an unknown name."""
        with self._ready:
            stream = self._streams.pop(name, None)
            if stream is None:
                raise BadInput(f"no stream named '{name}'")
            self._order.remove(name)
            stream.reader.stop()
            self._ready.notify_all()
        stream.reader.join(_JOIN_TIMEOUT_S)

    @property
    def stream_names(self) -> list[str]:
        with self._ready:
            return list(self._order)

    def frame_rate(self, name: str) -> float | None:
        """The stream's frame rate (fps) once its source is open (its spec's override first), else None."""
        with self._ready:
            stream = self._streams.get(name)
            return stream.reader.frame_rate if stream is not None else None

    def health(self) -> dict[str, StreamHealth]:
        """Every stream's state and counters now, by name."""
        with self._ready:
            return {name: self._health(self._streams[name]) for name in self._order}

    def _health(self, stream: _Stream) -> StreamHealth:
        reader = stream.reader
        state = StreamState.FAILED.value if stream.failure is not None else reader.state.value
        recent = stream.recent
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return StreamHealth(
            stream.spec.name, reader.location, reader.live, state, reader.frames_read, stream.frames_tracked,
            reader.frames_dropped + stream.frames_lost, reader.reconnects, rate,
            stream.failure or reader.last_error,
        )  # fmt: skip

    # --- the loop ------------------------------------------------------------------------------

    def results(self) -> Iterator[StreamResult]:
        """Track every stream's frames as they come; ends when no stream is left running.

        Live streams run until removed (or until they give up reconnecting), file streams until
        their last frame. Stopping early (break, Ctrl-C) leaves the runtime usable; `close()`
        stops the readers.
        """
        if self.overlaps:
            yield from self._overlapped_results()
            return
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                yield from self._track_batch(batch)

    def _overlapped_results(self) -> Iterator[StreamResult]:
        """results() with the detector one batch ahead in the detector thread (one per run of
        results(): it ends when every stream is done, and a later results() starts another for the
        streams added since)."""
        if self._detector_thread is None:
            self._detector_thread = threading.Thread(target=self._detect_ahead, name="omc-detector", daemon=True)
            self._detector_thread.start()
        while True:
            item = self._detected.get()
            if item is None:
                thread, self._detector_thread = self._detector_thread, None
                if thread is not None:
                    thread.join(_DETECTOR_JOIN_TIMEOUT_S)  # its last act was to hand on this end
                return
            self._host_busy = True
            try:
                if isinstance(item.outputs, EngineUnavailable):
                    self._engines_down(item.batch, item.outputs)
                    continue
                if isinstance(item.outputs, BaseException):
                    raise item.outputs
                pools = self._prepare_trackers(item.batch)
                yield from self._host_work(item.batch, self.engines.recheck_batch(item.outputs, pools))  # type: ignore[attr-defined]
            finally:
                self._host_busy = False
                self._batch_slots.release()

    def _detect_ahead(self) -> None:
        """The detector thread: take a batch, letterbox it, run the detector, hand it on; at most
        _BATCHES_IN_FLIGHT batches out at once (the results() thread frees a slot per batch done)."""
        while True:
            self._batch_slots.acquire()
            batch = self._next_batch()
            if not batch:
                self._batch_slots.release()
                if batch is None:  # every stream done, or the runtime closed
                    self._detected.put(None)
                    return
                continue
            outputs: Any
            try:
                batch, images = self._letterboxed(batch)
                if self._host_busy:
                    self.batches_overlapped += 1
                outputs = self.engines.detect(images)  # type: ignore[attr-defined]
            except BaseException as exc:  # raised in the results() thread, where the caller sees it
                outputs = exc
            self._detected.put(_Detected(batch, outputs))

    def _next_batch(self) -> list[tuple[_Stream, StreamFrame]] | None:
        """Up to max_batch frames, one per stream with a frame ready; [] to look again; None when all are done."""
        with self._ready:
            while True:
                if self._closed:
                    return None
                streams = [self._streams[name] for name in self._order]
                ready = [s for s in streams if s.failure is None and s.reader.has_frame]
                if ready:
                    break
                if all(s.is_done for s in streams):
                    return None
                self._ready.wait(_IDLE_WAIT_S)
            # Wait briefly for the other running streams so the batch fills (never for one that
            # is reconnecting, finished or failed).
            expected = min(self.max_batch, sum(1 for s in streams if s.is_running or s.reader.has_frame))
            deadline = time.perf_counter() + self.config.batch_wait_ms / 1e3
            while len(ready) < expected:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._ready.wait(left)
                streams = [self._streams[name] for name in self._order if name in self._streams]
                ready = [s for s in streams if s.failure is None and s.reader.has_frame]
            # Round robin: the streams served longest ago first, so none starves (oldest-frame first
            # would let a file's read-ahead queue starve a live stream).
            ready.sort(key=lambda s: s.last_served)
            self._rounds += 1
            batch: list[tuple[_Stream, StreamFrame]] = []
            for stream in ready[: self.max_batch]:
                frame = stream.reader.take()
                if frame is not None:
                    stream.last_served = self._rounds
                    batch.append((stream, frame))
            return batch

    def _track_batch(self, batch: list[tuple[_Stream, StreamFrame]]) -> Iterator[StreamResult]:
        batch, images = self._letterboxed(batch)
        pools = self._prepare_trackers(batch)
        try:
            outputs = self.engines.run(images, pools)
        except EngineUnavailable as exc:
            self._engines_down(batch, exc)
            return
        yield from self._host_work(batch, outputs)

    def _prepare_trackers(self, batch: list[tuple[_Stream, StreamFrame]]) -> list[npt.NDArray[np.float32] | None]:
        """Age each frame's tracker through its stream's gap; the tracklets each frame's re-check needs."""
        pools = []
        for stream, frame in batch:
            tracker = self._tracker(stream)
            if frame.reconnected and frame.skipped > tracker.max_time_lost:
                tracker.forget_tracks()
            if frame.skipped:
                tracker.skip_frames(frame.skipped)
            pools.append(tracker.recheck_tracklets())
        return pools

    def _host_work(self, batch: list[tuple[_Stream, StreamFrame]], outputs: list[NetworkOutputs]) -> Iterator[StreamResult]:
        """NMS, fusion and association of each frame in its stream's tracker; then the results."""
        self._engine_failures = 0
        self.batch_sizes[len(batch)] += 1
        # Host work of every frame first, then the results: the engines' output buffers are
        # reused by the next run, and a slow consumer must not hold them.
        results: list[StreamResult] = []
        for (stream, frame), network in zip(batch, outputs):
            if self._streams.get(stream.spec.name) is not stream:
                continue  # removed while its frame was in flight: its frames are dropped
            try:
                assert frame.transform is not None  # letterboxed above
                tracks = self._tracker(stream).update_from_network(network, frame.transform)
            except OmcError as exc:
                self._fail(stream, str(exc))
                continue
            now = time.perf_counter()
            stream.frames_tracked += 1
            stream.recent.append(now)
            results.append(
                StreamResult(
                    stream.spec.name, frame.index, frame.capture_time, (now - frame.capture_clock) * 1e3,
                    tracks, len(batch), frame.skipped, frame.reconnected, frame.frame if stream.spec.keep_frames else None,
                )  # fmt: skip
            )
        yield from results

    def _letterboxed(
        self, batch: list[tuple[_Stream, StreamFrame]]
    ) -> tuple[list[tuple[_Stream, StreamFrame]], npt.NDArray[np.uint8]]:
        """The batch with every frame letterboxed, and its images stacked (uint8 [B, H, W, 3]) for
        the detector. Frames the readers handed on as they were (latest-frame mode under load) are
        letterboxed here: one inline, several in parallel threads."""
        def letterbox(i: int) -> StreamFrame:
            return batch[i][1].letterboxed(self.meta.input_hw)

        pending = [i for i, (_, frame) in enumerate(batch) if frame.images is None]
        if len(pending) > 1:
            if self._letterbox_pool is None:
                self._letterbox_pool = ThreadPoolExecutor(max(1, min(self.max_batch, os.cpu_count() or 1)), "omc-letterbox")
            done = list(self._letterbox_pool.map(letterbox, pending))
        else:
            done = [letterbox(i) for i in pending]
        out = list(batch)
        for i, frame in zip(pending, done):
            out[i] = (batch[i][0], frame)
        images = np.concatenate([frame.images for _, frame in out if frame.images is not None])
        return out, images

    def _tracker(self, stream: _Stream) -> Tracker:
        if stream.tracker is None:
            rate = stream.reader.frame_rate or stream.spec.frame_rate or 30.0
            stream.tracker = Tracker.with_engines(self.engines, self.meta, stream.spec.tracker, rate)
        return stream.tracker

    def _fail(self, stream: _Stream, message: str) -> None:
        log.warning("stream %s: %s", stream.spec.name, message)
        with self._ready:
            stream.failure = message
            stream.reader.stop()

    def _engines_down(self, batch: list[tuple[_Stream, StreamFrame]], exc: EngineUnavailable) -> None:
        """The engines' server is down: these frames are lost (counted), the next ones retried after a backoff."""
        self._engine_failures += 1
        delay = self.config.reconnect_delay_s(self._engine_failures)
        log.warning("engines unavailable (%s); retrying in %.1f s", exc, delay)
        for stream, frame in batch:
            stream.frames_lost += 1
            stream.reader.last_error = str(exc)
            # The frame was not tracked: its tracker ages through it like any other gap.
            self._tracker(stream).skip_frames(1)
        time.sleep(delay)

    # --- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every reader and the detector thread; close the engines when this runtime opened them."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams.values())
            for stream in streams:
                stream.reader.stop()
            self._ready.notify_all()
        for stream in streams:
            stream.reader.join(_JOIN_TIMEOUT_S)
        thread = self._detector_thread
        if thread is not None:
            # A detector thread waiting for a slot gets one and sees the runtime closed.
            self._batch_slots.release()
            thread.join(_DETECTOR_JOIN_TIMEOUT_S)
            if thread.is_alive():
                self._detected.put(None)  # still in the detector: a results() thread waiting for it ends
        if self._letterbox_pool is not None:
            self._letterbox_pool.shutdown(wait=False)
        if self._own_engines:
            self.engines.close()

    def __enter__(self) -> "StreamRuntime":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

