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

from omc.config import SERVED_BACKENDS, TrackerConfig
from omc import contract
from omc.contract import EngineMeta
from omc.errors import BadInput, OmcError
from omc.runtime.assign import cosine_distance, gate_and_fuse_motion, iou_distance, linear_assignment
from omc.runtime.boxes import tlwh_to_xyxy, xyah_to_tlwh, xyah_to_xyxy
from omc.runtime.detections import FrameDetections, frame_detections, unit_rows
from omc.runtime.engines import BackendPair, EnginePair, NetworkOutputs
from omc.runtime.kalman import KalmanFilter, MeasurementSpace
from omc.runtime.letterbox import LetterboxTransform, letterbox
from omc.runtime.tracks import EventKind, IdCounter, Track, TrackEvent, Tracklet, TrackState, TrackTable

IndexArray = npt.NDArray[np.int64]

logger = logging.getLogger(__name__)

STAGES = ("letterbox", contract.DETECTOR, contract.RECHECK, "nms_fusion", "association")
TRACKED = TrackState.TRACKED.value


class InferenceBackend(Protocol):
    """What the tracker needs of an engine runner: contract name -> array in and out."""

    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]: ...


F32 = npt.NDArray[np.float32]


class Tracker:
    """Multi-object tracker over the detector and (optionally) re-check engines.

    detector / recheck: objects with `infer(feeds) -> dict` keyed by engine-contract names
    (a `Backend`, a remote client, a test double). recheck=None, or config.recheck False, runs
    the CSTrack baseline. detector=None makes a tracker that is fed detections
    (`update_from_detections`) instead of frames. A `Backend` that is not active yet is activated here and deactivated
    by `close()`. meta: the engines' export.json. frame_rate: frames per second of the stream
    (the lost-track buffer is config.track_buffer at 30 fps, scaled).

    `Tracker.with_engines(pair, meta)` tracks over any `EnginePair` instead (a remote server's
    client that runs both engines in one request).

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
        # The engines as one step (None for a tracker fed detections); `with_engines` replaces it.
        self.engines: EnginePair | None = BackendPair(detector, self.recheck) if detector is not None else None
        self._rechecks = self.recheck is not None
        self.meta = meta
        self.config = config
        self.frame_rate = float(frame_rate)
        self.max_time_lost = config.max_time_lost(self.frame_rate)
        self.kalman = KalmanFilter()
        self._owned: list[Any] = []
        # An engine pair this tracker opened (from_engines with a pair backend such as "triton").
        self._owned_pair: EnginePair | None = None
        for backend in (detector, self.recheck):
            if backend is not None and getattr(backend, "is_active", True) is False:
                backend.activate()  # type: ignore[attr-defined]
                self._owned.append(backend)
        self._ids = IdCounter()
        self._table = TrackTable()
        self._tracked_slots = np.zeros(0, np.int64)
        self._lost_slots = np.zeros(0, np.int64)
        self._frame_id = 0
        self.last_timings_ms: dict[str, float] = {}
        self.total_timings_ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        # This frame's events as (kinds, track ids, detection indices) arrays, in order (see last_events).
        self._event_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.last_tracklet_count = 0
        self.last_detections: FrameDetections | None = None

    @classmethod
    def from_engines(
        cls,
        engine_dir: str | Path | None,
        backend: str = "ort",
        device: str = "auto",
        config: TrackerConfig = TrackerConfig(),
        frame_rate: float = 30.0,
        **options: Any,
    ) -> "Tracker":
        """Open the engines in `engine_dir` (export.json + ONNX files or TensorRT plans) and track with them.

        backend: "ort" (ONNX Runtime), "trt" (TensorRT) or "triton" (a Triton server: options
        url=..., see open_engine_pair; engine_dir may then be None, else the served export must
        match it; rows below this config's thresholds stay on the server). device: "auto" (the
        CPU for ONNX Runtime, the first CUDA GPU for TensorRT), "cpu", "cuda" or "tensorrt" (ONNX
        Runtime's execution providers), "cuda:N" (TensorRT's GPU). options: passed to the
        backend (e.g. intra_op_threads). `close()` releases the engines.
        """
        from omc.runtime.backends import open_engine_pair, open_engines

        if backend in SERVED_BACKENDS:
            options.setdefault("score_floors", (config.conf_thres, config.recheck_score_thres))
            pair, pair_meta = open_engine_pair(engine_dir, backend=backend, device=device, **options)
            tracker = cls.with_engines(pair, pair_meta, config, frame_rate)
            tracker._owned_pair = pair
            return tracker
        if engine_dir is None:
            raise BadInput(f"backend '{backend}' needs the engine folder (omc export or omc build output)")

        detector, recheck, meta = open_engines(engine_dir, backend=backend, device=device, **options)
        tracker = cls(detector, recheck, meta, config, frame_rate)
        tracker._owned = [b for b in (detector, recheck) if b is not None]
        return tracker

    @classmethod
    def with_engines(
        cls,
        engines: EnginePair,
        meta: EngineMeta,
        config: TrackerConfig = TrackerConfig(),
        frame_rate: float = 30.0,
    ) -> "Tracker":
        """A tracker whose frames go through `engines` (any EnginePair, e.g. a Triton client).

        The re-check runs when the export has it (meta.has_recheck) and config.recheck is on.
        Closing the tracker does not close `engines`: its owner does.
        """
        tracker = cls(None, None, meta, config, frame_rate)
        tracker.engines = engines
        tracker._rechecks = meta.has_recheck and config.recheck
        return tracker

    # --- life cycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every track and start a new stream: frame 1, ids from 1."""
        self._ids.reset()
        self._table.clear()
        self._tracked_slots = np.zeros(0, np.int64)
        self._lost_slots = np.zeros(0, np.int64)
        self._frame_id = 0
        self._event_parts = []
        self.last_tracklet_count = 0
        self.last_detections = None

    def close(self) -> None:
        """Deactivate the backends (or close the engine pair) this tracker opened or activated."""
        for backend in self._owned:
            backend.deactivate()
        self._owned = []
        if self._owned_pair is not None:
            self._owned_pair.close()
            self._owned_pair = None

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

    @property
    def last_events(self) -> list[TrackEvent]:
        """The last frame's life-cycle events, in the order they happened (built when read)."""
        if not self._event_parts:
            return []
        kinds, track_ids, detections = (np.concatenate(part).tolist() for part in zip(*self._event_parts))
        return [TrackEvent(EventKind(k), i, d) for k, i, d in zip(kinds, track_ids, detections)]

    @property
    def _tracked(self) -> list[Tracklet]:
        """Views of the tracked list (confirmed and unconfirmed), in order; for tests and debugging."""
        return [Tracklet(self._table, slot) for slot in self._tracked_slots.tolist()]

    @property
    def _lost(self) -> list[Tracklet]:
        """Views of the lost list, in order; for tests and debugging."""
        return [Tracklet(self._table, slot) for slot in self._lost_slots.tolist()]

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
        if self.engines is None:
            raise OmcError("this tracker has no detector engine; feed it detections (update_from_detections)")
        outputs = self.engines.run(images, [self.recheck_tracklets()])[0]
        timings = getattr(self.engines, "last_timings_ms", {})
        tracks = self.update_from_network(outputs, transform)
        for stage in contract.ENGINES:  # the engines' timings are two of the tracker's stages
            self._record(stage, timings.get(stage, 0.0))
        return tracks

    def recheck_tracklets(self) -> F32 | None:
        """The tracklets the re-check engine needs for the next frame, or None to skip it.

        Returns float32 [n, E] smoothed unit embeddings of the tracked, confirmed tracks with a
        stored feature (in list order, at most the export's max_tracklets; a new array), or None
        when the re-check is off or there are none. Sets `last_tracklet_count`. Callers that run
        the engines themselves (the multi-stream runtime) send these with the frame, then call
        `update_from_network`.
        """
        if not self._rechecks:
            self.last_tracklet_count = 0
            return None
        pool = self.tracklet_features()
        self.last_tracklet_count = len(pool)
        return pool if len(pool) else None

    def skip_frames(self, count: int) -> None:
        """Count `count` frames of the stream that were not tracked (dropped while the engines were
        busy, or missed while a live source reconnected): the frame counter moves on, so lost
        tracks age by them as they would have in those frames, and one lost longer than the
        buffer is removed at the next frame. Tracked tracks stay tracked: the next frame matches
        them as usual. Ids are never reused."""
        if count < 0:
            raise ValueError(f"cannot skip {count} frames")
        self._frame_id += count
        # Lost tracks the skipped frames would have removed (with the reference's one-frame lag)
        # leave now, before the next frame's association could re-find them.
        lost = self._lost_slots
        keep = (self._frame_id + 1) - self._table.frame_id[lost] <= self.max_time_lost + 1
        if not keep.all():
            self._lost_slots = lost[keep]
            self._table.retain(np.concatenate([self._tracked_slots, self._lost_slots]))

    def forget_tracks(self) -> None:
        """End every track (as if each had been lost longer than the buffer), keeping the frame and
        id counters, so new tracks get new ids. For a stream back after a gap longer than the
        lost-track buffer: the motion model predicts one frame ahead and cannot bridge it."""
        self._table.clear()
        self._tracked_slots = np.zeros(0, np.int64)
        self._lost_slots = np.zeros(0, np.int64)

    def update_from_network(self, outputs: NetworkOutputs, transform: LetterboxTransform) -> list[Track]:
        """The host half of a frame: detections (NMS, fusion of re-check boxes), association.

        outputs: this frame's engine outputs, the re-check's run on `recheck_tracklets()` taken
        just before. transform: maps network pixels to frame pixels. Returns the confirmed tracks.
        """
        self.last_timings_ms = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        detections = frame_detections(outputs.detector, outputs.recheck, transform, self.config)
        self._record("nms_fusion", (time.perf_counter() - start) * 1e3)
        return self.update_from_detections(detections)

    def update_from_outputs(self, detector_outputs: Mapping[str, Any], transform: LetterboxTransform) -> list[Track]:
        """The post-detector half of a frame: re-check (when there are tracklets), detections, association.

        detector_outputs: the detector's outputs for this frame (batch of 1), arrays or device
        handles. transform: maps network pixels to frame pixels.
        """
        tracklets = self.recheck_tracklets()
        start = time.perf_counter()
        recheck_outputs = None
        if isinstance(self.engines, BackendPair):
            recheck_outputs = self.engines.recheck_frame(detector_outputs, tracklets)
        recheck_ms = (time.perf_counter() - start) * 1e3
        tracks = self.update_from_network(NetworkOutputs(detector_outputs, recheck_outputs), transform)
        self._record(contract.RECHECK, recheck_ms)
        return tracks

    def update_from_detections(self, detections: FrameDetections) -> list[Track]:
        """Steps 3-8 on one frame's ready detections (frame pixels; basic by score, then fused
        re-check boxes): association, new tracks, life cycle. Returns the frame's confirmed tracks.

        For apps and benchmarks that run the engines and NMS elsewhere; `update` ends here too.
        """
        self._frame_id += 1
        self.frames += 1
        self._event_parts = []
        self.last_detections = detections
        start = time.perf_counter()
        outputs = self._associate(detections)
        self._record("association", (time.perf_counter() - start) * 1e3)
        return outputs

    def _record(self, stage: str, ms: float) -> None:
        self.last_timings_ms[stage] = ms
        self.total_timings_ms[stage] += ms

    # --- step 1: tracklet pool and re-check ----------------------------------------------------

    def _pool_slots(self) -> IndexArray:
        """Slots of the tracked, confirmed tracks with a stored feature, in list order, at most the export's max.

        Beyond `meta.max_tracklets` the first ones in the tracked list are kept: the list holds
        tracks in the order they (re)joined it, so the longest continuously tracked stay in.
        """
        table, tracked = self._table, self._tracked_slots
        pool = tracked[table.activated[tracked] & table.has_stored_feature[tracked]]
        if len(pool) > self.meta.max_tracklets:
            logger.warning(
                "%d tracklets exceed the re-check engine's maximum of %d; the %d longest tracked are checked",
                len(pool), self.meta.max_tracklets, self.meta.max_tracklets,
            )  # fmt: skip
            pool = pool[: self.meta.max_tracklets]
        return pool

    def tracklet_features(self) -> npt.NDArray[np.float32]:
        """The re-check's tracklets now: float32 [n, E] smoothed unit embeddings (a new array) of the
        tracked, confirmed tracks with a stored feature, in list order, at most meta.max_tracklets.

        What `update` sends to the re-check engine; for callers that run a re-check of their own
        (the benchmark's PyTorch path) and then call `update_from_detections`.
        """
        return self._table.smooth_feature[self._pool_slots()]

    # --- steps 3-8: association and life cycle ---------------------------------------------------
    # Track lists are int64 arrays of TrackTable slots, in the reference's list order; every step
    # works on all the tracks it concerns at once.

    def _associate(self, detections: FrameDetections) -> list[Track]:
        """Steps 3 to 8 (see the module docstring) on this frame's detections; returns the output tracks."""
        table = self._table
        start_tracked, start_lost = self._tracked_slots, self._lost_slots
        confirmed = table.activated[start_tracked]
        unconfirmed = start_tracked[~confirmed]
        pool = np.concatenate([start_tracked[confirmed], start_lost])
        space = self._predict(pool)

        matched, refound_mask, remaining, leftover = self._match_by_embedding(pool, space, detections)
        refound = matched[refound_mask]
        still_tracked = leftover[table.state[pool[leftover]] == TRACKED]
        rows, det_index, remaining, unmatched = self._match_by_iou(
            pool[still_tracked], detections, remaining, self.config.match_thres_iou
        )
        self._correct(pool[still_tracked[rows]], space.take(still_tracked[rows]), detections, det_index, smooth=False)
        lost_now = pool[still_tracked[unmatched]]
        self._mark(lost_now, TrackState.LOST, EventKind.LOST)
        # Unconfirmed tracks started last frame; the reference does not predict them.
        rows, det_index, remaining, unmatched = self._match_by_iou(
            unconfirmed, detections, remaining, self.config.match_thres_unconfirmed
        )
        fresh = unconfirmed[rows]
        if len(fresh):
            fresh_space = self.kalman.measurement_space(table.mean[fresh], table.covariance[fresh])
            self._correct(fresh, fresh_space, detections, det_index, smooth=True)
        removed = unconfirmed[unmatched]
        self._mark(removed, TrackState.REMOVED, EventKind.REMOVED)
        new = self._start_tracks(detections, remaining)
        expired = self._expire_lost(start_lost)
        self._smooth_walk(start_tracked)
        self._update_lists(start_tracked, start_lost, new, refound, lost_now, np.concatenate([removed, expired]))
        return self._outputs()

    def _predict(self, pool: IndexArray) -> MeasurementSpace:
        """Kalman predict for the pool's tracks (tracked and lost; non-tracked ones first lose their
        height velocity); returns their predicted states' measurement space, shared by the gating
        and every update of this frame."""
        table = self._table
        mean = table.mean[pool]  # a copy
        mean[table.state[pool] != TRACKED, 7] = 0.0
        mean, covariance = self.kalman.predict(mean, table.covariance[pool])
        table.mean[pool], table.covariance[pool] = mean, covariance
        return self.kalman.measurement_space(mean, covariance)

    def _correct(
        self, slots: IndexArray, space: MeasurementSpace, detections: FrameDetections, det_index: IndexArray,
        *, smooth: bool,
    ) -> None:  # fmt: skip
        """Matched tracks at `slots` take detections `det_index` (int [k] each, pairs in match order).

        Kalman update (space: the tracks' measurement space) and life-cycle bookkeeping, batched.
        A tracked or unconfirmed track takes the detection's score; a re-found one keeps its own.
        `smooth`: the unconfirmed-track rule (smooth toward the new feature now); otherwise the
        feature is only stored. Records an UPDATED or REFOUND event per track, in order.
        """
        if len(slots) == 0:
            return
        table = self._table
        table.mean[slots], table.covariance[slots] = self.kalman.update_in(
            space, table.mean[slots], table.covariance[slots], detections.xyah[det_index]
        )
        feature = detections.embeddings[det_index]  # [k, E], a copy
        if smooth:
            table.smooth_feature[slots] = _smoothed(table.smooth_feature[slots], feature, self.config.embedding_alpha)
        was_tracked = table.state[slots] == TRACKED
        table.score[slots[was_tracked]] = detections.scores[det_index[was_tracked]]
        table.current_feature[slots] = feature
        table.has_stored_feature[slots] = True
        table.restored[slots] = detections.restored[det_index]
        table.frame_id[slots] = self._frame_id
        table.state[slots] = TRACKED
        table.activated[slots] = True
        kinds = np.where(was_tracked, EventKind.UPDATED.value, EventKind.REFOUND.value)
        self._event_parts.append((kinds, table.track_id[slots], det_index))

    def _mark(self, slots: IndexArray, state: TrackState, kind: EventKind) -> None:
        """Set the state of the tracks at `slots` and record one `kind` event each."""
        self._table.state[slots] = state.value
        self._event_parts.append((np.full(len(slots), kind.value), self._table.track_id[slots], np.full(len(slots), -1)))

    def _match_by_embedding(
        self, pool: IndexArray, space: MeasurementSpace, detections: FrameDetections
    ) -> tuple[IndexArray, npt.NDArray[np.bool_], IndexArray, IndexArray]:
        """Step 3: appearance + motion for the pool (space: its predicted measurement space).

        Returns (matched slots, which of them were re-found, unmatched detection indices,
        unmatched pool rows); the matches are applied.
        """
        table = self._table
        if len(pool) and len(detections):
            appearance = cosine_distance(table.smooth_feature[pool], detections.embeddings)
            maha = self.kalman.gating_distance_in(space, detections.xyah)
            cost = gate_and_fuse_motion(
                appearance, maha, gate=self.config.gating_threshold, appearance_weight=self.config.motion_lambda
            )
        else:
            cost = np.zeros((len(pool), len(detections)))
        result = linear_assignment(cost, self.config.match_thres_embedding)
        rows, det_index = result.matches[:, 0], result.matches[:, 1]
        matched = pool[rows]
        refound = table.state[matched] != TRACKED
        self._correct(matched, space.take(rows), detections, det_index, smooth=False)
        return matched, refound, result.unmatched_cols, result.unmatched_rows

    def _match_by_iou(
        self, slots: IndexArray, detections: FrameDetections, remaining: IndexArray, cost_limit: float
    ) -> tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
        """Steps 4 and 5: IoU between the tracks at `slots` and the detections left (`remaining`).

        Returns (matched rows of `slots`, their detection indices, detections still left,
        unmatched rows of `slots`); the caller applies the matches.
        """
        if len(slots) == 0 or len(remaining) == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, remaining, np.arange(len(slots), dtype=np.int64)
        cost = iou_distance(self._boxes(slots), detections.xyxy[remaining])
        result = linear_assignment(cost, cost_limit)
        return (
            result.matches[:, 0], remaining[result.matches[:, 1]],
            remaining[result.unmatched_cols], result.unmatched_rows,
        )  # fmt: skip

    def _start_tracks(self, detections: FrameDetections, remaining: IndexArray) -> IndexArray:
        """Step 6: unconfirmed tracks from the detections left whose score reaches conf_thres; their slots."""
        # `score < conf_thres` is skipped in the reference: re-check boxes below it never start tracks.
        starters = remaining[detections.scores[remaining] >= np.float32(self.config.conf_thres)]
        if len(starters) == 0:
            return np.zeros(0, np.int64)
        mean, covariance = self.kalman.initiate(detections.xyah[starters])
        track_ids = self._ids.take(len(starters))
        slots = self._table.add(
            track_ids, mean, covariance, detections.scores[starters], detections.embeddings[starters],
            self._frame_id, detections.restored[starters],
        )  # fmt: skip
        self._event_parts.append((np.full(len(starters), EventKind.NEW.value), track_ids, starters))
        return slots

    def _expire_lost(self, start_lost: IndexArray) -> IndexArray:
        """Step 7: tracks of the frame's starting lost list unmatched for longer than the buffer.

        They stay in the lost list for one more frame (the reference's lag) and are marked again then.
        """
        expired = start_lost[self._frame_id - self._table.frame_id[start_lost] > self.max_time_lost]
        self._mark(expired, TrackState.REMOVED, EventKind.REMOVED)
        return expired

    def _smooth_walk(self, start_tracked: IndexArray) -> None:
        """Step 8a: every track of the starting tracked list that is confirmed now smooths toward its
        latest feature once more (even if unmatched this frame), as the reference's end-of-frame walk."""
        table = self._table
        walked = start_tracked[table.activated[start_tracked]]
        if len(walked):
            table.smooth_feature[walked] = _smoothed(
                table.smooth_feature[walked], table.current_feature[walked], self.config.embedding_alpha
            )

    def _update_lists(
        self,
        start_tracked: IndexArray,
        start_lost: IndexArray,
        new: IndexArray,
        refound: IndexArray,
        lost_now: IndexArray,
        removed: IndexArray,
    ) -> None:
        """Step 8b: the reference's list bookkeeping, then duplicate removal; frees the slots of tracks that left.

        Tracked: the starting tracked ones still tracked, then the new, then the re-found tracks.
        Lost: the starting lost ones not re-found, then those lost now. Tracks put on the
        reference's removed list leave the lost list one frame later; one that was re-found
        meanwhile carries the mark and leaves as soon as it is lost again.
        """
        table = self._table
        tracked = np.concatenate([start_tracked[table.state[start_tracked] == TRACKED], new, refound])
        lost = np.concatenate([start_lost[table.state[start_lost] != TRACKED], lost_now])
        lost = lost[~table.on_removed_list[lost]]
        table.on_removed_list[removed] = True
        self._tracked_slots, self._lost_slots = self._remove_duplicates(tracked, lost)
        table.retain(np.concatenate([self._tracked_slots, self._lost_slots]))

    def _remove_duplicates(self, tracked: IndexArray, lost: IndexArray) -> tuple[IndexArray, IndexArray]:
        """Drop one of each tracked/lost pair whose Kalman boxes are closer than duplicate_iou_distance (1 - IoU).

        The lost one goes only when the tracked one is strictly older (last matched frame minus start
        frame); otherwise, ties included, the tracked one goes.
        """
        if len(tracked) == 0 or len(lost) == 0:
            return tracked, lost
        distance = iou_distance(self._boxes(tracked), self._boxes(lost))
        # Flat indices: np.nonzero on a 2-d mask costs several times more.
        rows, cols = np.divmod(np.flatnonzero(distance < self.config.duplicate_iou_distance), len(lost))
        if len(rows) == 0:
            return tracked, lost
        table = self._table
        age_tracked = (table.frame_id - table.start_frame)[tracked[rows]]
        age_lost = (table.frame_id - table.start_frame)[lost[cols]]
        drop_tracked = np.zeros(len(tracked), bool)
        drop_lost = np.zeros(len(lost), bool)
        drop_lost[cols[age_tracked > age_lost]] = True
        drop_tracked[rows[age_tracked <= age_lost]] = True
        return tracked[~drop_tracked], lost[~drop_lost]

    def _boxes(self, slots: IndexArray) -> npt.NDArray[np.float64]:
        """[len(slots), 4] float64 corners of the tracks' Kalman means, frame pixels."""
        return xyah_to_xyxy(self._table.mean[slots, :4])

    def _outputs(self) -> list[Track]:
        """Confirmed tracked tracks whose box passes the area and aspect filters."""
        table = self._table
        confirmed = self._tracked_slots[table.activated[self._tracked_slots]]
        if len(confirmed) == 0:
            return []
        tlwh = xyah_to_tlwh(table.mean[confirmed, :4])
        area = tlwh[:, 2] * tlwh[:, 3]
        aspect = np.divide(tlwh[:, 2], tlwh[:, 3], out=np.full(len(tlwh), np.inf), where=tlwh[:, 3] != 0)
        keep = (area > self.config.min_box_area) & (aspect <= self.config.max_aspect_ratio)
        boxes = tlwh_to_xyxy(tlwh[keep]).astype(np.float32)
        boxes.setflags(write=False)
        shown = confirmed[keep]
        return [
            Track(track_id, box, score, restored)
            for track_id, box, score, restored in zip(
                table.track_id[shown].tolist(), boxes, table.score[shown].tolist(), table.restored[shown].tolist()
            )
        ]


def _smoothed(smooth: npt.NDArray[np.float32], new: npt.NDArray[np.float32], alpha: float) -> npt.NDArray[np.float32]:
    """[N, E] rows of smooth + alpha (new - smooth), renormalised (float32, new arrays)."""
    return unit_rows(smooth + np.float32(alpha) * (new - smooth))
