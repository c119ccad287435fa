"""The OMC tracker: detector, re-check, detections, association and track life cycle per frame.

`Tracker.update(frame)` runs the steps of omc-reference.md sections 1 and 4 and reproduces the
reference tracker's every decision (`JDETracker.update` of JudasDie/SOTS, OMC), including the
quirks listed in 4.8, with the defect fixes of section 5:

1. Tracklet pool: tracked, confirmed tracks with a stored feature; their smoothed embeddings go
   to the re-check engine (skipped when there are none).
2. Detections: basic ones (threshold, cluster-DIoU NMS), then re-check boxes fused by IoU.
3. First association: embedding cost gated and blended with Kalman motion, for tracked and lost
   tracks (predicted first).
4. Second association: IoU, for the tracked tracks left over; those still unmatched are lost.
5. Third association: IoU, for unconfirmed tracks (started last frame); unmatched ones are removed.
6. New tracks from the remaining detections scoring at least conf_thres (never a re-check box
   below it).
7. Lost tracks beyond the buffer are removed (one frame late, as in the reference).
8. Embedding smoothing walk, list bookkeeping, duplicate removal; output the confirmed tracks.

All state lives on the instance (track lists, frame counter, id counter), so many trackers can
run in one process; `reset()` starts a new stream with ids from 1. Memory is bounded: a track
leaves the tracker once the reference could no longer match it.

Host cost: NMS, fusion and association take about 1.8 ms per frame at 50 tracks and 100
candidates on one core of the 2-core CI machine (`omc bench`, host post-processing table). NumPy's
OpenBLAS may split the [tracks, 512] x [512, detections] product over threads; on a CPU busy
with inference that cost 10x in a measurement here. Embedding apps that run the detector on the
same CPU should set OPENBLAS_NUM_THREADS=1 (or limit BLAS threads with threadpoolctl).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Protocol

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.errors import OmcError
from omc.runtime.assign import cosine_distance, gate_and_fuse_motion, iou_distance, linear_assignment
from omc.runtime.boxes import tlwh_to_xyxy, xyah_to_tlwh, xyah_to_xyxy
from omc.runtime.detections import FrameDetections, frame_detections, unit_rows
from omc.runtime.kalman import KalmanFilter
from omc.runtime.letterbox import LetterboxTransform, letterbox
from omc.runtime.tracks import EventKind, IdCounter, Track, TrackEvent, Tracklet, TrackState

logger = logging.getLogger(__name__)

STAGES = ("letterbox", "detector", "recheck", "nms_fusion", "association")


class InferenceBackend(Protocol):
    """What the tracker needs of an engine runner: contract name -> array in and out."""

    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]: ...


class Tracker:
    """Multi-object tracker over the detector and (optionally) re-check engines.

    detector / recheck: objects with `infer(feeds) -> dict` keyed by engine-contract names
    (a `Backend`, a remote client, a test double). recheck=None, or config.recheck False, runs
    the CSTrack baseline. detector=None makes a tracker that is fed detections
    (`update_from_detections`) instead of frames. A `Backend` that is not active yet is activated here and deactivated
    by `close()`. meta: the engines' export.json. frame_rate: frames per second of the stream
    (the lost-track buffer is config.track_buffer at 30 fps, scaled).

    Per-frame diagnostics (replaced every frame): last_timings_ms (ms per stage of STAGES),
    last_events (TrackEvent list), last_tracklet_count (tracklets sent to the re-check),
    last_detections (FrameDetections). Since construction: frames, total_timings_ms.
    """

    def __init__(
        self,
        detector: InferenceBackend | None,
        recheck: InferenceBackend | None,
        meta: EngineMeta,
        config: TrackerConfig = TrackerConfig(),
        frame_rate: float = 30.0,
    ) -> None:
        self.detector = detector
        self.recheck = recheck if config.recheck else None
        self.meta = meta
        self.config = config
        self.frame_rate = float(frame_rate)
        self.max_time_lost = config.max_time_lost(self.frame_rate)
        self.kalman = KalmanFilter()
        self._owned: list[Any] = []
        for backend in (detector, self.recheck):
            if backend is not None and getattr(backend, "is_active", True) is False:
                backend.activate()  # type: ignore[attr-defined]
                self._owned.append(backend)
        self._ids = IdCounter()
        self._tracked: list[Tracklet] = []
        self._lost: list[Tracklet] = []
        self._frame_id = 0
        self.last_timings_ms: dict[str, float] = {}
        self.total_timings_ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self.last_events: list[TrackEvent] = []
        self.last_tracklet_count = 0
        self.last_detections: FrameDetections | None = None

    @classmethod
    def from_engines(
        cls,
        engine_dir: str | Path,
        backend: str = "ort",
        device: str = "cpu",
        config: TrackerConfig = TrackerConfig(),
        frame_rate: float = 30.0,
        **options: Any,
    ) -> "Tracker":
        """Open the engines in `engine_dir` (export.json + ONNX files or TensorRT plans) and track with them.

        backend: "ort" (ONNX Runtime) or "trt" (TensorRT). device: "cpu", "cuda" or "tensorrt"
        for ONNX Runtime's execution providers. options: passed to the backend (e.g.
        intra_op_threads). `close()` releases the engines.
        """
        from omc.runtime.backends import open_engines

        detector, recheck, meta = open_engines(engine_dir, backend=backend, device=device, **options)
        tracker = cls(detector, recheck, meta, config, frame_rate)
        tracker._owned = [b for b in (detector, recheck) if b is not None]
        return tracker

    # --- life cycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every track and start a new stream: frame 1, ids from 1."""
        self._ids.reset()
        self._tracked = []
        self._lost = []
        self._frame_id = 0
        self.last_events = []
        self.last_tracklet_count = 0
        self.last_detections = None

    def close(self) -> None:
        """Deactivate the backends this tracker opened or activated."""
        for backend in self._owned:
            backend.deactivate()
        self._owned = []

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def frame_id(self) -> int:
        """Frames processed since the last reset (the reference's 1-based frame counter)."""
        return self._frame_id

    # --- per frame -------------------------------------------------------------------------------

    def update(self, frame_bgr: npt.NDArray[np.uint8]) -> list[Track]:
        """Track one frame: uint8 [H, W, 3] BGR of any size. Returns the frame's confirmed tracks."""
        start = time.perf_counter()
        images, transform = letterbox(frame_bgr, self.meta.input_hw)
        letterbox_ms = (time.perf_counter() - start) * 1e3
        tracks = self.update_letterboxed(images, transform)
        self._record("letterbox", letterbox_ms)
        return tracks

    def update_letterboxed(self, images: npt.NDArray[np.uint8], transform: LetterboxTransform) -> list[Track]:
        """Track one already letterboxed frame: images uint8 [1, H, W, 3]; transform maps boxes back."""
        if self.detector is None:
            raise OmcError("this tracker has no detector engine; feed it detections (update_from_detections)")
        start = time.perf_counter()
        detector_outputs = self.detector.infer({contract.IMAGES: images})
        detector_ms = (time.perf_counter() - start) * 1e3
        tracks = self.update_from_outputs(detector_outputs, transform)
        self._record("detector", detector_ms)
        return tracks

    def update_from_outputs(self, detector_outputs: Mapping[str, Any], transform: LetterboxTransform) -> list[Track]:
        """The post-network half of a frame: re-check (when there are tracklets), detections, association.

        detector_outputs: the detector's outputs for this frame (batch of 1), arrays or device
        handles. transform: maps network pixels to frame pixels.
        """
        self.last_timings_ms = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        recheck_outputs = self._recheck_step(detector_outputs)
        self._record("recheck", (time.perf_counter() - start) * 1e3)

        start = time.perf_counter()
        detections = frame_detections(detector_outputs, recheck_outputs, transform, self.config)
        self._record("nms_fusion", (time.perf_counter() - start) * 1e3)
        return self.update_from_detections(detections)

    def update_from_detections(self, detections: FrameDetections) -> list[Track]:
        """Steps 3-8 on one frame's ready detections (frame pixels; basic by score, then fused
        re-check boxes): association, new tracks, life cycle. Returns the frame's confirmed tracks.

        For apps and benchmarks that run the engines and NMS elsewhere; `update` ends here too.
        """
        self._frame_id += 1
        self.frames += 1
        self.last_events = []
        self.last_detections = detections
        start = time.perf_counter()
        outputs = self._associate(detections)
        self._record("association", (time.perf_counter() - start) * 1e3)
        return outputs

    def _record(self, stage: str, ms: float) -> None:
        self.last_timings_ms[stage] = ms
        self.total_timings_ms[stage] += ms

    # --- step 1: tracklet pool and re-check ----------------------------------------------------

    def _tracklet_pool(self) -> list[Tracklet]:
        """Tracked, confirmed tracks with a stored feature, in list order, at most the export's max.

        Beyond `meta.max_tracklets` the first ones in the tracked list are kept: the list holds
        tracks in the order they (re)joined it, so the longest continuously tracked stay in.
        """
        pool = [t for t in self._tracked if t.activated and t.has_stored_feature]
        if len(pool) > self.meta.max_tracklets:
            logger.warning(
                "%d tracklets exceed the re-check engine's maximum of %d; the %d longest tracked are checked",
                len(pool), self.meta.max_tracklets, self.meta.max_tracklets,
            )  # fmt: skip
            pool = pool[: self.meta.max_tracklets]
        return pool

    def _recheck_step(self, detector_outputs: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Run the re-check on this frame's tracklets; None when it is off or there are none."""
        if self.recheck is None:
            self.last_tracklet_count = 0
            return None
        pool = self._tracklet_pool()
        self.last_tracklet_count = len(pool)
        if not pool:
            return None
        tracklets = _rows([t.smooth_feature for t in pool], np.float32)
        feeds: dict[str, Any] = {
            name: detector_outputs[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR if name in detector_outputs
        }
        feeds[contract.TRACKLETS] = tracklets
        return self.recheck.infer(feeds)

    # --- steps 3-8: association and life cycle ---------------------------------------------------

    def _associate(self, detections: FrameDetections) -> list[Track]:
        """Steps 3 to 8 (see the module docstring) on this frame's detections; returns the output tracks."""
        start_tracked = list(self._tracked)
        start_lost = list(self._lost)
        unconfirmed = [t for t in start_tracked if not t.activated]
        pool = _StateBatch([t for t in start_tracked if t.activated] + start_lost)
        self._predict(pool)
        activated: list[Tracklet] = []
        refound: list[Tracklet] = []

        remaining, leftover = self._match_by_embedding(pool, detections, activated, refound)
        still_tracked = leftover[np.array([pool.tracks[r].state is TrackState.TRACKED for r in leftover], bool)]
        remaining, lost_now = self._match_by_iou(
            pool, still_tracked, detections, remaining, activated, self.config.match_thres_iou, smooth=False
        )
        self._mark(lost_now, TrackState.LOST, EventKind.LOST)
        # Unconfirmed tracks started last frame; the reference does not predict them.
        fresh = _StateBatch(unconfirmed)
        remaining, removed = self._match_by_iou(
            fresh, np.arange(len(unconfirmed)), detections, remaining, activated,
            self.config.match_thres_unconfirmed, smooth=True,
        )  # fmt: skip
        self._mark(removed, TrackState.REMOVED, EventKind.REMOVED)
        activated += self._start_tracks(detections, remaining)
        removed += self._expire_lost(start_lost)
        self._smooth_walk(start_tracked)
        self._update_lists(start_tracked, start_lost, activated, refound, lost_now, removed)
        return self._outputs()

    def _predict(self, pool: _StateBatch) -> None:
        """Kalman predict for tracked and lost tracks; non-tracked ones first lose their height velocity."""
        if not pool.tracks:
            return
        not_tracked = np.array([t.state is not TrackState.TRACKED for t in pool.tracks])
        mean = pool.mean.copy()
        mean[not_tracked, 7] = 0.0
        pool.mean, pool.covariance = self.kalman.predict(mean, pool.covariance)
        pool.hand_back(np.arange(len(pool.tracks)))

    def _kalman_update(
        self, states: _StateBatch, rows: npt.NDArray[np.int64], measurements: npt.NDArray[np.float64]
    ) -> None:
        """Correct the states at `rows` with [len(rows), 4] xyah measurements, in one batch."""
        if len(rows) == 0:
            return
        mean, covariance = self.kalman.update(states.mean[rows], states.covariance[rows], measurements)
        states.mean[rows], states.covariance[rows] = mean, covariance
        states.hand_back(rows)

    def _apply_match(self, track: Tracklet, detections: FrameDetections, index: int, *, smooth: bool) -> None:
        """Life-cycle bookkeeping of one matched track (the Kalman update is batched by the caller).

        A tracked or unconfirmed track takes the detection's score; a re-found one keeps its own.
        `smooth`: the unconfirmed-track rule (smooth toward the new feature now); otherwise the
        feature is only stored.
        """
        feature = detections.embeddings[index].copy()  # a row, not a view that keeps the frame's array alive
        if smooth:
            track.smooth_feature = _smoothed(track.smooth_feature[None], feature[None], self.config.embedding_alpha)[0]
        was_tracked = track.state is TrackState.TRACKED
        if was_tracked:
            track.score = float(detections.scores[index])
        track.current_feature = feature
        track.has_stored_feature = True
        track.restored = bool(detections.restored[index])
        track.frame_id = self._frame_id
        track.state = TrackState.TRACKED
        track.activated = True
        kind = EventKind.UPDATED if was_tracked else EventKind.REFOUND
        self.last_events.append(TrackEvent(kind, track.track_id, int(index)))

    def _mark(self, tracks: list[Tracklet], state: TrackState, kind: EventKind) -> None:
        """Set the state of a few tracks and record the event."""
        for track in tracks:
            track.state = state
            self.last_events.append(TrackEvent(kind, track.track_id, -1))

    def _match_by_embedding(
        self, pool: _StateBatch, detections: FrameDetections, activated: list[Tracklet], refound: list[Tracklet]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Step 3: appearance + motion. Returns (unmatched detection indices, unmatched pool rows)."""
        tracks = pool.tracks
        if tracks and len(detections):
            appearance = cosine_distance(_rows([t.smooth_feature for t in tracks], np.float32), detections.embeddings)
            maha = self.kalman.gating_distance(pool.mean, pool.covariance, detections.xyah)
            cost = gate_and_fuse_motion(
                appearance, maha, gate=self.config.gating_threshold, appearance_weight=self.config.motion_lambda
            )
        else:
            cost = np.zeros((len(tracks), len(detections)))
        result = linear_assignment(cost, self.config.match_thres_embedding)
        rows, det_index = result.matches[:, 0], result.matches[:, 1]
        self._kalman_update(pool, rows, detections.xyah[det_index])
        for row, index in zip(rows, det_index):
            track = tracks[row]
            (activated if track.state is TrackState.TRACKED else refound).append(track)
            self._apply_match(track, detections, int(index), smooth=False)
        return result.unmatched_cols, result.unmatched_rows

    def _match_by_iou(
        self,
        states: _StateBatch,
        rows: npt.NDArray[np.int64],
        detections: FrameDetections,
        remaining: npt.NDArray[np.int64],
        activated: list[Tracklet],
        cost_limit: float,
        *,
        smooth: bool,
    ) -> tuple[npt.NDArray[np.int64], list[Tracklet]]:
        """Steps 4 and 5: IoU between the tracks at `rows` and the detections left.

        Returns (detections still left, tracks left unmatched).
        """
        rows = np.asarray(rows, np.int64)
        cost = iou_distance(states.boxes(rows), detections.xyxy[remaining])
        result = linear_assignment(cost, cost_limit)
        matched_rows = rows[result.matches[:, 0]]
        det_index = remaining[result.matches[:, 1]]
        self._kalman_update(states, matched_rows, detections.xyah[det_index])
        for row, index in zip(matched_rows, det_index):
            activated.append(states.tracks[row])
            self._apply_match(states.tracks[row], detections, int(index), smooth=smooth)
        return remaining[result.unmatched_cols], [states.tracks[r] for r in rows[result.unmatched_rows]]

    def _start_tracks(self, detections: FrameDetections, remaining: npt.NDArray[np.int64]) -> list[Tracklet]:
        """Step 6: unconfirmed tracks from the detections left whose score reaches conf_thres."""
        # `score < conf_thres` is skipped in the reference: re-check boxes below it never start tracks.
        starters = remaining[detections.scores[remaining] >= np.float32(self.config.conf_thres)]
        if len(starters) == 0:
            return []
        mean, covariance = self.kalman.initiate(detections.xyah[starters])
        new = []
        for i, index in enumerate(starters):
            feature = detections.embeddings[index].copy()
            track = Tracklet(
                track_id=self._ids.next(),
                mean=mean[i],
                covariance=covariance[i],
                score=float(detections.scores[index]),
                smooth_feature=feature,
                current_feature=feature,
                frame_id=self._frame_id,
                start_frame=self._frame_id,
                restored=bool(detections.restored[index]),
            )
            new.append(track)
            self.last_events.append(TrackEvent(EventKind.NEW, track.track_id, int(index)))
        return new

    def _expire_lost(self, start_lost: list[Tracklet]) -> list[Tracklet]:
        """Step 7: tracks of the frame's starting lost list unmatched for longer than the buffer.

        They stay in the lost list for one more frame (the reference's lag) and are marked again then.
        """
        expired = [t for t in start_lost if self._frame_id - t.frame_id > self.max_time_lost]
        for track in expired:
            track.state = TrackState.REMOVED
            self.last_events.append(TrackEvent(EventKind.REMOVED, track.track_id, -1))
        return expired

    def _smooth_walk(self, start_tracked: list[Tracklet]) -> None:
        """Step 8a: every track of the starting tracked list that is confirmed now smooths toward its
        latest feature once more (even if unmatched this frame), as the reference's end-of-frame walk."""
        walked = [t for t in start_tracked if t.activated]
        if not walked:
            return
        smooth = _smoothed(
            _rows([t.smooth_feature for t in walked], np.float32),
            _rows([t.current_feature for t in walked], np.float32),
            self.config.embedding_alpha,
        )
        for track, feature in zip(walked, smooth):
            track.smooth_feature = feature

    def _update_lists(
        self,
        start_tracked: list[Tracklet],
        start_lost: list[Tracklet],
        activated: list[Tracklet],
        refound: list[Tracklet],
        lost_now: list[Tracklet],
        removed: list[Tracklet],
    ) -> None:
        """Step 8b: the reference's list bookkeeping, then duplicate removal.

        Tracks put on the reference's removed list leave the lost list one frame later; one that
        was re-found meanwhile carries the mark and leaves as soon as it is lost again.
        """
        tracked = [t for t in start_tracked if t.state is TrackState.TRACKED]
        present = {id(t) for t in tracked}
        for track in activated + refound:
            if id(track) not in present:
                present.add(id(track))
                tracked.append(track)
        lost = [t for t in start_lost if id(t) not in present] + lost_now
        lost = [t for t in lost if not t.on_removed_list]
        for track in removed:
            track.on_removed_list = True
        self._tracked, self._lost = _remove_duplicates(tracked, lost, self.config.duplicate_iou_distance)

    def _outputs(self) -> list[Track]:
        """Confirmed tracked tracks whose box passes the area and aspect filters."""
        confirmed = [t for t in self._tracked if t.activated]
        if not confirmed:
            return []
        tlwh = xyah_to_tlwh(_rows([t.mean[:4] for t in confirmed], np.float64))
        area = tlwh[:, 2] * tlwh[:, 3]
        aspect = np.divide(tlwh[:, 2], tlwh[:, 3], out=np.full(len(tlwh), np.inf), where=tlwh[:, 3] != 0)
        keep = (area > self.config.min_box_area) & (aspect <= self.config.max_aspect_ratio)
        boxes = tlwh_to_xyxy(tlwh).astype(np.float32)
        boxes.setflags(write=False)
        return [
            Track(t.track_id, box, float(t.score), t.restored) for t, box, k in zip(confirmed, boxes, keep) if k
        ]


class _StateBatch:
    """Kalman states of a list of tracks, stacked ([T, 8], [T, 8, 8]) so each filter step is one call.

    `hand_back(rows)` gives the tracks at `rows` their (new) state rows as views: safe because a batch
    is made (copied) fresh every step and its rows are only ever replaced, never edited in place
    after a later batch was stacked from them.
    """

    def __init__(self, tracks: list[Tracklet]) -> None:
        self.tracks = tracks
        if tracks:
            self.mean = _rows([t.mean for t in tracks], np.float64)
            self.covariance = _rows([t.covariance for t in tracks], np.float64)
        else:
            self.mean, self.covariance = np.zeros((0, 8)), np.zeros((0, 8, 8))

    def boxes(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """[len(rows), 4] float64 corners of the states at `rows`, frame pixels."""
        return xyah_to_xyxy(self.mean[rows, :4])

    def hand_back(self, rows: npt.NDArray[np.int64]) -> None:
        for row in rows:  # assignments only; the arithmetic ran batched
            self.tracks[row].mean = self.mean[row]
            self.tracks[row].covariance = self.covariance[row]


def _rows(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    """Stack equally shaped per-track arrays (non-empty list) into one new array of `dtype`.

    np.array on a list is 2-3 times faster than np.stack for the few dozen small arrays per call.
    """
    return np.array(arrays, dtype=dtype)


def _smoothed(smooth: npt.NDArray[np.float32], new: npt.NDArray[np.float32], alpha: float) -> npt.NDArray[np.float32]:
    """[N, E] rows of smooth + alpha (new - smooth), renormalised (float32, new arrays)."""
    return unit_rows(smooth + np.float32(alpha) * (new - smooth))


def _boxes(tracks: list[Tracklet]) -> npt.NDArray[np.float64]:
    """[T, 4] float64 corners of the tracks' Kalman means ([0, 4] for none)."""
    if not tracks:
        return np.zeros((0, 4))
    return xyah_to_xyxy(_rows([t.mean[:4] for t in tracks], np.float64))


def _remove_duplicates(
    tracked: list[Tracklet], lost: list[Tracklet], max_distance: float
) -> tuple[list[Tracklet], list[Tracklet]]:
    """Drop one of each tracked/lost pair whose Kalman boxes are closer than `max_distance` (1 - IoU).

    The lost one goes only when the tracked one is strictly older (last matched frame minus start
    frame); otherwise, ties included, the tracked one goes.
    """
    if not tracked or not lost:
        return tracked, lost
    distance = iou_distance(_boxes(tracked), _boxes(lost))
    rows, cols = np.nonzero(distance < max_distance)
    if len(rows) == 0:
        return tracked, lost
    age_tracked = np.array([t.frame_id - t.start_frame for t in tracked])[rows]
    age_lost = np.array([t.frame_id - t.start_frame for t in lost])[cols]
    drop_tracked = np.zeros(len(tracked), bool)
    drop_lost = np.zeros(len(lost), bool)
    drop_lost[cols[age_tracked > age_lost]] = True
    drop_tracked[rows[age_tracked <= age_lost]] = True
    return (
        [t for t, d in zip(tracked, drop_tracked) if not d],
        [t for t, d in zip(lost, drop_lost) if not d],
    )
