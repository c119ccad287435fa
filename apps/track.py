"""`omc track`'s work: streams through the runtime into results files, with progress and a summary.

`StreamOutputs` writes what the runtime yields: per stream a MOTChallenge file (crash-safe, see
omc.apps.results) and optionally an overlay video; for all streams together one JSON Lines file
of records, flushed per frame. `track_streams` drives a `StreamRuntime` into them, shows progress
per stream, and always finalises the files: after Ctrl-C or an error each file keeps every frame
done, and the exception goes on to the caller.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from omc.apps.draw import OverlayVideoWriter, TrailHistory, draw_tracks
from omc.apps.results import MotResultsWriter, TrackRecordsWriter
from omc.config import OverlayConfig
from omc.errors import BadInput
from omc.runtime.sources import DEFAULT_FRAME_RATE
from omc.runtime.streams import StreamHealth, StreamResult, StreamRuntime

log = logging.getLogger(__name__)

# Seconds between progress lines when stderr is not a terminal (logs, CI).
STATUS_INTERVAL_S = 10.0


@dataclass
class _StreamFiles:
    results: MotResultsWriter | None
    video_path: Path | None
    video: OverlayVideoWriter | None = None
    trails: TrailHistory | None = None
    ids: set[int] = field(default_factory=set)
    restored_boxes: int = 0
    frames: int = 0


@dataclass(frozen=True)
class StreamSummary:
    """What one stream did: frames tracked, distinct ids, restored boxes, its files and health."""

    name: str
    frames: int
    tracks: int
    restored_boxes: int
    results: Path | None
    video: Path | None
    health: StreamHealth | None


@dataclass(frozen=True)
class TrackSummary:
    """A run: every stream's summary, the JSON Lines file, wall time, detector batch sizes."""

    streams: list[StreamSummary]
    records: Path | None
    seconds: float
    batch_sizes: Mapping[int, int]

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> list[StreamSummary]:
        return [s for s in self.streams if s.health is not None and s.health.state == "failed"]


class StreamOutputs:
    """Files of a run: results[name] (MOTChallenge; a name missing: none for that stream),
    videos[name] (overlay video), records (one JSON Lines file for all streams, or None).
    id_labels: how ids appear in the records ("int" or "stream"); epoch: the records' "epoch" key
    (omc cluster; `write` may give each frame its own). append_records: continue an existing
    records file. Streams appear lazily: nothing is created for a stream until its first frame.
    """

    def __init__(
        self,
        results: Mapping[str, Path],
        videos: Mapping[str, Path] | None = None,
        records: Path | None = None,
        id_labels: str = "int",
        overlay: OverlayConfig = OverlayConfig(),
        epoch: int | None = None,
        append_records: bool = False,
    ) -> None:
        self.results = dict(results)
        self.videos = dict(videos or {})
        self.overlay = overlay
        self._streams: dict[str, _StreamFiles] = {}
        self._records = TrackRecordsWriter(records, id_labels, epoch, append_records) if records is not None else None

    @property
    def records_path(self) -> Path | None:
        """The JSON Lines file, once a record is in it."""
        return self._records.path if self._records is not None and self._records.records_written else None

    def write(self, result: StreamResult, frame_rate: float = DEFAULT_FRAME_RATE, epoch: int | None = None) -> None:
        """Write one tracked frame to its stream's files and to the records (epoch: its record's)."""
        files = self._streams.get(result.stream)
        if files is None:
            target = self.results.get(result.stream)
            files = _StreamFiles(MotResultsWriter(target) if target is not None else None, self.videos.get(result.stream))
            self._streams[result.stream] = files
        ids = np.array([t.track_id for t in result.tracks], dtype=np.int64)
        boxes = np.array([t.box for t in result.tracks], dtype=np.float32).reshape(-1, 4)
        scores = np.array([t.score for t in result.tracks], dtype=np.float32)
        restored = np.array([t.restored for t in result.tracks], dtype=bool)
        if files.results is not None:
            files.results.write_frame(result.frame_index, ids, boxes, scores)
        if self._records is not None:
            self._records.write(result, epoch)
        files.ids.update(ids.tolist())
        files.restored_boxes += int(restored.sum())
        files.frames += 1
        if files.video_path is not None and result.frame is not None:
            if files.video is None:
                height, width = result.frame.shape[:2]
                files.video = OverlayVideoWriter(files.video_path, frame_rate, (width, height))
                files.trails = TrailHistory(self.overlay.trail_length_frames)
            assert files.trails is not None  # made with the video
            files.trails.update(ids, boxes)
            files.video.write(draw_tracks(result.frame, ids, boxes, restored, files.trails, self.overlay))

    def close(self, complete: bool, health: Mapping[str, StreamHealth] | None = None) -> list[StreamSummary]:
        """Finalise every file (complete=False: the run stopped early; whole frames are kept)."""
        summaries = []
        names = list(dict.fromkeys([*self._streams, *(health or {})]))
        for name in names:
            files = self._streams.get(name)
            results = files.results.close(complete=complete) if files is not None and files.results is not None else None
            video = files.video.close() if files is not None and files.video is not None else None
            summaries.append(
                StreamSummary(
                    name, files.frames if files else 0, len(files.ids) if files else 0,
                    files.restored_boxes if files else 0, results, video, (health or {}).get(name),
                )  # fmt: skip
            )
        if self._records is not None:
            self._records.close()
        return summaries


def track_streams(runtime: StreamRuntime, outputs: StreamOutputs, progress: bool = False) -> TrackSummary:
    """Run `runtime` until every stream is done, writing each result to `outputs`.

    progress: per-stream bars on stderr when it is a terminal, else a status line every
    STATUS_INTERVAL_S seconds. The files are finalised in every case; when the run stops early
    (an exception, Ctrl-C) the frames done so far are kept, a warning says so, and the
    exception propagates.
    """
    bars = _ProgressBars(runtime, enabled=progress and sys.stderr.isatty())
    start = last_status = time.perf_counter()
    completed = False
    try:
        for result in runtime.results():
            outputs.write(result, runtime.frame_rate(result.stream) or DEFAULT_FRAME_RATE)
            bars.update(result.stream)
            now = time.perf_counter()
            if progress and not bars.enabled and now - last_status >= STATUS_INTERVAL_S:
                last_status = now
                log.info("%s", status_line(runtime.health()))
        completed = True
    finally:
        bars.close()
        seconds = time.perf_counter() - start
        summaries = outputs.close(complete=completed, health=runtime.health())
        if not completed:
            done = ", ".join(f"{s.name} {s.frames}" for s in summaries) or "none"
            log.warning("stopped; frames kept per stream: %s", done)
    return TrackSummary(summaries, outputs.records_path, seconds, dict(runtime.batch_sizes))


def status_line(health: Mapping[str, StreamHealth]) -> str:
    """One line: each stream's state, frames tracked, frames/s, drops and reconnects."""
    parts = []
    for item in health.values():
        extra = "".join(
            f", {n} {what}" for n, what in ((item.frames_dropped, "dropped"), (item.reconnects, "reconnects")) if n
        )
        parts.append(f"{item.name}: {item.state} {item.frames_tracked} frames {item.frames_per_second:.1f}/s{extra}")
    return "; ".join(parts)


class _ProgressBars:
    """One tqdm bar per stream on stderr (created as streams appear)."""

    def __init__(self, runtime: StreamRuntime, enabled: bool) -> None:
        self.enabled = enabled
        self._runtime = runtime
        self._bars: dict[str, Any] = {}

    def update(self, name: str) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(name)
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(desc=name, unit="frame", file=sys.stderr, position=len(self._bars), dynamic_ncols=True, leave=True)
            self._bars[name] = bar
        bar.update(1)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def summary_lines(summary: TrackSummary) -> list[str]:
    """Human lines for the end of a run: one per stream, then the totals."""
    lines = []
    for stream in summary.streams:
        files = ", ".join(str(p) for p in (stream.results, stream.video) if p is not None) or "no results"
        state = f" ({stream.health.state}: {stream.health.last_error})" if stream.health and stream.health.last_error else ""
        lines.append(f"{stream.name}: {stream.frames} frames, {stream.tracks} tracks, {stream.restored_boxes} restored boxes -> {files}{state}")
    if summary.records is not None:
        lines.append(f"records -> {summary.records}")
    return lines


def require_some_success(summary: TrackSummary) -> None:
    """BadInput when every stream failed (the command then exits 2): the failures, one line."""
    if summary.streams and len(summary.failed) == len(summary.streams):
        errors = "; ".join(s.health.last_error or "failed" for s in summary.failed if s.health is not None)
        raise BadInput(errors if len(summary.failed) == 1 else f"every stream failed: {errors}")
