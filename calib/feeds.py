"""Feed dicts for calibration and drift, keyed by engine-contract names, and the reader ONNX Runtime's
quantizer takes them through.

Calibration reads any iterable of feed dicts, in order (the set's stored order): the detector's
are the stored frames; the re-check's are the float detector's maps on a sample's frame plus the
tracklet matrix recorded for it (omc.calib.dataset). Nothing here draws random numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from omc import contract
from omc.calib.dataset import CalibrationSet, TrackletSamples
from omc.contract import EngineMeta
from omc.errors import BadInput

Feeds = dict[str, np.ndarray]


class FeedReader(CalibrationDataReader):
    """onnxruntime.quantization's CalibrationDataReader over an iterable of contract feed dicts.

    feeds: dicts name -> array (consumed lazily, once). input_names: the graph's inputs; a feed
    without one of them is a BadInput naming it, extra entries are dropped.
    """

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]], input_names: Sequence[str]) -> None:
        self._feeds = iter(feeds)
        self._names = tuple(input_names)
        self.count = 0

    def get_next(self) -> Feeds | None:
        feeds = next(self._feeds, None)
        if feeds is None:
            return None
        missing = [name for name in self._names if name not in feeds]
        if missing:
            raise BadInput(f"calibration feed {self.count} lacks input(s) {', '.join(missing)}")
        self.count += 1
        return {name: np.ascontiguousarray(feeds[name]) for name in self._names}


def float_detector(onnx_dir: Path, meta: EngineMeta) -> Any:
    """The float export's detector as an active ONNX Runtime backend returning NumPy arrays."""
    from omc.runtime.backends.onnxrt import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_dir / contract.DETECTOR_ONNX, meta, contract.DETECTOR, device_outputs=())
    backend.activate()
    return backend


def recheck_feeds(
    calibration: CalibrationSet, detector: Any, holdout: bool = False
) -> Iterator[Feeds]:
    """Re-check feeds of the set's samples, in order: the float `detector`'s three maps on the
    sample's frame ([1, h, w, E], [1, C, h, w], [1, h, w, 4] float32) and its `tracklets` [n, E].

    detector: anything with infer({"images": uint8 [1, H, W, 3]}) -> contract outputs (float).
    holdout: the held-out frames' samples instead of the calibration frames'.
    """
    samples: TrackletSamples = calibration.holdout_recheck if holdout else calibration.recheck
    images = calibration.holdout_images if holdout else calibration.images
    for sample in range(len(samples)):
        row = int(samples.frame[sample])
        outputs = detector.infer({contract.IMAGES: images[row : row + 1]})
        feeds = {name: np.asarray(outputs[name], np.float32) for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
        feeds[contract.TRACKLETS] = np.ascontiguousarray(samples.tracklets(sample), np.float32)
        yield feeds
