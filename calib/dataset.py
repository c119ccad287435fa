"""Calibration sets: letterboxed frames and real tracklets from the user's own footage (`omc calib`).

`build_calibration_set(sources, frames, engines_dir, out)` samples frames evenly over one or more
sources (videos, image folders, MOTChallenge sequences: `omc.runtime.sources.open_source`),
letterboxes them exactly as the runtime does (`omc.runtime.letterbox` at the engines' input
size), and stores them as uint8 in one `.npz`, so a calibration can be repeated bit for bit.
Held-out frames, spread evenly between the calibration frames and never used to calibrate, are
stored beside them for the drift figures of the INT8 graphs.

The re-check graph's calibration inputs are the float detector's outputs on a frame plus the
tracklet matrix the float tracker sends to the re-check on that frame. The tracker
(`omc.runtime.tracker.Tracker` over the float engines) runs over the `tracker_warmup_frames`
consecutive frames before each such frame, in order, and the matrix it sends on the frame itself
is recorded. Running it over whole videos would cost a detector pass per frame; tracks are
confirmed on their second frame, so a short run gives the same kind of tracklets. The detector
maps are not stored (21 MB per frame at 1088 x 608): `omc quantize` recomputes them from the
stored frames with the same float detector.

When the tracker has no live tracklet on a frame (untrained or random weights detect nothing; an
empty scene), the L2-normalised embeddings of the top `fallback_tracklets` detector candidates
stand in, and the set records which samples those are (and the log says so).

File layout (np.load, no pickle): `images` uint8 [N, H, W, 3], `holdout_images` uint8 [M, H, W, 3],
`calib_origin` / `holdout_origin` int64 [N, 2] / [M, 2] (source index, 1-based frame index),
per re-check sample group (`recheck_*` for calibration frames, `holdout_recheck_*` for held-out
frames): `_frame` int64 [S] (row of the image array), `_offsets` int64 [S + 1], `_tracklets`
float32 [T, E] (sample s owns rows offsets[s]:offsets[s + 1]), `_fallback` bool [S]; and
`provenance`, a JSON string (sources, frame indices, input size, export.json SHA-256, settings).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from omc import __version__, contract
from omc.config import CalibConfig, TrackerConfig
from omc.contract import EngineMeta
from omc.errors import BadInput
from omc.files import file_sha256, replacing
from omc.runtime.letterbox import LetterboxTransform, letterbox
from omc.runtime.sources import FrameSource, open_source

log = logging.getLogger(__name__)

# Version of the file layout above; readers refuse other versions.
CALIB_FORMAT_VERSION = 1
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


# --- sampling --------------------------------------------------------------------------------


def even_positions(total: int, count: int) -> I64:
    """`count` distinct positions spread evenly over range(total): floor((i + 0.5) total / count).

    Each position is the middle of its 1 / count share, so neither end is favoured.
    Returns int64 [count], ascending; [0] when count is 0. ValueError unless 0 <= count <= total.
    """
    if not 0 <= count <= total:
        raise ValueError(f"cannot pick {count} positions out of {total}")
    if count == 0:
        return np.zeros(0, np.int64)
    # (2i + 1) total / (2 count) in integers: exact, and distinct because total / count >= 1.
    return (np.arange(count, dtype=np.int64) * 2 + 1) * total // (2 * count)


def split_positions(total: int, frames: int, holdout: int) -> tuple[I64, I64]:
    """Calibration and held-out positions over range(total), disjoint and both spread evenly.

    frames + holdout positions are spread evenly, and every (frames + holdout) / holdout-th of
    them is held out. With fewer than frames + holdout positions both shrink in proportion
    (at least one calibration position). Returns (calibration [n], holdout [m]) int64, ascending.
    """
    if total < 1:
        raise ValueError("no positions to pick from")
    wanted = frames + holdout
    if total < wanted:
        holdout = min(holdout * total // wanted, total - 1)
        frames = total - holdout
    everything = even_positions(total, frames + holdout)
    held = np.zeros(len(everything), bool)
    held[even_positions(len(everything), holdout)] = True
    return everything[~held], everything[held]


# --- the set ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackletSamples:
    """Re-check samples: a frame each and the tracklet matrix the float tracker sent on it.

    frame: int64 [S], row of the image array the sample belongs to.  offsets: int64 [S + 1].
    rows: float32 [T, E], unit length; sample s owns rows[offsets[s]:offsets[s + 1]] (n >= 1).
    fallback: bool [S], True where top detector candidates stood in for missing tracklets.
    """

    frame: I64
    offsets: I64
    rows: F32
    fallback: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.frame)

    def tracklets(self, sample: int) -> F32:
        """float32 [n, E] of one sample (a view; copy before editing)."""
        return self.rows[self.offsets[sample] : self.offsets[sample + 1]]

    @classmethod
    def from_lists(cls, frames: Sequence[int], matrices: Sequence[F32], fallback: Sequence[bool], dim: int) -> "TrackletSamples":
        counts = [len(m) for m in matrices]
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        rows = np.concatenate(list(matrices)).astype(np.float32) if matrices else np.zeros((0, dim), np.float32)
        return cls(np.asarray(frames, np.int64), offsets, rows, np.asarray(fallback, bool))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_frame": self.frame,
            f"{prefix}_offsets": self.offsets,
            f"{prefix}_tracklets": self.rows,
            f"{prefix}_fallback": self.fallback,
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str) -> "TrackletSamples":
        return cls(
            np.asarray(data[f"{prefix}_frame"], np.int64),
            np.asarray(data[f"{prefix}_offsets"], np.int64),
            np.asarray(data[f"{prefix}_tracklets"], np.float32),
            np.asarray(data[f"{prefix}_fallback"], bool),
        )


@dataclass(frozen=True)
class CalibrationSet:
    """Frames (and re-check samples) to calibrate INT8 graphs with, and held-out frames to judge them.

    images: uint8 [N, H, W, 3] letterboxed BGR (the detector's `images` rows).
    holdout_images: uint8 [M, H, W, 3], frames never used for calibration.
    calib_origin / holdout_origin: int64 [N, 2] / [M, 2] (source index, 1-based frame index).
    recheck / holdout_recheck: tracklet samples on calibration / held-out frames.
    provenance: sources, input size, export.json SHA-256, settings (JSON-serialisable).
    """

    images: U8
    holdout_images: U8
    calib_origin: I64
    holdout_origin: I64
    recheck: TrackletSamples
    holdout_recheck: TrackletSamples
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def input_hw(self) -> tuple[int, int]:
        """(H, W) of the stored frames: the engines' network input."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def detector_feeds(self, holdout: bool = False) -> list[dict[str, U8]]:
        """One `images` feed [1, H, W, 3] per frame, in stored order."""
        images = self.holdout_images if holdout else self.images
        return [{contract.IMAGES: images[i : i + 1]} for i in range(len(images))]

    def save(self, path: str | Path) -> Path:
        """Write the set to `path` (.npz, compressed) through a temporary name; returns the path."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(CALIB_FORMAT_VERSION, np.int64),
            "images": self.images,
            "holdout_images": self.holdout_images,
            "calib_origin": self.calib_origin,
            "holdout_origin": self.holdout_origin,
            "provenance": np.array(json.dumps(self.provenance, sort_keys=True)),
            **self.recheck.arrays("recheck"),
            **self.holdout_recheck.arrays("holdout_recheck"),
        }
        with replacing(path) as temporary, open(temporary, "wb") as stream:
            np.savez_compressed(stream, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        """Read a set written by `save`; BadInput when the file is missing or not one."""
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"calibration set {path} not found; make one with: omc calib SOURCE --out {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path} is not a calibration set written by omc calib ({exc})") from None
        version = int(arrays["format_version"]) if "format_version" in arrays else None
        if version != CALIB_FORMAT_VERSION:
            raise BadInput(
                f"{path} is not a calibration set of format {CALIB_FORMAT_VERSION} (found {version}); "
                "make it again with this omc (omc calib)"
            )
        images = arrays["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
            raise BadInput(f"{path} holds no uint8 [N, H, W, 3] frames; make it again with omc calib")
        return cls(
            images=images,
            holdout_images=arrays["holdout_images"],
            calib_origin=arrays["calib_origin"],
            holdout_origin=arrays["holdout_origin"],
            recheck=TrackletSamples.from_arrays(arrays, "recheck"),
            holdout_recheck=TrackletSamples.from_arrays(arrays, "holdout_recheck"),
            provenance=json.loads(str(arrays["provenance"])),
        )


def recorded_calibration_set(meta: EngineMeta) -> Path | None:
    """The calibration set an INT8 export was made with, as its export.json records it; None, with
    a logged warning, when that file is gone or has changed since (its SHA-256 differs)."""
    record = meta.extra.get("int8", {}).get("calibration", {})
    path = Path(record.get("path", ""))
    if not record.get("path") or not path.is_file():
        log.warning("the calibration set of this INT8 export (%s) is not available; pass frames like its "
                    "calibration footage (--frames)", record.get("path") or "not recorded")
        return None
    if file_sha256(path) != record.get("sha256"):
        log.warning("%s changed since this INT8 export was calibrated with it; its held-out frames are not used", path)
        return None
    return path


def holdout_frames(meta: EngineMeta, limit: int) -> list[U8]:
    """The held-out frames (uint8 [H, W, 3] each, at most `limit`) of the calibration set an INT8
    export was made with, as recorded in its export.json; [] when that set is gone or changed.

    INT8 ranges hold for frames like the calibration frames, so an INT8 export is judged on these
    (`omc verify`): frames unlike the footage (e.g. synthetic noise) drive activations past the
    calibrated ranges and measure something else.
    """
    path = recorded_calibration_set(meta)
    if path is None:
        return []
    images = CalibrationSet.load(path).holdout_images
    if len(images) == 0 or tuple(images.shape[1:3]) != tuple(meta.input_hw):
        log.warning("%s has no held-out frames of this export's input size", path)
        return []
    log.info("judging on %d held-out frame(s) of the calibration set %s", min(limit, len(images)), path)
    return [images[i] for i in range(min(limit, len(images)))]


# --- building ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SourceInfo:
    path: str
    name: str
    kind: str
    frames: int


class _Recorder:
    """An engine wrapper that keeps the last feeds and outputs it saw (for the tracker's calls)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.last_feeds: Mapping[str, Any] | None = None
        self.last_outputs: Mapping[str, Any] | None = None

    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        outputs: Mapping[str, Any] = self.backend.infer(feeds)
        self.last_feeds, self.last_outputs = feeds, outputs
        return outputs

    def clear(self) -> None:
        self.last_feeds = self.last_outputs = None


def _count_frames(source: FrameSource) -> int:
    if source.frame_count is not None:
        return int(source.frame_count)
    log.info("%s does not state its frame count; counting its frames", source.path)
    return sum(1 for _ in source)


def _describe_sources(paths: Sequence[Path]) -> list[_SourceInfo]:
    infos = []
    for path in paths:
        with open_source(path) as source:
            infos.append(_SourceInfo(str(path), source.name, type(source).__name__, _count_frames(source)))
    return infos


def top_candidate_tracklets(detector_outputs: Mapping[str, Any], count: int) -> F32:
    """Unit embeddings [n, E] float32 of the top `count` real candidates (score > 0) of batch item 0.

    The detector's rows come sorted by score; padding rows (score 0) are skipped. With no real
    candidate, the first row stands in (n is never 0: the re-check needs at least one tracklet).
    """
    scores = np.asarray(detector_outputs[contract.DET_SCORES])[0]
    embeddings = np.asarray(detector_outputs[contract.DET_EMBEDDINGS])[0].astype(np.float32)
    rows = np.flatnonzero(scores > 0)[:count]
    chosen = embeddings[rows] if len(rows) else embeddings[:1]
    norms = np.linalg.norm(chosen, axis=1, keepdims=True)
    return np.divide(chosen, norms, out=np.zeros_like(chosen), where=norms > 0)


class _TrackletSampler:
    """Runs the float tracker over short windows and records the tracklets sent to the re-check."""

    def __init__(self, engines_dir: Path, meta: EngineMeta, config: CalibConfig) -> None:
        from omc.runtime.backends import open_engines
        from omc.runtime.tracker import Tracker

        detector, recheck, _ = open_engines(engines_dir, backend="ort", device="cpu")
        self._backends = [b for b in (detector, recheck) if b is not None]
        self.detector = _Recorder(detector)
        self.recheck = _Recorder(recheck)
        self.tracker = Tracker(self.detector, self.recheck, meta, TrackerConfig())
        self.config = config
        self.fallbacks = 0

    def sample(self, window: Iterable[tuple[U8, LetterboxTransform]], images: U8, transform: LetterboxTransform) -> tuple[F32, bool]:
        """Tracklets [n, E] the tracker sends on `images` after running over `window`; (matrix, fallback?)."""
        self.tracker.reset()
        for previous, previous_transform in window:
            self.tracker.update_letterboxed(previous, previous_transform)
        self.recheck.clear()
        self.tracker.update_letterboxed(images, transform)
        feeds = self.recheck.last_feeds
        if feeds is not None and self.tracker.last_tracklet_count > 0:
            return np.array(feeds[contract.TRACKLETS], np.float32), False
        assert self.detector.last_outputs is not None  # update_letterboxed ran the detector just now
        self.fallbacks += 1
        return top_candidate_tracklets(self.detector.last_outputs, self.config.fallback_tracklets), True

    def close(self) -> None:
        for backend in self._backends:
            backend.deactivate()


def _float_meta(engines_dir: Path) -> tuple[EngineMeta, str]:
    if not engines_dir.is_dir():
        raise BadInput(
            f"engines folder {engines_dir} not found; export the float engines first "
            f"(omc export --out {engines_dir}) or pass --engines"
        )
    meta = EngineMeta.load(engines_dir)
    if meta.precision == "int8":
        raise BadInput(f"{engines_dir} holds INT8 engines; calibrate with the float export they were made from")
    if not (engines_dir / contract.DETECTOR_ONNX).is_file():
        raise BadInput(f"{engines_dir / contract.DETECTOR_ONNX} not found; export the engines first (omc export)")
    return meta, file_sha256(engines_dir / contract.EXPORT_JSON)


def build_calibration_set(
    sources: Sequence[str | Path] | str | Path,
    frames: int,
    engines_dir: str | Path,
    out: str | Path,
    config: CalibConfig = CalibConfig(),
) -> Path:
    """Sample, letterbox and store a calibration set (see the module docstring); returns `out`.

    sources: videos, image folders or MOTChallenge sequence folders (one or several).
    frames: calibration frames wanted (overrides config.frames). engines_dir: the float export
    (export.json + detector.onnx [+ recheck.onnx]) whose input size the frames are letterboxed
    to and whose tracker provides the re-check samples. BadInput when a source or the engines
    cannot be used; fewer frames than asked is a warning with the counts.
    """
    start = time.perf_counter()
    paths = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    if not paths:
        raise BadInput("give at least one source: a video, an image folder or a MOTChallenge sequence")
    config = replace(config, frames=frames)  # InvalidConfig when not at least 1
    engines_dir = Path(engines_dir)
    meta, export_sha = _float_meta(engines_dir)
    infos = _describe_sources(paths)
    total = sum(info.frames for info in infos)
    if total == 0:
        raise BadInput(f"the sources {', '.join(map(str, paths))} hold no frames (empty videos or folders?)")
    wanted = frames + config.holdout_frames
    calib_positions, holdout_positions = split_positions(total, frames, config.holdout_frames)
    if total < wanted:
        log.warning(
            "the sources hold %d frames, fewer than the %d calibration + %d held-out frames asked for; "
            "using %d + %d", total, frames, config.holdout_frames, len(calib_positions), len(holdout_positions),
        )  # fmt: skip
    recheck_rows = even_positions(len(calib_positions), min(config.recheck_frames, len(calib_positions)))
    if not meta.has_recheck:
        recheck_rows = recheck_rows[:0]
    log.info(
        "calibration set: %d frames (%d held out) of %d in %d source(s), letterboxed to %dx%d; "
        "%d + %d re-check samples from the float tracker (%d warm-up frames each)",
        len(calib_positions), len(holdout_positions), total, len(infos), meta.input_hw[1], meta.input_hw[0],
        len(recheck_rows), len(holdout_positions) if meta.has_recheck else 0, config.tracker_warmup_frames,
    )  # fmt: skip

    sampler = _TrackletSampler(engines_dir, meta, config) if meta.has_recheck else None
    try:
        collected = _walk_sources(paths, infos, calib_positions, holdout_positions, recheck_rows, meta, config, sampler)
    finally:
        if sampler is not None:
            sampler.close()
    images, holdout_images, calib_origin, holdout_origin, recheck, holdout_recheck = collected
    if len(images) < len(calib_positions):
        log.warning("only %d of the %d calibration frames could be read (a source ended early)", len(images), len(calib_positions))
    if len(images) == 0:
        raise BadInput("no frame could be read from the sources; check that the videos decode and the folders hold images")
    fallbacks = int(recheck.fallback.sum() + holdout_recheck.fallback.sum())
    if fallbacks:
        log.warning(
            "the float tracker had no live tracklet on %d of %d re-check sample frames (untrained or random "
            "weights detect nothing, or the scene was empty): the embeddings of the top %d detector candidates "
            "stand in there (recorded per sample in the set)",
            fallbacks, len(recheck) + len(holdout_recheck), config.fallback_tracklets,
        )  # fmt: skip
    provenance = {
        "omc_version": __version__,
        "sources": [asdict(info) for info in infos],
        "input_hw": list(meta.input_hw),
        "engines_dir": str(engines_dir),
        "export_json_sha256": export_sha,
        "checkpoint_sha256": meta.checkpoint_sha256,
        "variant": meta.variant,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "frames_requested": frames,
        "tracker": TrackerConfig().to_dict(),
    }
    calibration = CalibrationSet(images, holdout_images, calib_origin, holdout_origin, recheck, holdout_recheck, provenance)
    path = calibration.save(out)
    log.info(
        "wrote %s: %d frames, %d held out, %d re-check samples (%.1f MB) in %.1f s",
        path, len(images), len(holdout_images), len(recheck) + len(holdout_recheck),
        path.stat().st_size / 1e6, time.perf_counter() - start,
    )  # fmt: skip
    return path


def _walk_sources(
    paths: Sequence[Path],
    infos: Sequence[_SourceInfo],
    calib_positions: I64,
    holdout_positions: I64,
    recheck_rows: I64,
    meta: EngineMeta,
    config: CalibConfig,
    sampler: _TrackletSampler | None,
) -> tuple[U8, U8, I64, I64, TrackletSamples, TrackletSamples]:
    """Read every source once, keep the frames at the wanted global positions, sample tracklets."""
    calib_set = {int(p): row for row, p in enumerate(calib_positions)}
    holdout_set = {int(p): row for row, p in enumerate(holdout_positions)}
    recheck_set = {int(calib_positions[row]) for row in recheck_rows}
    if sampler is not None:
        recheck_set |= set(holdout_set)
    warmup = config.tracker_warmup_frames
    warm = {p - k for p in recheck_set for k in range(1, warmup + 1)}
    height, width = meta.input_hw
    images: list[U8] = []
    holdout_images: list[U8] = []
    calib_origin: list[tuple[int, int]] = []
    holdout_origin: list[tuple[int, int]] = []
    samples: dict[str, tuple[list[int], list[F32], list[bool]]] = {"calib": ([], [], []), "holdout": ([], [], [])}

    offset = 0
    for source_index, (path, info) in enumerate(zip(paths, infos)):
        window: deque[tuple[int, U8, LetterboxTransform]] = deque(maxlen=max(warmup, 1))
        with open_source(path) as source:
            for local, (frame_index, frame) in enumerate(source):
                position = offset + local
                if local >= info.frames:
                    break  # a container that under-counted: keep to the count the positions used
                needed = position in calib_set or position in holdout_set or position in warm
                if not needed:
                    continue
                batch, transform = letterbox(frame, (height, width))
                if position in recheck_set and sampler is not None:
                    previous = [(img, tf) for pos, img, tf in window if position - warmup <= pos < position]
                    tracklets, fallback = sampler.sample(previous, batch, transform)
                    group = "holdout" if position in holdout_set else "calib"
                    row = len(holdout_images) if group == "holdout" else len(images)
                    samples[group][0].append(row)
                    samples[group][1].append(tracklets)
                    samples[group][2].append(fallback)
                if position in calib_set:
                    images.append(batch[0])
                    calib_origin.append((source_index, frame_index))
                elif position in holdout_set:
                    holdout_images.append(batch[0])
                    holdout_origin.append((source_index, frame_index))
                if warmup:
                    window.append((position, batch, transform))
        offset += info.frames

    dim = meta.embedding_dim

    def stack(rows: list[U8]) -> U8:
        return np.stack(rows) if rows else np.zeros((0, height, width, 3), np.uint8)

    def origin(pairs: list[tuple[int, int]]) -> I64:
        return np.asarray(pairs, np.int64).reshape(-1, 2)

    return (
        stack(images),
        stack(holdout_images),
        origin(calib_origin),
        origin(holdout_origin),
        TrackletSamples.from_lists(*samples["calib"], dim=dim),
        TrackletSamples.from_lists(*samples["holdout"], dim=dim),
    )
