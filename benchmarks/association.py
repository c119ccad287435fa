"""The runtime tracker driven with ready detections: association and life cycle only.

The benchmark times NMS + fusion and association as separate stages, and feeds the re-check
engine synthetic tracklets instead of the tracker's own (random weights track nothing), so it
cannot call `Tracker.update`. `DetectionsTracker.track_detections(detections)` runs steps 3-8 of
`omc.runtime.tracker.Tracker` (association, new tracks, life cycle, smoothing, duplicates) on a
frame's `FrameDetections`, with the same per-frame bookkeeping `update_from_outputs` does. It
reuses the runtime's own association code, so its decisions are the runtime's by construction.
"""

from __future__ import annotations

from typing import Any, Mapping

from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.errors import OmcError
from omc.runtime.detections import FrameDetections
from omc.runtime.tracker import Tracker
from omc.runtime.tracks import Track


class DetectionsTracker(Tracker):
    """A `Tracker` whose frames arrive as detections (engines run elsewhere)."""

    def track_detections(self, detections: FrameDetections) -> list[Track]:
        """Associate one frame's detections with the tracks; returns the frame's confirmed tracks.

        detections: the frame's `FrameDetections` (basic by score, then fused re-check boxes).
        """
        self._frame_id += 1
        self.frames += 1
        self.last_events = []
        self.last_detections = detections
        return self._associate(detections)

    @classmethod
    def for_meta(
        cls, meta: EngineMeta, config: TrackerConfig = TrackerConfig(), frame_rate: float = 30.0
    ) -> "DetectionsTracker":
        """A tracker with no engines attached, for the export described by `meta`."""
        return cls(_NoEngine(), None, meta, config, frame_rate)


class _NoEngine:
    """Stands in for the detector: frames reach a DetectionsTracker as detections, never as images."""

    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        raise OmcError("this tracker takes detections (track_detections), not frames")
