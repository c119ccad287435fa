"""Frame sources: a video file, a folder of images, a MOTChallenge sequence folder, or a live stream.

`open_source(spec)` picks the kind from what `spec` is and returns a `FrameSource`: a URL
(`rtsp://`, `rtsps://`, `rtmp://`, `http://`, `https://`) or a camera index (`0`, or the
string "0" when no such file exists) opens a `LiveSource`; a path opens a file source. Iterating a
source yields `(frame_index, frame_bgr)`: `frame_index` is 1-based MOTChallenge numbering (a
MOTChallenge sequence takes it from the image file names, `000001.jpg` -> 1; other sources count
from 1), `frame_bgr` is uint8 [H, W, 3] BGR, a fresh array per frame.

Normalisation (each logged once per source): a grayscale image becomes BGR by repeating the
channel; a 16-bit image is scaled to 8 bits (value * 255 / 65535, rounded); a 4-channel image
loses its alpha channel. Any other pixel type is refused.

Every frame must have the first frame's size. A frame of another size raises `BadInput` naming
the frame and both sizes: the tracker's Kalman states are in the first size's pixels, so boxes
after a resize would be silently wrong. What a consumer wrote for earlier frames stays valid.

Problems with the input (missing path, empty folder, a video that cannot be opened or yields no
frame, an unreadable or truncated image, a seqinfo.ini whose imDir leaves the sequence folder)
raise one `BadInput` with the path.
"""

from __future__ import annotations

import configparser
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from urllib.parse import urlsplit, urlunsplit

from omc.errors import BadInput
from omc.runtime.jpeg import is_jpeg, jpeg_is_complete

log = logging.getLogger(__name__)

FrameBGR = npt.NDArray[np.uint8]

# File name suffixes read as images (OpenCV decodes all of them).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Frame rate assumed when a source does not state one (the reference tracker's default).
DEFAULT_FRAME_RATE = 30.0
# MOTChallenge sequence layout (seqinfo.ini keys and the default image folder).
SEQINFO_FILE = "seqinfo.ini"
MOT_IMAGE_DIR = "img1"

# URL schemes opened as live streams (OpenCV's FFmpeg backend reads them all).
LIVE_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https")
# A live source stating a frame rate outside this range (RTSP often reports the 90 kHz clock)
# gets DEFAULT_FRAME_RATE instead.
LIVE_FRAME_RATE_RANGE = (1.0, 240.0)

_UINT16_TO_UINT8 = 255.0 / 65535.0
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value: 'f2.png' < 'f10.png'."""
    return tuple((1, int(part)) if part.isdigit() else (0, part.lower()) for part in _DIGITS.split(name) if part)


def to_bgr8(image: np.ndarray, what: str) -> tuple[FrameBGR, str | None]:
    """Convert a decoded image to uint8 [H, W, 3] BGR.

    image: [H, W] or [H, W, 1] (grayscale), [H, W, 3] (BGR) or [H, W, 4] (BGRA); uint8 or uint16.
    what: names the image in error messages.
    Returns the converted image (a new array unless `image` already is uint8 BGR) and a short
    note of the conversion applied ("grayscale", "16-bit", "alpha", joined by '+'), or None.
    """
    notes: list[str] = []
    if image.dtype == np.uint16:
        image = np.rint(image.astype(np.float32) * _UINT16_TO_UINT8).astype(np.uint8)
        notes.append("16-bit")
    elif image.dtype != np.uint8:
        raise BadInput(f"{what} has pixel type {image.dtype}; only 8-bit and 16-bit images are supported")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        notes.append("grayscale")
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        notes.append("alpha")
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise BadInput(f"{what} has shape {list(image.shape)}; expected a grayscale, BGR or BGRA image")
    return np.ascontiguousarray(image), "+".join(notes) or None


_CONVERSION_MESSAGES = {
    "16-bit": "16-bit images are scaled to 8 bits (value * 255 / 65535)",
    "grayscale": "grayscale images are converted to BGR",
    "alpha": "the alpha channel of 4-channel images is dropped",
}


class FrameSource(ABC):
    """A stream of frames with its frame rate, frame count (when known) and a name.

    path: the file or folder, or for a live source its URL (password removed) or camera index.
    name: the sequence name (file stem or folder name), used for output names and logs.
    frame_rate: frames per second.  frame_count: number of frames, or None when unknown.
    frame_size: (width, height) in pixels once the first frame has been read, else None.
    is_live: frames come at the sender's pace and the source may fail and come back.
    files: every file the source reads (so that a run can refuse to write over one of them).
    """

    is_live = False

    def __init__(
        self, path: Path | str, name: str, frame_rate: float, frame_count: int | None, files: tuple[Path, ...] = ()
    ) -> None:
        self.path = path
        self.files = files
        self.name = name
        self.frame_rate = frame_rate
        self.frame_count = frame_count
        self.frame_size: tuple[int, int] | None = None
        self._logged_conversions: set[str] = set()

    def __iter__(self) -> Iterator[tuple[int, FrameBGR]]:
        """Yield (1-based frame index, uint8 [H, W, 3] BGR frame); BadInput on a size change."""
        for index, frame in self._frames():
            height, width = frame.shape[:2]
            if self.frame_size is None:
                self.frame_size = (width, height)
            elif self.frame_size != (width, height):
                first_w, first_h = self.frame_size
                raise BadInput(
                    f"frame {index} of {self.path} is {width}x{height} but the stream started at "
                    f"{first_w}x{first_h}; all frames of one sequence must have the same size"
                )
            yield index, frame

    @abstractmethod
    def _frames(self) -> Iterator[tuple[int, FrameBGR]]:
        """Yield (index, frame) without the size check."""

    def close(self) -> None:
        """Release the underlying reader; iterating again afterwards is not supported."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _normalise(self, image: np.ndarray, what: str) -> FrameBGR:
        frame, note = to_bgr8(image, what)
        if note is not None:
            for kind in note.split("+"):
                if kind not in self._logged_conversions:
                    self._logged_conversions.add(kind)
                    log.info("%s: %s (first seen at %s)", self.path, _CONVERSION_MESSAGES[kind], what)
        return frame


class _CaptureSource(FrameSource):
    """Frames read from an OpenCV VideoCapture (`self._capture`, set by the subclass) until it gives
    none; `_ended` says what that means for the kind of source."""

    _capture: Any

    def _frames(self) -> Iterator[tuple[int, FrameBGR]]:
        index = 0
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                break
            index += 1
            yield index, self._normalise(image, f"frame {index}")
        self._ended(index)

    def _ended(self, frames: int) -> None:
        """Called once the capture gives no more frames, after `frames` of them."""

    def close(self) -> None:
        self._capture.release()


class VideoSource(_CaptureSource):
    """Frames of a video file decoded by OpenCV (FFmpeg).

    frame_rate: the container's CAP_PROP_FPS, or DEFAULT_FRAME_RATE (logged) when it is 0 or not
    finite. frame_count: CAP_PROP_FRAME_COUNT when positive (containers may estimate it).
    """

    def __init__(self, path: Path) -> None:
        if path.stat().st_size == 0:
            raise BadInput(f"video {path} is empty (0 bytes)")
        with quiet_opencv_log():
            capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            raise BadInput(f"cannot open video {path}: not a video, damaged, or in a codec OpenCV cannot decode")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(fps) or fps <= 0:
            log.warning("%s does not state its frame rate; assuming %g fps (set it with --frame-rate)", path, DEFAULT_FRAME_RATE)
            fps = DEFAULT_FRAME_RATE
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        super().__init__(path, path.stem, fps, count if count > 0 else None, (path,))
        self._capture = capture

    def _ended(self, frames: int) -> None:
        if frames == 0:
            raise BadInput(f"video {self.path} has no readable frame (empty or damaged)")
        if self.frame_count is not None and frames < self.frame_count:
            log.warning("%s ended after %d of the %d frames its header states", self.path, frames, self.frame_count)


@contextmanager
def quiet_opencv_log(silent: bool = False) -> Iterator[None]:
    """Silence OpenCV's own warnings (silent: its errors too) inside the block (its log level is
    process-wide: restored on exit). Used where OpenCV tries each backend in turn and logs one
    warning per backend that declines a file, or logs the decoder's error for a damaged image:
    our one BadInput says it instead."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT if silent else cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


class ImageFolderSource(FrameSource):
    """Images of one folder in natural order ('2.jpg' before '10.jpg'), numbered from 1.

    Files whose suffix is not in IMAGE_SUFFIXES are ignored. frame_rate: DEFAULT_FRAME_RATE
    unless given (a folder does not state one; logged).
    """

    def __init__(self, folder: Path, frame_rate: float | None = None, name: str | None = None) -> None:
        files = list_images(folder)
        if frame_rate is None:
            # Debug, not info: folders never state a rate, so the default is expected, not news.
            log.debug("%s: image folders carry no frame rate; assuming %g fps (set it with --frame-rate)", folder, DEFAULT_FRAME_RATE)
            frame_rate = DEFAULT_FRAME_RATE
        super().__init__(folder, name or folder.name, frame_rate, len(files), tuple(files))
        self._files = files
        self._indices = self._frame_indices(files)

    def _frame_indices(self, files: list[Path]) -> list[int]:
        return list(range(1, len(files) + 1))

    def _frames(self) -> Iterator[tuple[int, FrameBGR]]:
        for index, file in zip(self._indices, self._files):
            yield index, self._normalise(read_image(file, f"frame {index}"), str(file))


class MotSequenceSource(ImageFolderSource):
    """A MOTChallenge sequence folder: `seqinfo.ini` and the image folder it names (`img1/`).

    Frame indices come from the file names (`000042.jpg` -> 42), the frame rate from seqinfo.ini's
    `frameRate` (DEFAULT_FRAME_RATE, logged, when the folder has `img1/` but no seqinfo.ini).
    """

    def __init__(self, folder: Path) -> None:
        seqinfo = folder / SEQINFO_FILE
        image_dir, frame_rate, name = folder / MOT_IMAGE_DIR, None, folder.name
        if seqinfo.is_file():
            section = _read_seqinfo(seqinfo)
            image_dir = _image_dir(folder, section.get("imDir", MOT_IMAGE_DIR), seqinfo)
            name = section.get("name", name)
            frame_rate = _parse_frame_rate(section.get("frameRate"), seqinfo)
        if not image_dir.is_dir():
            raise BadInput(f"MOTChallenge sequence {folder} has no image folder {image_dir.name}/")
        super().__init__(image_dir, frame_rate, name)
        self.path = folder
        if seqinfo.is_file():
            self.files = (seqinfo, *self.files)

    def _frame_indices(self, files: list[Path]) -> list[int]:
        indices: list[int] = []
        for file in files:
            if not file.stem.isdigit():
                raise BadInput(f"MOTChallenge image {file} must be named by its frame number (e.g. 000001.jpg)")
            indices.append(int(file.stem))
        if len(set(indices)) != len(indices) or min(indices) < 1:
            raise BadInput(f"MOTChallenge images in {files[0].parent} must have distinct frame numbers from 1")
        return indices


def read_image(path: Path, what: str) -> np.ndarray:
    """Decode an image file as it is stored (any depth and channel count); BadInput naming `path`
    when it cannot be read, is not an image, or is a JPEG cut short.

    libjpeg decodes a truncated JPEG without an error (the missing rows come out grey), so
    JPEG files are checked for their end-of-image marker first (omc.runtime.jpeg).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read image {path} ({what}): {exc.strerror or exc}") from None
    if is_jpeg(data) and not jpeg_is_complete(data):
        raise BadInput(f"image {path} ({what}) is truncated: its JPEG data ends before the end-of-image marker")
    with quiet_opencv_log(silent=True):
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise BadInput(f"cannot read image {path} ({what}): damaged or not an image")
    return image


def _read_seqinfo(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are camelCase
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot parse {path}: {exc.__class__.__name__}") from exc
    if not parser.has_section("Sequence"):
        raise BadInput(f"{path} has no [Sequence] section")
    return parser["Sequence"]


def _image_dir(folder: Path, im_dir: str, seqinfo: Path) -> Path:
    """The image folder seqinfo.ini's imDir names; BadInput unless it lies inside the sequence folder.

    A sequence is read from its own folder only: `imDir=../../elsewhere` (or an absolute path, or
    a link leading out) would read frames the user did not point at.
    """
    image_dir = folder / im_dir
    if not image_dir.resolve().is_relative_to(folder.resolve()):
        raise BadInput(f"{seqinfo}: imDir '{im_dir}' must name a folder inside the sequence folder {folder}")
    return image_dir


def _parse_frame_rate(text: str | None, seqinfo: Path) -> float:
    if text is None:
        raise BadInput(f"{seqinfo} has no frameRate entry")
    try:
        rate = float(text)
    except ValueError:
        raise BadInput(f"{seqinfo}: frameRate '{text}' is not a number") from None
    if not math.isfinite(rate) or rate <= 0:
        raise BadInput(f"{seqinfo}: frameRate must be positive, got {text}")
    return rate


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, in natural order; BadInput when there is none."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise BadInput(f"folder {folder} contains no images ({suffixes})")
    return sorted(files, key=lambda p: natural_key(p.name))


def open_source(spec: str | Path | int, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> FrameSource:
    """Open `spec`: a live URL or camera index (LiveSource, with these timeouts in seconds), else
    a path: a MOTChallenge sequence folder (has seqinfo.ini or img1/), an image folder, or a video
    file; BadInput when it is none of these."""
    if isinstance(spec, int):
        return LiveSource(spec, open_timeout_s, read_timeout_s)
    if isinstance(spec, str) and is_live_location(spec):
        return LiveSource(int(spec) if spec.isdigit() else spec, open_timeout_s, read_timeout_s)
    path = Path(spec)
    if not path.exists():
        raise BadInput(f"source {path} does not exist")
    if path.is_dir():
        if (path / SEQINFO_FILE).is_file() or (path / MOT_IMAGE_DIR).is_dir():
            return MotSequenceSource(path)
        return ImageFolderSource(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise BadInput(f"source {path} is a single image; pass the folder that holds the frames")
    return VideoSource(path)


class LiveSource(_CaptureSource):
    """A live stream (`rtsp://`, `rtmp://`, `http(s)://`) or a local camera (an index), read by OpenCV.

    Opening waits at most open_timeout_s, each frame at most read_timeout_s; either failing raises
    BadInput (a live source is not retried here: omc.runtime.streams reconnects). A stream that
    stops sending frames ends the iteration. frame_rate: the stream's stated rate when it lies in
    LIVE_FRAME_RATE_RANGE, else DEFAULT_FRAME_RATE. Frame indices count frames read, from 1.
    """

    is_live = True

    def __init__(self, location: str | int, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> None:
        shown = redact_url(location) if isinstance(location, str) else str(location)
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1e3),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1e3),
        ]  # fmt: skip
        with quiet_opencv_log():
            if isinstance(location, int):
                capture = cv2.VideoCapture(location, cv2.CAP_ANY, timeouts)
            else:
                capture = cv2.VideoCapture(location, cv2.CAP_FFMPEG, timeouts)
        if not capture.isOpened():
            capture.release()
            what = f"camera {location}" if isinstance(location, int) else f"live stream {shown}"
            raise BadInput(f"cannot open {what}: unreachable, refused, or not a stream OpenCV can decode")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        low, high = LIVE_FRAME_RATE_RANGE
        if not (math.isfinite(fps) and low <= fps <= high):
            log.info("%s states no usable frame rate (%g); assuming %g fps", shown, fps, DEFAULT_FRAME_RATE)
            fps = DEFAULT_FRAME_RATE
        super().__init__(shown, live_source_name(location), fps, None)
        self._capture = capture

    def _ended(self, frames: int) -> None:
        log.info("%s: no frame (stream ended, stalled or dropped)", self.path)


def redact_url(url: str) -> str:
    """`url` without the password of its user part (rtsp://user:secret@host -> rtsp://user:***@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def live_source_name(location: str | int) -> str:
    """A file-name-safe stream name for a URL (host, port and path) or a camera index ("camera0")."""
    if isinstance(location, int):
        return f"camera{location}"
    parts = urlsplit(location)
    text = f"{parts.hostname or ''}_{parts.port or ''}_{parts.path}"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "stream"


def is_live_location(spec: str | Path | int) -> bool:
    """True for a camera index or a URL with one of LIVE_SCHEMES."""
    if isinstance(spec, int):
        return True
    if isinstance(spec, Path):
        return False
    return urlsplit(spec).scheme.lower() in LIVE_SCHEMES or (spec.isdigit() and not Path(spec).exists())
