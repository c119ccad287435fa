"""Tracks: the frozen output record, the life-cycle states, and the tracker's per-track state.

`Track` is what `Tracker.update` returns. `Tracklet` is the mutable state the tracker keeps per
track: Kalman mean and covariance, embeddings, life-cycle state and the frame bookkeeping the
reference's decisions depend on. It holds no arithmetic: the tracker stacks the fields of many
tracklets and runs the filter and the embedding updates in batches.

The reference keeps a per-track deque of up to 30 stored features, but only ever reads whether
it is empty (the re-check tracklet pool needs at least one stored feature); `has_stored_feature`
is that bit, so a track's memory stays constant.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from omc.runtime.boxes import xyah_to_xyxy


class TrackState(enum.Enum):
    """Life-cycle state (JDE's BaseTrack states)."""

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

    def reset(self) -> None:
        self._last = 0


@dataclass(eq=False)
class Tracklet:
    """The tracker's state of one track (mutable; owned by one Tracker).

    mean [8] / covariance [8, 8] float64: Kalman state (x, y, a, h and velocities), frame pixels.
    smooth_feature [E] float32 unit: the smoothed embedding; current_feature [E]: the latest
    matched detection's embedding. frame_id: last frame it was matched (or started);
    start_frame: frame it started. activated: confirmed (matched again after its first frame).
    on_removed_list: the reference put it on its removed list (a later loss drops it at once).
    restored: its latest detection came from the re-check.
    """

    track_id: int
    mean: npt.NDArray[np.float64]
    covariance: npt.NDArray[np.float64]
    score: float
    smooth_feature: npt.NDArray[np.float32]
    current_feature: npt.NDArray[np.float32]
    frame_id: int
    start_frame: int
    restored: bool
    state: TrackState = TrackState.TRACKED
    activated: bool = False
    has_stored_feature: bool = False
    on_removed_list: bool = False

    @property
    def xyxy(self) -> npt.NDArray[np.float64]:
        """[4] float64 corners of the Kalman mean, frame pixels."""
        return xyah_to_xyxy(self.mean[None, :4])[0]
