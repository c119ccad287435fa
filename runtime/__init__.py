"""The torch-free runtime: backends around the two engines, NumPy post-processing and the tracker.

What an application embeds::

    from omc.runtime import Tracker
    with Tracker.from_engines("engines/omc_l_1088x608") as tracker:
        tracks = tracker.update(frame_bgr)
"""

from omc.config import TrackerConfig
from omc.runtime.tracker import Track, Tracker

__all__ = ["Track", "Tracker", "TrackerConfig"]
