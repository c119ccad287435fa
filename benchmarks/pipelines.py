"""One frame of the tracker, split into the benchmark's stages, for each backend.

A `FramePipeline` exposes the stages `omc.benchmarks.runner` times one by one: letterbox,
to_device (h2d), detect, recheck (with given tracklets), to_host (d2h) and detections (NMS +
fusion); association is the runtime's for every backend (`Tracker.update_from_detections`). Two kinds:

- `EnginePipeline`: the exported engines through an omc runtime backend (ONNX Runtime fp32 or
  INT8 on the CPU, TensorRT on a GPU) and the runtime's NumPy host code: exactly what
  `omc.runtime.Tracker` runs per frame.
- `TorchPipeline`: the PyTorch reference path (omc.benchmarks.torch_baseline), eager on the
  CPU as the reference runs, or on a CUDA GPU.

Synthetic tracklets: random weights track nothing, so the re-check would never run. Each frame,
the pipeline builds n tracklet rows from the frame's own L2-normalised ID-embedding map at given
cells (`tracklet_rows`, not timed), so the re-check does the work it does for n real tracks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.runtime.backends.base import Backend
from omc.runtime.detections import FrameDetections, frame_detections, unit_rows
from omc.runtime.letterbox import LetterboxTransform, letterbox

if TYPE_CHECKING:
    from omc.benchmarks.torch_baseline import TorchReferencePath

log = logging.getLogger(__name__)

FrameBGR = npt.NDArray[np.uint8]
Cells = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]  # (rows, cols) on the stride-8 map


@dataclass(frozen=True)
class Prepared:
    """A letterboxed frame ready for `to_device`: the host array (uint8 [1, H, W, 3] for engines,
    float32 [1, 3, H, W] for PyTorch) and the transform back to frame pixels."""

    array: np.ndarray
    transform: LetterboxTransform


class FramePipeline(ABC):
    """The stages of one backend; arguments and results are opaque between stages."""

    name: str
    meta: EngineMeta
    config: TrackerConfig
    # Facts for the report: precision, providers, threads, files.
    description: dict[str, Any]

    @abstractmethod
    def letterbox(self, frame: FrameBGR) -> Prepared: ...

    @abstractmethod
    def to_device(self, prepared: Prepared) -> Any: ...

    @abstractmethod
    def detect(self, images: Any) -> Any: ...

    @abstractmethod
    def tracklet_rows(self, detected: Any, cells: Cells) -> Any:
        """[n, E] unit rows of the frame's ID map at `cells`, where the re-check reads them."""

    @abstractmethod
    def recheck(self, detected: Any, tracklets: Any) -> Any: ...

    @abstractmethod
    def to_host(self, detected: Any, rechecked: Any | None) -> tuple[Any, Any | None]: ...

    @abstractmethod
    def detections(self, host_detected: Any, host_rechecked: Any | None, transform: LetterboxTransform) -> FrameDetections: ...

    @abstractmethod
    def batch_input(self, prepared: Prepared, batch: int) -> Any:
        """The detector's input for `batch` copies of a frame, on the device."""

    @property
    def has_recheck(self) -> bool:
        return self.meta.has_recheck

    def close(self) -> None:
        """Release the engines (the default holds none)."""


class EnginePipeline(FramePipeline):
    """Exported engines through an omc backend (activated), with the runtime's host code.

    detector / recheck: activated backends of one export (recheck None without the re-check
    network). device_input: wrap host images the way the backend reads them without a copy in
    `infer` (ONNX Runtime: an OrtValue); None feeds the NumPy array (the backend copies it in).
    """

    def __init__(
        self,
        name: str,
        detector: Backend,
        recheck: Backend | None,
        meta: EngineMeta,
        config: TrackerConfig,
        description: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.detector, self.recheck_engine = detector, recheck
        self.meta = meta
        self.config = config
        self.description = dict(description)
        self._wrap = _ort_input_wrapper() if _is_onnxruntime(detector) else None

    def letterbox(self, frame: FrameBGR) -> Prepared:
        images, transform = letterbox(frame, self.meta.input_hw)
        return Prepared(images, transform)

    def to_device(self, prepared: Prepared) -> Any:
        return self._wrap(prepared.array) if self._wrap is not None else prepared.array

    def detect(self, images: Any) -> Any:
        return self.detector.infer({contract.IMAGES: images})

    def tracklet_rows(self, detected: Any, cells: Cells) -> Any:
        id_map = np.asarray(detected[contract.ID_EMBEDDINGS])[0]
        return unit_rows(id_map[cells[0], cells[1]])

    def recheck(self, detected: Any, tracklets: Any) -> Any:
        if self.recheck_engine is None:
            raise ValueError("this export has no re-check engine")
        feeds = {name: detected[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
        feeds[contract.TRACKLETS] = tracklets
        return self.recheck_engine.infer(feeds)

    def to_host(self, detected: Any, rechecked: Any | None) -> tuple[Any, Any | None]:
        host_detected = {name: np.asarray(detected[name]) for name in contract.DETECTOR_CORE_OUTPUTS[:4]}
        host_rechecked = None
        if rechecked is not None:
            host_rechecked = {
                name: np.asarray(rechecked[name])
                for name in (contract.TRANS_BOXES, contract.TRANS_SCORES, contract.TRANS_EMBEDDINGS)
            }
        return host_detected, host_rechecked

    def detections(self, host_detected: Any, host_rechecked: Any | None, transform: LetterboxTransform) -> FrameDetections:
        return frame_detections(host_detected, host_rechecked, transform, self.config)

    def batch_input(self, prepared: Prepared, batch: int) -> Any:
        images = np.ascontiguousarray(np.repeat(prepared.array, batch, axis=0))
        return self._wrap(images) if self._wrap is not None else images

    def close(self) -> None:
        for engine in (self.detector, self.recheck_engine):
            if engine is not None:
                engine.deactivate()


def _is_onnxruntime(backend: Backend) -> bool:
    from omc.runtime.backends.onnxrt import OnnxRuntimeBackend

    return isinstance(backend, OnnxRuntimeBackend)


def _ort_input_wrapper() -> Any:
    """Host array -> OrtTensor over an OrtValue (ONNX Runtime binds it without another copy)."""
    import onnxruntime as ort

    from omc.runtime.backends.onnxrt import OrtTensor

    return lambda array: OrtTensor(ort.OrtValue.ortvalue_from_numpy(array))


class TorchPipeline(FramePipeline):
    """The PyTorch reference path as a pipeline (no autograd): the full float32 NCHW network on
    the CPU, or the path's CUDA forms (float16, optionally channels-last and CUDA graphs)."""

    def __init__(
        self, path: TorchReferencePath, meta: EngineMeta, config: TrackerConfig, description: Mapping[str, Any],
        name: str = "torch",
    ) -> None:
        self.name = name
        self.path = path
        self.meta = meta
        self.config = config
        self.description = dict(description)

    def letterbox(self, frame: FrameBGR) -> Prepared:
        images, transform = self.path.preprocess(frame)
        return Prepared(images, transform)

    def to_device(self, prepared: Prepared) -> Any:
        return self.path.to_device(prepared.array)

    def detect(self, images: Any) -> Any:
        return self.path.detect(images)

    def tracklet_rows(self, detected: Any, cells: Cells) -> Any:
        import torch

        with torch.inference_mode():
            id_unit = self.path.network.normalize_id_map(detected.id_map[0:1])[0]
            return id_unit[torch.from_numpy(cells[0]), torch.from_numpy(cells[1])].clone()

    def recheck(self, detected: Any, tracklets: Any) -> Any:
        return self.path.recheck(detected, tracklets)

    def to_host(self, detected: Any, rechecked: Any | None) -> tuple[Any, Any | None]:
        if self.path.device.type != "cpu":
            # On a GPU the reference thresholds and suppresses on the device and copies only the
            # kept rows and their embeddings to the host: those copies are part of `detections`.
            return detected, rechecked
        # On the CPU `.cpu()` returns the tensor itself: nothing moves.
        host = detected._replace(
            candidates=detected.candidates.cpu(), dense=detected.dense.cpu(), id_map=detected.id_map.cpu()
        )
        if rechecked is None:
            return host, None
        return host, type(rechecked)(rechecked.boxes.cpu(), rechecked.scores.cpu(), rechecked.rows.cpu(), rechecked.cols.cpu())

    def detections(self, host_detected: Any, host_rechecked: Any | None, transform: LetterboxTransform) -> FrameDetections:
        return self.path.detections(host_detected, host_rechecked, transform)

    def batch_input(self, prepared: Prepared, batch: int) -> Any:
        return self.path.to_device(np.ascontiguousarray(np.repeat(prepared.array, batch, axis=0)))

    @property
    def has_recheck(self) -> bool:
        return bool(self.path.has_recheck)
