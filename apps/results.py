"""Results files: MOTChallenge text per stream (a crash-safe per-frame writer and a reader for
results and ground truth), and JSON Lines records of every stream's tracked frames.

Format (one row per box, comma separated, no header):
`frame,id,x,y,w,h,score,-1,-1,-1` with (x, y) the top-left corner, w and h the size, all in frame
pixels (2 decimals), score with 4 decimals. Ground-truth files use the same first six columns,
then `mark,class,visibility` (MOT16/17/20) or `conf,-1,-1,-1` (MOT15).

Writing: `MotResultsWriter` writes to `<stem>.partial<suffix>` beside the target (omc.files:
`PendingFile`, `partial_path`), flushes after each frame and records how many bytes of whole
frames are on disk. `close()` renames the partial file to the target. When the run stops early
(an error, Ctrl-C) `close(complete=False)` first cuts the file back to the last whole frame, so
an interrupted run leaves a valid results file with every frame done so far; a run that wrote no
frame at all removes its partial file and leaves any earlier file at the target untouched. A
process that is killed outright (SIGKILL) leaves the partial file, whose whole lines are valid
rows (the last line may be cut).
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from omc.config import ID_LABELS
from omc.errors import BadInput
from omc.files import PendingFile

if TYPE_CHECKING:
    from omc.runtime.streams import StreamResult

log = logging.getLogger(__name__)

# Columns of a MOTChallenge row: frame, id, x, y, w, h are required; the rest default to -1.
REQUIRED_COLUMNS = 6
# A results row ends with three unused columns (3-D world coordinates in MOT15), always -1.
_ROW_FORMAT = "{:d},{:d},{:.2f},{:.2f},{:.2f},{:.2f},{:.4f},-1,-1,-1\n"


def format_frame(
    frame_index: int,
    track_ids: npt.NDArray[np.int64],
    boxes_xyxy: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
) -> str:
    """MOTChallenge rows of one frame as text.

    track_ids: [N] int.  boxes_xyxy: [N, 4] corners x1, y1, x2, y2 in frame pixels.  scores: [N].
    Returns N lines `frame,id,x,y,w,h,score,-1,-1,-1` ('' when N == 0).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    ids = np.asarray(track_ids).reshape(-1)
    conf = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(ids) == len(boxes) == len(conf):
        raise ValueError(f"{len(ids)} ids, {len(boxes)} boxes and {len(conf)} scores must have one length")
    tlwh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    # Text formatting is per row by nature; this runs once per frame for at most a few hundred rows.
    return "".join(
        _ROW_FORMAT.format(frame_index, int(i), *row, s) for i, row, s in zip(ids, tlwh.tolist(), conf.tolist())
    )


class MotResultsWriter:
    """Write MOTChallenge results frame by frame; see the module docstring for crash safety.

    Use as a context manager: leaving the block normally finalises the file, leaving it through
    an exception keeps the whole frames written so far (complete=False).
    """

    def __init__(self, path: str | Path, what: str = "results file") -> None:
        """BadInput when `path` cannot be written (see omc.files.PendingFile)."""
        self.path = Path(path)
        self._pending = PendingFile(self.path, visible=True, what=what)
        self.partial = self._pending.temporary
        try:
            self._file: io.TextIOWrapper | None = open(self.partial, "w", encoding="ascii", newline="\n")
        except BaseException:
            self._pending.discard()
            raise
        self._committed_bytes = 0
        self.frames_written = 0
        self.rows_written = 0

    def write_frame(
        self,
        frame_index: int,
        track_ids: npt.NDArray[np.int64],
        boxes_xyxy: npt.NDArray[np.floating],
        scores: npt.NDArray[np.floating],
    ) -> None:
        """Append one frame's rows (arrays as in `format_frame`) and flush them to the OS."""
        if self._file is None:
            raise ValueError(f"results writer for {self.path} is closed")
        text = format_frame(frame_index, track_ids, boxes_xyxy, scores)
        self._file.write(text)
        self._file.flush()
        self._committed_bytes += len(text)  # ASCII: one byte per character
        self.frames_written += 1
        self.rows_written += len(track_ids)

    def close(self, complete: bool = True) -> Path | None:
        """Finalise: rename the partial file to the target and return its path.

        complete=False (the run stopped early): cut the file back to the last whole frame first;
        when no frame was written, remove the partial file and return None.
        Closing twice is a no-op returning the target path.
        """
        if self._file is None:
            return self.path if self.path.exists() else None
        self._file.close()
        self._file = None
        if not complete and self.frames_written == 0:
            self._pending.discard()
            return None
        if not complete:
            os.truncate(self.partial, self._committed_bytes)
        return self._pending.commit()

    def __enter__(self) -> "MotResultsWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(complete=exc_type is None)


@dataclass(frozen=True)
class MotTable:
    """Rows of a MOTChallenge text file, as parallel arrays (N rows).

    frames: [N] int64, 1-based.  ids: [N] int64.  boxes_tlwh: [N, 4] float64 x, y (top-left),
    w, h in frame pixels.  scores: [N] float64, column 7 (results: confidence; ground truth: the
    consider mark 0/1), 1 when absent.  classes: [N] int64, column 8, -1 when absent.
    visibility: [N] float64, column 9, -1 when absent.
    """

    frames: npt.NDArray[np.int64]
    ids: npt.NDArray[np.int64]
    boxes_tlwh: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    classes: npt.NDArray[np.int64]
    visibility: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.frames)

    def select(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.integer]) -> "MotTable":
        """The rows picked by `mask` ([N] bool, or row indices in the wanted order), as a new table."""
        return MotTable(
            self.frames[mask], self.ids[mask], self.boxes_tlwh[mask],
            self.scores[mask], self.classes[mask], self.visibility[mask],
        )


def read_mot_txt(path: str | Path) -> MotTable:
    """Read a MOTChallenge results or ground-truth file (commas and/or whitespace between values).

    Blank lines are skipped; an empty file gives an empty table. BadInput names the file when it
    is missing, unreadable, has rows of different lengths, fewer than 6 columns, a value that is
    not a number, a frame number below 1, or a negative width or height.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"MOTChallenge file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc.__class__.__name__}") from exc
    if not text.strip():
        return _empty_table()
    try:
        rows = np.loadtxt(io.StringIO(text.replace(",", " ")), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "unparsable row"
        raise BadInput(f"{path} is not a MOTChallenge text file ({detail})") from None
    if rows.shape[1] < REQUIRED_COLUMNS:
        raise BadInput(f"{path} has {rows.shape[1]} columns; MOTChallenge rows have at least {REQUIRED_COLUMNS} (frame,id,x,y,w,h)")
    if not np.isfinite(rows[:, :REQUIRED_COLUMNS]).all():
        raise BadInput(f"{path} has non-finite values in its frame, id or box columns")
    if (rows[:, 0] < 1).any():
        line = int(np.argmax(rows[:, 0] < 1)) + 1
        raise BadInput(f"{path}: frame numbers start at 1 (row {line} has {rows[line - 1, 0]:g})")
    if (rows[:, 4:6] < 0).any():
        line = int(np.argmax((rows[:, 4:6] < 0).any(axis=1))) + 1
        raise BadInput(f"{path}: row {line} has a negative width or height")

    def column(index: int, fill: float) -> npt.NDArray[np.float64]:
        return rows[:, index] if rows.shape[1] > index else np.full(len(rows), fill)

    return MotTable(
        frames=rows[:, 0].astype(np.int64),
        ids=rows[:, 1].astype(np.int64),
        boxes_tlwh=np.ascontiguousarray(rows[:, 2:6]),
        scores=column(6, 1.0),
        classes=column(7, -1.0).astype(np.int64),
        visibility=column(8, -1.0),
    )


def _empty_table() -> MotTable:
    return MotTable(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float64),
        np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, np.float64),
    )


# --- JSON Lines: one record per tracked frame, every stream in one file ---------------------------

def track_record(result: StreamResult, id_labels: str = "int", epoch: int | None = None) -> dict[str, Any]:
    """The JSON Lines record of one tracked frame.

    Keys: stream, frame (1-based index), time (capture, s since the epoch), latency_ms (capture
    to tracks), batch (frames in its detector batch), skipped (frames of the stream not tracked
    just before it: dropped, or a reconnect gap), reconnected, and tracks: [{id, box [x1, y1, x2,
    y2] frame pixels, score, restored}]. id_labels "stream" writes ids as "stream:id". epoch: how
    many times the stream was restarted on another worker (omc cluster; its ids are offset so they
    stay unique across restarts), written as the record's "epoch" key.
    """
    if id_labels not in ID_LABELS:
        raise BadInput(f"id labels '{id_labels}' is not one of {', '.join(ID_LABELS)}")
    prefix = None if id_labels == "int" else result.stream
    tracks = [
        {
            "id": track.track_id if prefix is None else f"{prefix}:{track.track_id}",
            "box": [round(float(v), 2) for v in track.box],
            "score": round(float(track.score), 4),
            "restored": bool(track.restored),
        }
        for track in result.tracks
    ]
    record: dict[str, Any] = {
        "stream": result.stream,
        "frame": result.frame_index,
        "time": round(result.capture_time, 3),
        "latency_ms": round(result.latency_ms, 2),
        "batch": result.batch_size,
        "skipped": result.skipped,
        "reconnected": result.reconnected,
        "tracks": tracks,
    }
    if epoch is not None:
        record["epoch"] = epoch
    return record


class TrackRecordsWriter:
    """Append one JSON Lines record per tracked frame (see `track_record`) and flush it.

    Each record is one line handed to the OS in one write and flushed, so the file is valid JSON
    Lines after Ctrl-C or a crash; only a process killed in the middle of a write can leave a
    last line without its newline, which `read_track_records` ignores. append: continue an
    existing file instead of replacing it. epoch: written into every record (see `track_record`);
    `write` may give each record its own. The file is opened at the first record: a run that
    tracks nothing leaves no file behind (nor touches an existing one).
    """

    def __init__(self, path: str | Path, id_labels: str = "int", epoch: int | None = None, append: bool = False) -> None:
        if id_labels not in ID_LABELS:
            raise BadInput(f"id labels '{id_labels}' is not one of {', '.join(ID_LABELS)}")
        self.path = Path(path)
        self.id_labels = id_labels
        self.epoch = epoch
        self.append = append
        self._file: io.TextIOWrapper | None = None
        self._closed = False
        self.records_written = 0

    def write(self, result: StreamResult, epoch: int | None = None) -> None:
        """Append the record of one tracked frame; epoch: this record's (default: the writer's)."""
        if self._closed:
            raise ValueError(f"records writer for {self.path} is closed")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if self.append else "w", encoding="utf-8", newline="\n")
        epoch = self.epoch if epoch is None else epoch
        self._file.write(json.dumps(track_record(result, self.id_labels, epoch), separators=(",", ":")) + "\n")
        self._file.flush()
        self.records_written += 1

    def close(self) -> Path | None:
        """Close the file; returns its path, or None when no record was ever written."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.path if self.records_written else None

    def __enter__(self) -> "TrackRecordsWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_track_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file, in order; a last line without its newline (a write cut
    short by a kill) is ignored. BadInput for a line that is not a JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines[:-1], 1):  # the last piece is '' or an unfinished line
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise BadInput(f"{path} line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise BadInput(f"{path} line {number} is not a JSON object")
        records.append(record)
    return records
