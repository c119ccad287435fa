"""One stream's reader: a thread that reads and letterboxes frames into a small queue, and reconnects.

The multi-stream runtime (omc.runtime.streams) gives each stream a `StreamReader`. Reading,
decoding and letterboxing happen in the reader's thread (OpenCV releases the GIL while it
decodes and resizes), so they overlap the engines and each other; the runtime takes frames from
the readers' queues to batch them.

Queue modes (StreamConfig, omc.config.STREAM_MODES):
- every: nothing is dropped; when `queue_frames` frames wait, the reader waits (files). Every
  frame is letterboxed in the reader.
- latest: one frame waits at most; a newer frame replaces it and the older one is counted as
  dropped (live sources: the tracker sees the newest frame, latency stays bounded). The reader
  letterboxes a frame only while the consumer keeps up with the source (it takes frames about
  as often as they come, so this one will be taken); otherwise frames are handed on as they are
  and letterboxed when taken, so the frames a busy runtime drops never cost a resize.

Failures stay in the stream. A file that cannot be read, or whose frame size changes, fails its
stream (frames already queued are still tracked). A live source that cannot be opened, stalls or
ends reconnects after a capped exponential backoff (StreamConfig.reconnect_delay_s), resetting
after each frame read; the frames the gap lasted (its length in seconds times the frame rate)
are added to the frame index and reported as `skipped` with the next frame, so that outputs
show the gap and lost tracks age through it (omc.runtime.streams).
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import numpy.typing as npt

from omc.config import StreamConfig
from omc.errors import BadInput, OmcError
from omc.runtime.letterbox import LetterboxTransform, letterbox
from omc.runtime.sources import FrameSource, is_live_location, open_source, redact_url

log = logging.getLogger(__name__)

SourceSpec = str | Path | int | Callable[[], FrameSource]

# Latest-frame mode: the consumer "keeps up" while it takes a frame at least every this many
# frame intervals (then the reader letterboxes: the frame will most likely be taken).
_KEEPS_UP_FRAMES = 1.5
# Weight of the newest take interval in its moving average.
_TAKE_SMOOTHING = 0.2


class StreamState(str, enum.Enum):
    """Where a stream is in its life."""

    STARTING = "starting"  # opening its source for the first time
    RUNNING = "running"  # frames are coming
    RECONNECTING = "reconnecting"  # a live source failed or ended; waiting to open it again
    FINISHED = "finished"  # a file stream read its last frame
    FAILED = "failed"  # a file could not be read, or a live stream gave up
    STOPPED = "stopped"  # removed, or the runtime closed

    @property
    def is_final(self) -> bool:
        return self in (StreamState.FINISHED, StreamState.FAILED, StreamState.STOPPED)


@dataclass(frozen=True)
class StreamFrame:
    """One frame on its way from a reader to the engines.

    index: 1-based frame index in the stream (live: frames the sender sent, gaps included).
    capture_time: wall-clock time it was read (s since the epoch); capture_clock: the same
    moment on time.perf_counter() (for latency). frame: the frame itself, uint8 [h, w, 3].
    images: uint8 [1, H, W, 3] letterboxed, and transform: maps network pixels back to the
    frame; both None until the frame is letterboxed (`letterboxed`). skipped: frames of the stream not tracked between
    the previous frame handed on and this one (dropped in latest mode, or lost in a reconnect
    gap). reconnected: the first frame after a reconnect.
    """

    index: int
    capture_time: float
    capture_clock: float
    frame: npt.NDArray[np.uint8]
    images: npt.NDArray[np.uint8] | None = None
    transform: LetterboxTransform | None = None
    skipped: int = 0
    reconnected: bool = False

    def letterboxed(self, input_hw: tuple[int, int]) -> "StreamFrame":
        """This frame with `images` and `transform` set (itself when they are)."""
        if self.images is not None:
            return self
        images, transform = letterbox(self.frame, input_hw)
        return replace(self, images=images, transform=transform)


class StreamReader:
    """Reads one source in its own thread into a bounded queue (see the module docstring).

    source: a path, URL, camera index, or a callable that opens a FrameSource (called again at
    each reconnect). input_hw: the engines' (H, W). mode: "auto", "every" or "latest". ready: a
    condition shared with the consumer, notified whenever a frame is queued or the state changes.
    frame_rate: overrides the
    source's. max_frames: stop after this many frames (None: all).
    """

    def __init__(
        self,
        name: str,
        source: SourceSpec,
        input_hw: tuple[int, int],
        ready: threading.Condition,
        mode: str = "auto",
        config: StreamConfig = StreamConfig(),
        frame_rate: float | None = None,
        max_frames: int | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.input_hw = input_hw
        self.config = config
        self.frame_rate_override = frame_rate
        self.max_frames = max_frames
        self.mode = mode
        self.live: bool | None = None if callable(source) else is_live_location(source)
        self.location = _describe(source)
        self.frame_rate: float | None = frame_rate
        self.frame_size: tuple[int, int] | None = None
        self.state = StreamState.STARTING
        self.last_error: str | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self._ready = ready
        self._queue: deque[StreamFrame] = deque()
        # Seconds between the consumer's takes (moving average; None until two takes).
        self._take_interval_s: float | None = None
        self._last_take: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"omc-stream-{name}", daemon=True)

    # --- consumer side (any thread) ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (it ends within the source's read timeout); queued frames are dropped."""
        self._stop.set()
        with self._ready:
            self._queue.clear()
            if not self.state.is_final:
                self.state = StreamState.STOPPED
            self._ready.notify_all()

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def has_frame(self) -> bool:
        return bool(self._queue)

    @property
    def head_clock(self) -> float:
        """Capture clock of the oldest queued frame (inf when none)."""
        return self._queue[0].capture_clock if self._queue else math.inf

    @property
    def is_done(self) -> bool:
        """Final state reached and nothing left to take."""
        return self.state.is_final and not self._queue

    def take(self) -> StreamFrame | None:
        """The oldest queued frame, or None."""
        with self._ready:
            if not self._queue:
                return None
            frame = self._queue.popleft()
            now = time.perf_counter()
            if self._last_take is not None:
                interval = now - self._last_take
                previous = self._take_interval_s
                self._take_interval_s = interval if previous is None else previous + _TAKE_SMOOTHING * (interval - previous)
            self._last_take = now
            self._ready.notify_all()
            return frame

    # --- reader thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._read_until_done()
        except Exception as exc:  # a bug or an unexpected library error: this stream fails, no other
            log.debug("stream %s: reader failed", self.name, exc_info=True)
            self._finish(StreamState.FAILED, f"{exc.__class__.__name__}: {exc}")

    def _read_until_done(self) -> None:
        attempt = 0
        next_index = 1
        gap_started: float | None = None
        while not self._stop.is_set():
            error: str | None = None
            try:
                source = self._open()
            except OmcError as exc:
                error = str(exc)
            else:
                with source:
                    try:
                        next_index, gap_started, reads = self._read(source, next_index, gap_started)
                        if reads:
                            attempt = 0
                    except OmcError as exc:
                        error = str(exc)
                if self._stop.is_set():  # removed or closed: no reconnect, the state stays STOPPED
                    return
                if not self.live:
                    if error is None:
                        self._finish(StreamState.FINISHED, None)
                    else:
                        self._finish(StreamState.FAILED, error)
                    return
                if self.max_frames is not None and self.frames_read >= self.max_frames:
                    self._finish(StreamState.FINISHED, None)
                    return
                error = error or "the stream ended or stalled"
            if self.live is False:
                self._finish(StreamState.FAILED, error)
                return
            attempt += 1
            gap_started = gap_started if gap_started is not None else time.time()
            limit = self.config.max_reconnect_attempts
            if limit and attempt > limit:
                self._finish(StreamState.FAILED, f"{error} (gave up after {limit} reconnect attempts)")
                return
            delay = self.config.reconnect_delay_s(attempt)
            log.warning("stream %s: %s; reconnecting in %.1f s (attempt %d)", self.name, error, delay, attempt)
            self._set_state(StreamState.RECONNECTING, error)
            self._stop.wait(delay)

    def _open(self) -> FrameSource:
        if callable(self.source):
            source = self.source()
        else:
            source = open_source(self.source, self.config.open_timeout_s, self.config.read_timeout_s)
        if self.live is None:
            self.live = source.is_live
        if self.frame_rate_override is None:
            self.frame_rate = source.frame_rate
        return source

    def _read(self, source: FrameSource, next_index: int, gap_started: float | None) -> tuple[int, float | None, int]:
        """Read `source` until it ends, the stream stops or max_frames.

        gap_started: when the last frame before a failure was read (None: no gap). Returns (next
        frame index, when the last frame was read (or gap_started if none was), frames read).
        """
        latest = self.mode == "latest" or (self.mode == "auto" and bool(self.live))
        reads = 0
        last_capture = gap_started
        for _, image in source:
            if self._stop.is_set():
                break
            capture_time, capture_clock = time.time(), time.perf_counter()
            size = (image.shape[1], image.shape[0])
            if self.frame_size is None:
                self.frame_size = size
            elif size != self.frame_size:
                raise BadInput(
                    f"frame {next_index} of {self.location} is {size[0]}x{size[1]} but the stream started at "
                    f"{self.frame_size[0]}x{self.frame_size[1]}; all frames of one stream must have the same size"
                )
            skipped, reconnected = 0, False
            if gap_started is not None and self.frames_read > 0:
                # Frames the sender sent while we were away: counted, so the gap shows and tracks age.
                skipped = max(0, round((capture_time - gap_started) * (self.frame_rate or 0.0)) - 1)
                reconnected = True
                self.reconnects += 1
            gap_started = None
            last_capture = capture_time
            index = next_index + skipped
            frame = StreamFrame(index, capture_time, capture_clock, image, skipped=skipped, reconnected=reconnected)
            self.frames_read += 1
            reads += 1
            next_index = index + 1
            self._put(frame, latest)
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                break
        return next_index, last_capture, reads

    def _put(self, frame: StreamFrame, latest: bool) -> None:
        # The consumer only ever removes frames, so a queue seen empty here stays empty until
        # this thread puts one: letterbox outside the lock (OpenCV releases the GIL meanwhile).
        if not latest or (not self._queue and self._keeps_up()):
            frame = frame.letterboxed(self.input_hw)
        with self._ready:
            if self.state is not StreamState.RUNNING and not self.state.is_final:
                self.state = StreamState.RUNNING
            if latest:
                if self._queue:
                    older = self._queue.popleft()
                    self.frames_dropped += 1
                    frame = _with_skipped(frame, older.skipped + 1, older.reconnected)
            else:
                while len(self._queue) >= self.config.queue_frames and not self._stop.is_set():
                    self._ready.wait(0.1)
            if self._stop.is_set():
                return
            self._queue.append(frame)
            self._ready.notify_all()

    def _keeps_up(self) -> bool:
        """Whether the consumer takes this stream's frames about as often as they come."""
        interval, rate = self._take_interval_s, self.frame_rate
        return interval is None or not rate or interval <= _KEEPS_UP_FRAMES / rate

    def _set_state(self, state: StreamState, error: str | None) -> None:
        with self._ready:
            if not self.state.is_final:
                self.state = state
            if error is not None:
                self.last_error = error
            self._ready.notify_all()

    def _finish(self, state: StreamState, error: str | None) -> None:
        if error is not None:
            log.warning("stream %s: %s", self.name, error)
        self._set_state(state, error)


def _with_skipped(frame: StreamFrame, more: int, reconnected: bool) -> StreamFrame:
    return replace(frame, skipped=frame.skipped + more, reconnected=frame.reconnected or reconnected)


def _describe(source: SourceSpec) -> str:
    if callable(source):
        return getattr(source, "__name__", "a source")
    if isinstance(source, str):
        return redact_url(source)
    return str(source)
