"""GPU memory for the TensorRT backend: one CUDA stream, device and pinned buffers, CUDA graphs.

Built on cuda-python's CUDA runtime bindings (`cuda.bindings.runtime`, distribution
`cuda-bindings`), chosen deliberately:
- it is NVIDIA's own binding, shipped as binary wheels on PyPI for CUDA 12 and 13, so it installs
  with pip on any host with no compiler and no CUDA toolkit; PyCUDA compiles against the
  toolkit's headers at install time, which edge hosts and CI do not have;
- it covers the whole runtime API the backend needs: streams, `cudaMallocHost` pinned memory,
  async copies, stream capture and CUDA graphs; Polygraphy's `polygraphy.cuda` is a ctypes
  wrapper over whatever `libcudart.so` is on the library path (often none beside a pip-installed
  TensorRT), has no graph API, and is a development tool rather than a runtime dependency;
- every call returns its `cudaError_t`, which this module turns into one `OmcError` sentence.

cuda-bindings carries the CUDA runtime of its major version (13.x needs a driver for CUDA 13,
R580 or newer; 12.x runs on CUDA 12 drivers, R525 or newer), so the pip extras come per CUDA
major (pyproject.toml) and `cuda_driver_mismatch()` names the driver and the extra to install
instead of CUDA's "driver version is insufficient".

Devices: CUDA's current device is per thread, and `cudaSetDevice` at activation only covers the
thread that activated. Everything that allocates, copies, captures or enqueues calls
`CudaSession.make_current()` first, so engines on two GPUs in one thread, or calls from worker
threads, always work on the session's own GPU.

Pointers are plain ints (what TensorRT's `set_tensor_address` and `execute_async_v3` take).
Nothing here runs without a GPU: `cuda_unavailable_reason()` says why, and `CudaSession.acquire()`
raises the project's error instead of crashing. The module imports cuda-python lazily.
"""

from __future__ import annotations

import ctypes
import logging
from types import ModuleType
from typing import Any

import numpy as np

from omc.errors import MissingDependency, OmcError
from omc.runtime.backends.base import FixedShape

log = logging.getLogger(__name__)

# pip extra that brings cuda-bindings with TensorRT for RTX (CUDA 13); the others per CUDA major.
CUDA_EXTRA = "rtx"
CUDA_EXTRAS_BY_MAJOR = {12: ("rtx-cu12", "trt-cu12"), 13: ("rtx", "trt-cu13")}
# Oldest driver branch of each CUDA major (NVIDIA's CUDA release notes, minor-version compatibility).
DRIVER_BRANCH_BY_MAJOR = {12: "R525", 13: "R580"}
# What CUDA's version integers encode: 1000 * major + 10 * minor (12040 is CUDA 12.4).
_CUDA_VERSION_MAJOR = 1000
_CUDA_VERSION_MINOR = 10
# Alignment of what cudaMalloc returns, and what TensorRT asks of the memory it is given.
DEVICE_ALIGNMENT_BYTES = 256


def load_cudart() -> ModuleType:
    """cuda-python's runtime module, or MissingDependency naming the pip extra."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        others = ", ".join(f"'{extra}'" for extras in CUDA_EXTRAS_BY_MAJOR.values() for extra in extras if extra != CUDA_EXTRA)
        raise MissingDependency(
            "cuda-bindings (module cuda.bindings)", CUDA_EXTRA, f"or {others} to match the host's CUDA driver; {exc}"
        ) from None
    return runtime


def native_handle(handle: Any) -> int:
    """The address behind a cuda-python handle (a stream, a graph) as an int, what TensorRT takes.

    `int(handle)` is deprecated since cuda-bindings 12.9.1 in favour of
    `cuda.bindings.utils.get_cuda_native_handle`; older 12.x bindings only have `int()`.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(handle)
    return int(get_cuda_native_handle(handle))


def _cuda_version_text(version: int) -> str:
    return f"{version // _CUDA_VERSION_MAJOR}.{version % _CUDA_VERSION_MAJOR // _CUDA_VERSION_MINOR}"


def cuda_driver_mismatch(cudart: ModuleType) -> str | None:
    """Why the installed cuda-bindings cannot run on this driver (its CUDA major is newer than the
    driver's), naming the driver and the extra to install; None when they fit or there is no driver."""
    error, driver = cudart.cudaDriverGetVersion()
    if error != cudart.cudaError_t.cudaSuccess or driver == 0:
        return None  # no driver at all: cuda_unavailable_reason says so in CUDA's words
    error, runtime = cudart.cudaRuntimeGetVersion()
    if error != cudart.cudaError_t.cudaSuccess:
        return None
    driver_major, runtime_major = driver // _CUDA_VERSION_MAJOR, runtime // _CUDA_VERSION_MAJOR
    if driver_major >= runtime_major:
        return None
    branch = DRIVER_BRANCH_BY_MAJOR.get(runtime_major, f"CUDA {runtime_major}")
    fix = CUDA_EXTRAS_BY_MAJOR.get(driver_major)
    install = (
        f"install the CUDA {driver_major} build instead (pip install '.[{fix[0]}]' for TensorRT for RTX, "
        f"'.[{fix[1]}]' for full TensorRT)"
        if fix
        else f"install a cuda-bindings release for CUDA {driver_major}"
    )
    return (
        f"cuda-bindings {_cuda_version_text(runtime)} needs an NVIDIA driver for CUDA {runtime_major} "
        f"({branch} or newer), but this driver supports CUDA {_cuda_version_text(driver)}; {install}, "
        f"or update the driver"
    )


def _error_text(cudart: ModuleType, error: Any) -> str:
    status, text = cudart.cudaGetErrorString(error)
    return text.decode() if isinstance(text, bytes) else str(text)


def cuda_call(cudart: ModuleType, what: str, result: Any) -> Any:
    """Unpack a cuda-python result tuple `(error, *values)`; OmcError naming `what` on failure.

    Returns None, the single value, or a tuple of values.
    """
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise OmcError(f"CUDA {what} failed: {_error_text(cudart, error)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_unavailable_reason(device: int) -> str | None:
    """Why `device` cannot be used (no cuda-python, no driver, a driver too old for the installed
    cuda-bindings, no GPU, index too high), or None."""
    try:
        cudart = load_cudart()
    except MissingDependency as exc:
        return str(exc)
    mismatch = cuda_driver_mismatch(cudart)
    if mismatch is not None:
        return mismatch
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess:
        return f"no usable CUDA GPU or driver ({_error_text(cudart, error)})"
    if not 0 <= device < count:
        return f"CUDA device {device} does not exist ({count} device(s) found)"
    return None


def device_compute_capability(device: int) -> tuple[int, int] | None:
    """(major, minor) of `device`, or None when it cannot be read (no GPU, no cuda-python)."""
    if cuda_unavailable_reason(device) is not None:
        return None
    cudart = load_cudart()
    attrs = cudart.cudaDeviceAttr
    major = cuda_call(cudart, "reading the compute capability", cudart.cudaDeviceGetAttribute(attrs.cudaDevAttrComputeCapabilityMajor, device))
    minor = cuda_call(cudart, "reading the compute capability", cudart.cudaDeviceGetAttribute(attrs.cudaDevAttrComputeCapabilityMinor, device))
    return int(major), int(minor)


class CudaSession:
    """One GPU and one CUDA stream, shared by the backends of an engine pair.

    Sharing the stream orders the detector's work before the re-check's reads of the detector's
    device buffers without any event or host synchronisation. `acquire()` / `release()` count
    users: the stream is created by the first and destroyed by the last. Every method that talks
    to the GPU makes the session's device current for the calling thread first.
    """

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._cudart: ModuleType | None = None
        self._stream: Any = None
        self._users = 0

    @property
    def cudart(self) -> ModuleType:
        if self._cudart is None:
            raise OmcError("the CUDA session is not open; activate the backend first")
        return self._cudart

    @property
    def stream(self) -> int:
        """The stream handle as TensorRT takes it."""
        if self._stream is None:
            raise OmcError("the CUDA session is not open; activate the backend first")
        return native_handle(self._stream)

    def use_device(self) -> None:
        """Check that this session's GPU is usable and make it current (before TensorRT allocates)."""
        reason = cuda_unavailable_reason(self.device)
        if reason is not None:
            raise OmcError(f"cannot use CUDA device {self.device}: {reason}")
        cudart = load_cudart()
        cuda_call(cudart, f"selecting device {self.device}", cudart.cudaSetDevice(self.device))

    def make_current(self) -> None:
        """Make this session's GPU current for the calling thread (cheap; CUDA's current device is
        per thread, so every call that allocates, copies or enqueues needs it)."""
        cudart = self.cudart
        cuda_call(cudart, f"selecting device {self.device}", cudart.cudaSetDevice(self.device))

    def acquire(self) -> None:
        if self._users == 0:
            self.use_device()
            cudart = load_cudart()
            self._stream = cuda_call(cudart, "creating a stream", cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
            self._cudart = cudart
        self._users += 1

    def release(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0 and self._cudart is not None:
            cudart = self._cudart
            self.make_current()
            cuda_call(cudart, "destroying the stream", cudart.cudaStreamDestroy(self._stream))
            self._stream = None
            self._cudart = None

    def synchronize(self) -> None:
        self.make_current()
        cuda_call(self.cudart, "waiting for the stream", self.cudart.cudaStreamSynchronize(self._stream))

    def copy_async(self, destination: int, source: int, nbytes: int, kind: str) -> None:
        """Enqueue a copy of `nbytes` on the stream; kind "h2d", "d2h" or "d2d".

        Does not change the current device: it runs inside captures and enqueues whose caller has
        made the session current."""
        kinds = self.cudart.cudaMemcpyKind
        flag = {
            "h2d": kinds.cudaMemcpyHostToDevice,
            "d2h": kinds.cudaMemcpyDeviceToHost,
            "d2d": kinds.cudaMemcpyDeviceToDevice,
        }[kind]
        cuda_call(self.cudart, f"copying {nbytes} bytes ({kind})", self.cudart.cudaMemcpyAsync(destination, source, nbytes, flag, self._stream))


class DeviceBuffer:
    """`nbytes` of device memory, allocated once; `ptr` is its address."""

    def __init__(self, session: CudaSession, nbytes: int) -> None:
        self.session = session
        self.nbytes = nbytes
        cudart = session.cudart
        session.make_current()
        self.ptr: int = int(cuda_call(cudart, f"allocating {nbytes} bytes on the GPU", cudart.cudaMalloc(max(nbytes, 1))))

    def upload(self, array: np.ndarray) -> None:
        """Enqueue a copy of `array` (C-contiguous, at most nbytes) into this buffer."""
        if array.nbytes > self.nbytes:
            raise OmcError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer")
        self.session.copy_async(self.ptr, array.ctypes.data, array.nbytes, "h2d")

    def close(self) -> None:
        if self.ptr:
            self.session.make_current()
            cuda_call(self.session.cudart, "freeing GPU memory", self.session.cudart.cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """`nbytes` of page-locked host memory, allocated once, seen from NumPy via `view()`."""

    def __init__(self, session: CudaSession, nbytes: int) -> None:
        self.session = session
        self.nbytes = nbytes
        cudart = session.cudart
        session.make_current()
        self.ptr: int = int(cuda_call(cudart, f"allocating {nbytes} bytes of pinned host memory", cudart.cudaMallocHost(max(nbytes, 1))))
        self._bytes: np.ndarray = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(self.ptr))[:nbytes]

    def view(self, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """The leading bytes as an array of `shape` and `dtype` (no copy)."""
        count = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return self._bytes[:count].view(dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self._bytes = np.empty(0, np.uint8)
            cuda_call(self.session.cudart, "freeing pinned memory", self.session.cudart.cudaFreeHost(self.ptr))
            self.ptr = 0


class DeviceArray(FixedShape):
    """A DeviceTensor (runtime/backends/base.py): an engine output left in a device buffer.

    buffer: the device buffer it lives in.  shape / dtype: of the array.  offset: bytes from the
    buffer's start (non-zero for one batch item of a batched output, see `batch_item`).
    Valid until the backend that produced it runs again or is deactivated. `np.asarray(handle)`
    copies it to the host (and waits for the stream). `session` tells a re-check backend whether
    the pointer lives on its own GPU and stream, so it can bind it without a copy.
    """

    def __init__(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype: str | np.dtype, offset: int = 0) -> None:
        super().__init__(shape, dtype)
        self.buffer = buffer
        self.session = buffer.session
        self.offset = int(offset)
        if self.offset < 0 or self.offset + self.nbytes > buffer.nbytes:
            raise OmcError(
                f"a {self.nbytes}-byte array at offset {self.offset} does not fit its {buffer.nbytes}-byte device buffer"
            )

    @property
    def ptr(self) -> int:
        return self.buffer.ptr + self.offset

    @property
    def nbytes(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) * self._dtype.itemsize

    def batch_item(self, index: int) -> "DeviceArray":
        """Batch item `index` of this [B, ...] array as a [1, ...] view: the same device buffer at
        `offset + index * item bytes`, no copy. Valid exactly as long as this array.

        IndexError unless 0 <= index < B."""
        if not self._shape or not 0 <= index < self._shape[0]:
            raise IndexError(f"batch item {index} of a device array of shape {list(self._shape)}")
        item_nbytes = self.nbytes // self._shape[0]
        return DeviceArray(self.buffer, (1, *self._shape[1:]), self._dtype, self.offset + index * item_nbytes)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = np.empty(self._shape, self._dtype)
        self.session.make_current()
        self.session.copy_async(host.ctypes.data, self.ptr, self.nbytes, "d2h")
        self.session.synchronize()
        return host if dtype is None else host.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return (
            f"DeviceArray(shape={self._shape}, dtype={self._dtype}, device={self.session.device}, offset={self.offset})"
        )


class CudaGraph:
    """A CUDA graph captured from the work enqueued on a session's stream between `begin` and `end`.

    The caller makes the session current before `begin` (capture is per thread and per device).
    """

    def __init__(self, session: CudaSession) -> None:
        self.session = session
        self._graph: Any = None
        self._exec: Any = None

    def begin(self) -> None:
        cudart = self.session.cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(cudart, "starting stream capture", cudart.cudaStreamBeginCapture(self.session.stream, mode))

    def end(self) -> None:
        cudart = self.session.cudart
        self._graph = cuda_call(cudart, "ending stream capture", cudart.cudaStreamEndCapture(self.session.stream))
        self._exec = cuda_call(cudart, "instantiating the CUDA graph", cudart.cudaGraphInstantiate(self._graph, 0))

    def launch(self) -> None:
        self.session.make_current()
        cuda_call(self.session.cudart, "launching the CUDA graph", self.session.cudart.cudaGraphLaunch(self._exec, self.session.stream))

    def close(self) -> None:
        cudart = self.session.cudart
        self.session.make_current()
        if self._exec is not None:
            cuda_call(cudart, "freeing the CUDA graph", cudart.cudaGraphExecDestroy(self._exec))
            self._exec = None
        if self._graph is not None:
            cuda_call(cudart, "freeing the CUDA graph", cudart.cudaGraphDestroy(self._graph))
            self._graph = None
