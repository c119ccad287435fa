"""The runtime tracker driven with ready detections: association and life cycle only.

The benchmark times NMS + fusion and association as separate stages, and feeds the re-check
engine synthetic tracklets instead of the tracker's own (random weights track nothing), so it
cannot call `Tracker.update`. It uses a `Tracker` without engines and feeds each frame's
`FrameDetections` to `Tracker.update_from_detections`: the runtime's own association code, so its
decisions are the runtime's by construction.
"""

from __future__ import annotations

from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.runtime.tracker import Tracker


def detections_tracker(meta: EngineMeta, config: TrackerConfig = TrackerConfig(), frame_rate: float = 30.0) -> Tracker:
    """A tracker with no engines attached, for the export described by `meta`."""
    return Tracker(None, None, meta, config, frame_rate)
