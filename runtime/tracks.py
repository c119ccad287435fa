"""Tracks: the frozen output record, the life-cycle states, and the tracker's per-track state.

`Track` is what `Tracker.update` returns. `TrackTable` is the state the tracker keeps for its
live tracks, stored by column: one row ("slot") per track in arrays per field (Kalman mean and
covariance, embeddings, life-cycle state and the frame bookkeeping the reference's decisions
depend on). The tracker keeps its track lists as arrays of slots, so every per-frame step (Kalman
predict and update, embedding smoothing, match bookkeeping) is a few array operations over all
tracks at once, not Python work per track. `Tracklet` is a read-only view of one row, for
diagnostics and tests.

The reference keeps a per-track deque of up to 30 stored features, but only ever reads whether
it is empty (the re-check tracklet pool needs at least one stored feature); `has_stored_feature`
is that bit, so a track's memory stays constant. Slots of tracks that leave the tracker are
reused, so the table stays as large as the most tracks alive at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import xyah_to_xyxy

IndexArray = npt.NDArray[np.int64]

# Rows a new table holds before it first grows (it doubles when full); a crowded frame has a few dozen tracks.
INITIAL_CAPACITY = 64
# Kalman state size (x, y, a, h and their velocities).
STATE_DIM = 8


class TrackState(enum.Enum):
    """Life-cycle state (JDE's BaseTrack states); `TrackTable.state` holds the values."""

    TRACKED = 1
    LOST = 2
    REMOVED = 3


class EventKind(enum.IntEnum):
    """Life-cycle events, numbered as in the tracker fixture (tracker_sample.md `ev_kind`)."""

    NEW = 0
    UPDATED = 1
    REFOUND = 2
    LOST = 3
    REMOVED = 4


class TrackEvent(NamedTuple):
    """One life-cycle event of a frame: kind, track id and detection index (-1 when none)."""

    kind: EventKind
    track_id: int
    detection: int


@dataclass(frozen=True)
class Track:
    """One output track of a frame.

    track_id: from 1, per tracker.  box: float32 [4] (x1, y1, x2, y2), frame pixels, read-only,
    the Kalman estimate after this frame's update.  score: the detection score the track holds
    (a re-found track keeps the score it had when it was lost).  restored: this frame's
    detection came from the re-check (a transductive box), not from the detector.
    """

    track_id: int
    box: npt.NDArray[np.float32]
    score: float
    restored: bool


class IdCounter:
    """Hands out track ids 1, 2, 3, ... for one tracker; `reset()` starts again at 1."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last += 1
        return self._last

    def take(self, count: int) -> IndexArray:
        """The next `count` ids, int64 [count], in order."""
        ids = np.arange(self._last + 1, self._last + 1 + count, dtype=np.int64)
        self._last += count
        return ids

    def reset(self) -> None:
        self._last = 0


class TrackTable:
    """Column store of one tracker's live tracks; a track is a row ("slot") of every array.

    mean [C, 8] / covariance [C, 8, 8] float64: Kalman state (x, y, a, h and velocities), frame
    pixels. smooth_feature [C, E] float32 unit: the smoothed embedding; current_feature [C, E]:
    the latest matched detection's embedding. track_id int64. score float64: the detection
    score the track holds. frame_id int64: last frame it was matched (or started); start_frame
    int64: frame it started. state int8: a TrackState value. activated bool: confirmed (matched
    again after its first frame). has_stored_feature bool. on_removed_list bool: the reference
    put it on its removed list (a later loss drops it at once). restored bool: its latest
    detection came from the re-check. live bool: the slot holds a track.

    C (the capacity) doubles when a new track finds no free slot; E is set by the first
    features stored. Rows of free slots hold stale values that nothing reads.
    """

    def __init__(self, capacity: int = INITIAL_CAPACITY) -> None:
        self.mean = np.zeros((capacity, STATE_DIM))
        self.covariance = np.zeros((capacity, STATE_DIM, STATE_DIM))
        self.smooth_feature = np.zeros((capacity, 0), np.float32)
        self.current_feature = np.zeros((capacity, 0), np.float32)
        self.track_id = np.zeros(capacity, np.int64)
        self.score = np.zeros(capacity)
        self.frame_id = np.zeros(capacity, np.int64)
        self.start_frame = np.zeros(capacity, np.int64)
        self.state = np.zeros(capacity, np.int8)
        self.activated = np.zeros(capacity, bool)
        self.has_stored_feature = np.zeros(capacity, bool)
        self.on_removed_list = np.zeros(capacity, bool)
        self.restored = np.zeros(capacity, bool)
        self.live = np.zeros(capacity, bool)

    _COLUMNS = (
        "mean", "covariance", "smooth_feature", "current_feature", "track_id", "score", "frame_id",
        "start_frame", "state", "activated", "has_stored_feature", "on_removed_list", "restored", "live",
    )  # fmt: skip

    @property
    def capacity(self) -> int:
        return len(self.live)

    def add(
        self,
        track_id: IndexArray,
        mean: npt.NDArray[np.float64],
        covariance: npt.NDArray[np.float64],
        score: npt.NDArray[np.floating],
        feature: npt.NDArray[np.float32],
        frame_id: int,
        restored: npt.NDArray[np.bool_],
    ) -> IndexArray:
        """Store N new, unconfirmed, tracked tracks; returns their slots, int64 [N].

        track_id [N]; mean [N, 8]; covariance [N, 8, 8]; score [N]; feature [N, E] (their first
        embedding, both smoothed and current); restored [N]. All are copied in.
        """
        count = len(track_id)
        free = np.flatnonzero(~self.live)
        if len(free) < count:
            self._grow(self.capacity + count - len(free))
            free = np.flatnonzero(~self.live)
        if feature.shape[1] != self.smooth_feature.shape[1]:
            self._set_feature_dim(feature.shape[1])
        slots = free[:count].astype(np.int64)
        self.live[slots] = True
        self.track_id[slots] = track_id
        self.mean[slots] = mean
        self.covariance[slots] = covariance
        self.score[slots] = score
        self.smooth_feature[slots] = feature
        self.current_feature[slots] = feature
        self.frame_id[slots] = frame_id
        self.start_frame[slots] = frame_id
        self.restored[slots] = restored
        self.state[slots] = TrackState.TRACKED.value
        self.activated[slots] = False
        self.has_stored_feature[slots] = False
        self.on_removed_list[slots] = False
        return slots

    def retain(self, slots: IndexArray) -> None:
        """Keep the tracks at `slots` (the tracker's lists after a frame) and free every other slot."""
        self.live[:] = False
        self.live[slots] = True

    def clear(self) -> None:
        """Free every slot (a new stream)."""
        self.live[:] = False

    def _grow(self, needed: int) -> None:
        """Enlarge every column to at least `needed` rows (doubling), keeping the rows held."""
        capacity = max(needed, 2 * self.capacity)
        for name in self._COLUMNS:
            old = getattr(self, name)
            new = np.zeros((capacity,) + old.shape[1:], old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _set_feature_dim(self, dim: int) -> None:
        """Size the embedding columns for E = dim; only while no live track holds an embedding."""
        if self.live.any() and self.smooth_feature.shape[1] != 0:
            raise ValueError(f"embeddings changed size from {self.smooth_feature.shape[1]} to {dim} mid-stream")
        self.smooth_feature = np.zeros((self.capacity, dim), np.float32)
        self.current_feature = np.zeros((self.capacity, dim), np.float32)


class Tracklet:
    """Read-only view of one live track's row in a TrackTable (valid while the track is live).

    The arrays returned are copies, so reading a view never exposes the table to edits.
    """

    __slots__ = ("_table", "slot")

    def __init__(self, table: TrackTable, slot: int) -> None:
        self._table = table
        self.slot = slot

    def __repr__(self) -> str:
        return f"Tracklet(track_id={self.track_id}, state={self.state.name}, activated={self.activated})"

    @property
    def track_id(self) -> int:
        return int(self._table.track_id[self.slot])

    @property
    def state(self) -> TrackState:
        return TrackState(int(self._table.state[self.slot]))

    @property
    def activated(self) -> bool:
        return bool(self._table.activated[self.slot])

    @property
    def smooth_feature(self) -> npt.NDArray[np.float32]:
        """[E] float32 unit: the smoothed embedding (a copy)."""
        return self._table.smooth_feature[self.slot].copy()

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """[8] float64 Kalman mean (a copy)."""
        return self._table.mean[self.slot].copy()

    @property
    def xyxy(self) -> npt.NDArray[np.float64]:
        """[4] float64 corners of the Kalman mean, frame pixels."""
        return xyah_to_xyxy(self._table.mean[self.slot][None, :4])[0]
