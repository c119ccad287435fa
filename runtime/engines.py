"""The network half of a frame as one step: the detector over a batch of letterboxed frames, then
each frame's re-check on that frame's slice of the detector's maps with that frame's tracklets.

`EnginePair` is all the tracker and the multi-stream runtime need of the engines, wherever they
run. `BackendPair` runs two backends in this process (ONNX Runtime, TensorRT, or any object with
`infer(feeds) -> outputs`); a remote server's client sends each frame with its tracklets in one
request instead, so the detector's maps never leave the server.

Why one step rather than two calls: the tracklets a frame needs are known before its detector
runs (they are the tracks of the frames before), so a remote pair can do both engines in one
round trip, and a local pair can bind each frame's slice of a batched detector's maps straight
into the re-check without copying them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.runtime.backends.base import ArrayLike, batch_item

F32 = npt.NDArray[np.float32]


class InferenceBackend(Protocol):
    """What a pair needs of one engine runner: contract name -> array in and out."""

    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class NetworkOutputs:
    """One frame's engine outputs.

    detector: the detector's outputs for this frame with a batch axis of 1 (det_boxes [1, K, 4],
    det_scores [1, K], det_density [1, K], det_embeddings [1, K, E], and the maps), NumPy arrays
    or device handles. recheck: the re-check's outputs (trans_boxes [1, P, 4], trans_scores
    [1, P], trans_embeddings [1, P, E], recheck_heatmap [1, 1, h, w]), or None when the frame
    had no tracklets. A local pair's buffers may be reused by its next `run`: consume them (or
    copy them) before calling it again.
    """

    detector: Mapping[str, ArrayLike]
    recheck: Mapping[str, ArrayLike] | None


class EnginePair(Protocol):
    """The detector and the re-check engine as one step over a batch of frames."""

    def run(self, images: npt.NDArray[np.uint8], tracklets: Sequence[F32 | None]) -> list[NetworkOutputs]:
        """images: uint8 [B, H, W, 3] letterboxed BGR frames. tracklets: one entry per frame,
        float32 [n, E] unit embeddings (n >= 1) or None for no re-check. Returns B outputs, in order."""
        ...

    def close(self) -> None:
        """Release what the pair opened (engines, connections); closing twice is harmless."""
        ...


def recheck_feeds(detector_item: Mapping[str, ArrayLike], tracklets: F32) -> dict[str, ArrayLike]:
    """The re-check engine's feeds for one frame: its detector maps (batch axis 1) and tracklets [n, E]."""
    feeds: dict[str, ArrayLike] = {
        name: detector_item[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR if name in detector_item
    }
    feeds[contract.TRACKLETS] = tracklets
    return feeds


class BackendPair:
    """An `EnginePair` over two runners in this process.

    detector: runs `images` [B, H, W, 3] (B up to the export's max_batch). recheck: None for a
    CSTrack-only pair. After each `run`, `last_timings_ms` holds the detector's and the
    re-checks' wall time (ms, the re-checks summed over the batch's frames), keyed by engine name
    (contract.DETECTOR, contract.RECHECK: two of the tracker's stages).
    """

    def __init__(self, detector: InferenceBackend, recheck: InferenceBackend | None) -> None:
        self.detector = detector
        self.recheck = recheck
        self.last_timings_ms: dict[str, float] = dict.fromkeys(contract.ENGINES, 0.0)

    def run(self, images: npt.NDArray[np.uint8], tracklets: Sequence[F32 | None]) -> list[NetworkOutputs]:
        if len(tracklets) != len(images):
            raise ValueError(f"{len(images)} frames but {len(tracklets)} tracklet entries")
        return self.recheck_batch(self.detect(images), tracklets)

    def detect(self, images: npt.NDArray[np.uint8]) -> Mapping[str, ArrayLike]:
        """The detector's outputs for `images` [B, H, W, 3] (batch axis B): the first half of `run`.

        With `outputs_stay_valid`, they stay valid while the detector runs the next batch, so a
        caller may detect batch k + 1 while it still does batch k's re-checks and host work.
        """
        start = time.perf_counter()
        outputs = self.detector.infer({contract.IMAGES: images})
        self.last_timings_ms[contract.DETECTOR] = (time.perf_counter() - start) * 1e3
        return outputs

    @property
    def outputs_stay_valid(self) -> bool:
        """Whether one `detect`'s outputs stay valid through the next (the detector's runner returns
        new buffers every call: ONNX Runtime; TensorRT binds its buffers once and reuses them)."""
        return bool(getattr(self.detector, "fresh_outputs", False))

    def recheck_batch(self, detected: Mapping[str, ArrayLike], tracklets: Sequence[F32 | None]) -> list[NetworkOutputs]:
        """Each frame's re-check on its slice of `detected` (a `detect` of len(tracklets) frames):
        the second half of `run`."""
        batch = len(tracklets)
        results: list[NetworkOutputs] = []
        start = time.perf_counter()
        for index, pool in enumerate(tracklets):
            item = detected if batch == 1 else {name: batch_item(value, index) for name, value in detected.items()}
            rechecked = self.recheck_frame(item, pool)
            if rechecked is not None and batch > 1:
                # The next frame's re-check reuses a backend's host buffers (TensorRT's pinned ones).
                rechecked = {name: np.array(v) if isinstance(v, np.ndarray) else v for name, v in rechecked.items()}
            results.append(NetworkOutputs(item, rechecked))
        self.last_timings_ms[contract.RECHECK] = (time.perf_counter() - start) * 1e3
        return results

    @property
    def runs_on_cpu(self) -> bool:
        """Whether the detector runs on the CPU (its runner says `device` "cpu")."""
        return getattr(self.detector, "device", None) == "cpu"

    def close(self) -> None:
        """Deactivate both runners (those with a `deactivate` method)."""
        for runner in (self.detector, self.recheck):
            deactivate = getattr(runner, "deactivate", None)
            if deactivate is not None:
                deactivate()

    def recheck_frame(self, detector_item: Mapping[str, ArrayLike], tracklets: F32 | None) -> Mapping[str, ArrayLike] | None:
        """The re-check of one frame (detector outputs with a batch axis of 1); None without tracklets."""
        if self.recheck is None or tracklets is None or len(tracklets) == 0:
            return None
        return self.recheck.infer(recheck_feeds(detector_item, tracklets))
