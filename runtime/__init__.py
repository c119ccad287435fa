"""The torch-free runtime: backends around the two engines, NumPy post-processing, the tracker,
and the multi-stream runtime.

What an application embeds::

    from omc.runtime import Tracker
    with Tracker.from_engines("engines/omc_l_1088x608") as tracker:
        tracks = tracker.update(frame_bgr)

    from omc.runtime import StreamRuntime, StreamSpec
    with StreamRuntime.from_engines("engines/omc_l_1088x608", [StreamSpec("cam", "rtsp://...")]) as runtime:
        for result in runtime.results():
            ...
"""

from omc.config import StreamConfig, TrackerConfig
from omc.runtime.streams import StreamHealth, StreamResult, StreamRuntime, StreamSpec
from omc.runtime.tracker import Track, Tracker

__all__ = [
    "StreamConfig",
    "StreamHealth",
    "StreamResult",
    "StreamRuntime",
    "StreamSpec",
    "Track",
    "Tracker",
    "TrackerConfig",
]
