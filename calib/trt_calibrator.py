"""TensorRT's implicit INT8 path: an entropy calibrator over an `omc calib` set, with a cache file.

For TensorRT builds on devices where explicit Q/DQ graphs (`omc quantize --target tensorrt`) are
not an option, e.g. older Jetson or DLA deployments, full NVIDIA TensorRT can calibrate a float
network itself: the builder (INT8 flag, `config.int8_calibrator`) pulls batches through
`IInt8EntropyCalibrator2` and stores the resulting scales in a calibration cache, which later
builds read instead of calibrating again. TensorRT deprecated this path in 10.1 in favour of
explicit quantization; TensorRT for RTX does not have it at all.

Split so that what needs no GPU is testable anywhere:
- `CalibrationBatches`: the set's frames as contiguous uint8 [B, H, W, 3] batches (the
  detector's `images`), in stored order; a last partial batch is dropped (logged).
- `CalibrationCache`: the cache file, read back verbatim, written through a temporary name.
- `EntropyCalibratorCore`: what TensorRT calls (batch size, next batch as device addresses,
  cache read/write), with the host-to-device copy injected.
- `entropy_calibrator(...)`: the TensorRT object. It needs full TensorRT (module `tensorrt`)
  and a CUDA GPU, and raises one OmcError naming what is missing otherwise.

Only the detector is calibrated this way: the re-check's inputs are the detector's maps and live
tracklets, which an implicit calibrator cannot synthesise from frames.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, cast

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.errors import BadInput, OmcError
from omc.files import replacing

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


class CalibrationBatches:
    """Frames uint8 [N, H, W, 3] served as contiguous [batch_size, H, W, 3] batches, in order.

    N // batch_size batches; the N % batch_size frames left over are dropped (TensorRT wants
    every batch full). BadInput when there is not one full batch.
    """

    def __init__(self, images: U8, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise BadInput(f"calibration batch size must be at least 1, got {batch_size}")
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise BadInput(f"calibration frames must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        if len(images) < batch_size:
            raise BadInput(
                f"the calibration set has {len(images)} frame(s), fewer than one batch of {batch_size}; "
                "make a larger set (omc calib --frames) or use a smaller batch"
            )
        self.images = images
        self.batch_size = batch_size
        dropped = len(images) % batch_size
        if dropped:
            log.warning("%d calibration frame(s) beyond the last full batch of %d are not used", dropped, batch_size)

    @classmethod
    def from_file(cls, calib_file: str | Path, batch_size: int = 1) -> "CalibrationBatches":
        from omc.calib.dataset import CalibrationSet

        return cls(CalibrationSet.load(calib_file).images, batch_size)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    @property
    def batch_nbytes(self) -> int:
        return int(self.batch_size * np.prod(self.images.shape[1:], dtype=np.int64))

    def batch(self, index: int) -> U8:
        """Batch `index` (0-based) as a C-contiguous uint8 [B, H, W, 3] array."""
        start = index * self.batch_size
        return np.ascontiguousarray(self.images[start : start + self.batch_size])

    def __iter__(self) -> Iterator[U8]:
        return (self.batch(index) for index in range(len(self)))


class CalibrationCache:
    """TensorRT's calibration cache at `path`: opaque bytes, read back as written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> bytes | None:
        """The cached bytes, or None when there is no (or an empty) cache: TensorRT then calibrates."""
        if not self.path.is_file():
            return None
        data = self.path.read_bytes()
        if not data:
            return None
        log.info("using the INT8 calibration cache %s (%d bytes)", self.path, len(data))
        return data

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Store `data` through a temporary name and a rename."""
        with replacing(self.path) as temporary:
            temporary.write_bytes(bytes(data))
        log.info("wrote the INT8 calibration cache %s (%d bytes)", self.path, len(bytes(data)))


class EntropyCalibratorCore:
    """What TensorRT asks of a calibrator, without TensorRT's base class.

    batches: the frames. cache: the cache file. upload: copies a batch to the GPU and returns
    its device address (kept valid until the next call); tests pass a stand-in.
    """

    def __init__(self, batches: CalibrationBatches, cache: CalibrationCache, upload: Callable[[U8], int]) -> None:
        self.batches = batches
        self.cache = cache
        self.upload = upload
        self.served = 0

    @property
    def batch_size(self) -> int:
        return self.batches.batch_size

    def get_batch(self, names: list[str]) -> list[int]:
        """Device addresses of the next batch for the inputs `names` ([] once all are served)."""
        unknown = [name for name in names if name != contract.IMAGES]
        if unknown:
            raise OmcError(
                f"the INT8 calibrator feeds only the detector's '{contract.IMAGES}'; the network asks for {unknown}"
            )
        if self.served >= len(self.batches):
            return []
        address = self.upload(self.batches.batch(self.served))
        self.served += 1
        return [address for _ in names]

    def read_calibration_cache(self) -> bytes | None:
        return self.cache.read()

    def write_calibration_cache(self, data: bytes | bytearray | memoryview) -> None:
        self.cache.write(data)


class _TensorRTCalibratorMethods:
    """TensorRT's calibrator callbacks, delegated to an EntropyCalibratorCore; mixed into
    TensorRT's IInt8EntropyCalibrator2 when the calibrator is made (TensorRT is imported lazily)."""

    _core: EntropyCalibratorCore

    def get_batch_size(self) -> int:
        return self._core.batch_size

    def get_batch(self, names: list[str]) -> list[int]:
        return self._core.get_batch(names)

    def read_calibration_cache(self) -> bytes | None:
        return self._core.read_calibration_cache()

    def write_calibration_cache(self, cache: Any) -> None:
        self._core.write_calibration_cache(memoryview(cache))

    def close(self) -> None:
        """Free the device buffer and the CUDA stream (after the build)."""
        self._release()

    def _release(self) -> None:
        """Set per instance when the calibrator is made."""


def entropy_calibrator(
    calib_file: str | Path, cache_path: str | Path, batch_size: int = 1, device: int = 0
) -> trt.IInt8EntropyCalibrator2:
    """An IInt8EntropyCalibrator2 over the frames of `calib_file`, caching to `cache_path`.

    Needs full NVIDIA TensorRT and a CUDA GPU: MissingDependency / OmcError otherwise, before
    anything is allocated. Keep the returned object alive until the build has finished (it owns
    the device buffer TensorRT reads the batches from), then call its `close()`.
    """
    from omc.runtime.backends.cuda_memory import CudaSession, DeviceBuffer, cuda_unavailable_reason
    from omc.runtime.backends.trt import load_tensorrt

    edition = load_tensorrt("tensorrt")
    reason = cuda_unavailable_reason(device)
    if reason is not None:
        raise OmcError(f"the INT8 entropy calibrator runs the network on a CUDA GPU: {reason}")
    batches = CalibrationBatches.from_file(calib_file, batch_size)
    session = CudaSession(device)
    session.acquire()
    buffer = DeviceBuffer(session, batches.batch_nbytes)

    def upload(batch: U8) -> int:
        buffer.upload(batch)
        session.synchronize()
        return buffer.ptr

    core = EntropyCalibratorCore(batches, CalibrationCache(cache_path), upload)
    base: Any = edition.module.IInt8EntropyCalibrator2  # a pybind11 class, known at run time only

    def release() -> None:
        buffer.close()
        session.release()

    def __init__(self: Any) -> None:
        base.__init__(self)
        self._core = core
        self._release = release

    calibrator_type = type("OmcEntropyCalibrator", (_TensorRTCalibratorMethods, base), {"__init__": __init__})
    return cast("trt.IInt8EntropyCalibrator2", calibrator_type())
