"""Track overlay for `--save-video`: boxes, ids, short trails; restored boxes drawn dashed.

A box whose detection came from the re-check network (`Track.restored`) is drawn with a dashed
outline and an "id R" label, every other box with a solid outline and its id; both in the track's
colour, so a person keeps one colour whether detected or restored. Each track trails a polyline
through the centres of its last `OverlayConfig.trail_length_frames` frames.

`TrailHistory` holds the trails (state that lives for the stream); `draw_tracks` is pure and
returns a new image; `OverlayVideoWriter` writes frames with OpenCV (mp4v), to a temporary name
renamed when closed (omc.files.PendingFile).
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import numpy.typing as npt

from omc.config import OverlayConfig
from omc.errors import BadInput
from omc.files import PendingFile
from omc.runtime.sources import quiet_opencv_log

log = logging.getLogger(__name__)

Colour = tuple[int, int, int]
# Hue step between consecutive ids (golden ratio conjugate): neighbouring ids get distant hues.
_HUE_STEP = 0.618033988749895
_LABEL_TEXT_COLOUR: Colour = (255, 255, 255)
FOURCC = "mp4v"


def id_colour(track_id: int) -> Colour:
    """A bright BGR colour that is a fixed function of the id."""
    hue = int(((track_id * _HUE_STEP) % 1.0) * 180)  # OpenCV hue range is [0, 180)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


class TrailHistory:
    """Centres of each track over its last `length` frames of presence.

    A trail is dropped once its track has been absent for `length` frames, so memory stays
    bounded on long streams.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self._points: dict[int, deque[tuple[int, int]]] = {}
        self._last_seen: dict[int, int] = {}
        self._frame = 0

    def update(self, track_ids: npt.NDArray[np.int64], boxes_xyxy: npt.NDArray[np.floating]) -> None:
        """Add this frame's centres. track_ids: [N]; boxes_xyxy: [N, 4] frame pixels."""
        self._frame += 1
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        centres = np.rint((boxes[:, :2] + boxes[:, 2:]) / 2)
        for track_id, (cx, cy) in zip(np.asarray(track_ids).tolist(), centres.astype(np.int64).tolist()):
            self._points.setdefault(track_id, deque(maxlen=self.length)).append((cx, cy))
            self._last_seen[track_id] = self._frame
        stale = [i for i, seen in self._last_seen.items() if self._frame - seen >= self.length]
        for track_id in stale:
            del self._points[track_id], self._last_seen[track_id]

    def trail(self, track_id: int) -> npt.NDArray[np.int32]:
        """[L, 2] int32 centres (x, y), oldest first; [0, 2] for an unknown id."""
        return np.array(self._points.get(track_id, ()), dtype=np.int32).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self._points)


def _dashed_rectangle(image: np.ndarray, x1: int, y1: int, x2: int, y2: int, colour: Colour, thickness: int, dash: int) -> None:
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for (ax, ay), (bx, by) in zip(corners[:-1], corners[1:]):
        length = max(abs(bx - ax), abs(by - ay))
        # One short line per dash along the edge; at most a few hundred per box.
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            t0, t1 = start / max(length, 1), end / max(length, 1)
            p0 = (round(ax + (bx - ax) * t0), round(ay + (by - ay) * t0))
            p1 = (round(ax + (bx - ax) * t1), round(ay + (by - ay) * t1))
            cv2.line(image, p0, p1, colour, thickness, cv2.LINE_8)


def draw_tracks(
    frame_bgr: npt.NDArray[np.uint8],
    track_ids: npt.NDArray[np.int64],
    boxes_xyxy: npt.NDArray[np.floating],
    restored: npt.NDArray[np.bool_],
    trails: TrailHistory | None = None,
    style: OverlayConfig = OverlayConfig(),
) -> npt.NDArray[np.uint8]:
    """Draw one frame's tracks on a copy of `frame_bgr`.

    frame_bgr: uint8 [H, W, 3].  track_ids: [N].  boxes_xyxy: [N, 4] frame pixels.
    restored: [N] bool, True for boxes from the re-check network (dashed, label "id R").
    trails: centres to draw as polylines (call `trails.update` for this frame first), or None.
    Returns a new uint8 [H, W, 3] image; `frame_bgr` is not modified.
    """
    canvas = frame_bgr.copy()
    thickness, font = style.line_thickness_px, cv2.FONT_HERSHEY_SIMPLEX
    corners = np.rint(np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)).astype(np.int64).tolist()
    for track_id, (x1, y1, x2, y2), is_restored in zip(np.asarray(track_ids).tolist(), corners, np.asarray(restored).tolist()):
        colour = id_colour(track_id)
        if trails is not None:
            points = trails.trail(track_id)
            if len(points) > 1:
                cv2.polylines(canvas, [points], False, colour, max(1, thickness // 2), cv2.LINE_AA)
        if is_restored:
            _dashed_rectangle(canvas, x1, y1, x2, y2, colour, thickness, style.dash_length_px)
            label = f"{track_id} R"
        else:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_8)
            label = str(track_id)
        (text_w, text_h), baseline = cv2.getTextSize(label, font, style.font_scale, 1)
        top = max(y1 - text_h - baseline, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + text_w, top + text_h + baseline), colour, cv2.FILLED)
        cv2.putText(canvas, label, (x1, top + text_h), font, style.font_scale, _LABEL_TEXT_COLOUR, 1, cv2.LINE_AA)
    return canvas


class OverlayVideoWriter:
    """Write BGR frames to a video (mp4v) through a temporary name renamed by `close()`.

    path: the target; the temporary file is `<stem>.partial<suffix>` (OpenCV picks the container
    from the suffix). frame_size: (width, height). `close()` finalises whatever was written, also
    after an interruption (a released mp4 is playable); with no frame written it removes the
    temporary file. A process killed outright (SIGKILL) leaves the temporary file unplayable: an
    mp4's index is written only when the writer is released. BadInput when `path` cannot be
    written (see omc.files.PendingFile).
    """

    def __init__(self, path: str | Path, frame_rate: float, frame_size: tuple[int, int], what: str = "video") -> None:
        self.path = Path(path)
        self._pending = PendingFile(self.path, visible=True, what=what)
        self.partial = self._pending.temporary
        self.frame_size = frame_size
        with quiet_opencv_log():
            self._writer: cv2.VideoWriter | None = cv2.VideoWriter(
                str(self.partial), cv2.VideoWriter.fourcc(*FOURCC), float(frame_rate), frame_size
            )
        if not self._writer.isOpened():
            self._writer.release()
            self._writer = None
            self._pending.discard()
            raise BadInput(f"cannot write video {self.path}: OpenCV has no {FOURCC} writer for '{self.path.suffix}' files (use .mp4)")
        self.frames_written = 0

    def write(self, frame_bgr: npt.NDArray[np.uint8]) -> None:
        """Append one uint8 [H, W, 3] frame of size `frame_size`."""
        if self._writer is None:
            raise ValueError(f"video writer for {self.path} is closed")
        height, width = frame_bgr.shape[:2]
        if (width, height) != self.frame_size:
            raise ValueError(f"frame is {width}x{height}, the video is {self.frame_size[0]}x{self.frame_size[1]}")
        self._writer.write(frame_bgr)
        self.frames_written += 1

    def close(self) -> Path | None:
        """Release the writer and rename the file; None (and no file) when no frame was written."""
        if self._writer is None:
            return self.path if self.path.exists() else None
        self._writer.release()
        self._writer = None
        if self.frames_written == 0:
            self._pending.discard()
            return None
        return self._pending.commit()

    def __enter__(self) -> "OverlayVideoWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
