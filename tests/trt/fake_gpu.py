"""A fake GPU for the TensorRT backend's tests: cuda-python's runtime module and a TensorRT edition.

No GPU is available to CI, so the code paths that only run on one (activation, buffers, CUDA
graphs, batch slicing, device selection per thread, runtime config) run here against stand-ins
that keep the real semantics the backend depends on:

- `FakeCudart` (installed as `cuda.bindings.runtime`): every call returns cuda-python's
  `(error, *values)` tuples; memory is real host memory at 256-byte aligned addresses, so copies
  move real bytes; the current device is per thread (as CUDA's is); a stream belongs to the device
  current when it was made; work enqueued on a capturing stream goes into the graph instead of
  running, and a graph launch runs it again. `log` records what happened, in order.
- `fake_tensorrt(...)` (installed as `tensorrt_rtx` or `tensorrt`): Runtime, engine, execution
  context and, for the rtx edition, the runtime config, runtime cache and engine validity.
  `execute_async_v3` refuses a stream whose device is not current (TensorRT would fail), and
  enqueues a kernel that reads its inputs and writes its outputs through the bound addresses
  with the shapes set at enqueue time. Like TensorRT, an enqueue also pushes the context's shapes
  to its per-context state outside the stream (`FakeContext.pushed`), which a graph replay does
  not redo: when a kernel runs from a graph while its context's pushed shapes are another call's,
  it is recorded in `FakeEngine.stale_replays`.

Kernels (v = first byte of frame b, n = tracklet rows): the detector fills frame b of every output
with v plus a per-output offset (MAP_OFFSETS; compact outputs get v); the re-check checks that its
three map inputs are single frames (one value each) and fills every output with
id_embeddings' value + n.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from omc import contract
from omc.contract import EngineMeta, TensorSpec
from omc.runtime.backends.engine_header import EngineHeader, plan_sha256, write_header

ALIGNMENT = 256
RTX_VERSION = "1.7.1.116"
TENSORRT_VERSION = "10.13.0.35"
MAP_OFFSETS = {contract.ID_EMBEDDINGS: 0.0, contract.RECHECK_FEATURES: 1000.0, contract.RECHECK_BOXES: 2000.0}
PLAN_BYTES = {"detector": b"fake detector plan", "recheck": b"fake recheck plan"}


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35
    cudaErrorInvalidDevice = 101


@dataclass
class FakeStream:
    handle: int
    device: int
    capture: list[tuple[str, Callable[[], None]]] | None = None


@dataclass
class FakeGraph:
    ops: list[tuple[str, Callable[[], None]]]


class FakeCudart:
    """cuda.bindings.runtime over host memory; `devices` are the GPUs' compute capabilities."""

    cudaError_t = CudaError
    cudaStreamNonBlocking = 1

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeThreadLocal = 1

    class cudaDeviceAttr(enum.IntEnum):
        cudaDevAttrComputeCapabilityMajor = 75
        cudaDevAttrComputeCapabilityMinor = 76

    def __init__(self, devices: tuple[tuple[int, int], ...] = ((8, 6),), driver: int = 13000, runtime: int = 13040) -> None:
        self.devices = devices
        self.driver = driver
        self.runtime = runtime
        self.log: list[tuple[Any, ...]] = []
        self.blocks: dict[int, tuple[Any, int, int | None]] = {}  # address -> (keep-alive, bytes, device or None for host)
        self.streams: dict[int, FakeStream] = {}
        self._local = threading.local()
        self._next_handle = 1

    # --- helpers for tests and fakes ---------------------------------------------------------

    @property
    def current(self) -> int:
        return getattr(self._local, "device", 0)

    def device_of(self, address: int) -> int | None:
        for base, (_, nbytes, device) in self.blocks.items():
            if base <= address < base + nbytes:
                return device
        raise AssertionError(f"address {address:#x} was never allocated")

    def enqueue(self, stream_handle: int, what: str, op: Callable[[], None]) -> None:
        """Run `op` on the stream, or record it when the stream is being captured."""
        stream = self.streams[int(stream_handle)]
        if stream.capture is not None:
            stream.capture.append((what, op))
            self.log.append(("captured", what))
        else:
            self.log.append(("ran", what))
            op()

    def _allocate(self, nbytes: int, device: int | None) -> int:
        raw = ctypes.create_string_buffer(nbytes + ALIGNMENT)
        address = (ctypes.addressof(raw) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        self.blocks[address] = (raw, nbytes, device)
        return address

    # --- the cuda-python API the memory layer uses -------------------------------------------

    def cudaGetErrorString(self, error: CudaError) -> tuple[CudaError, bytes]:
        return CudaError.cudaSuccess, CudaError(error).name.encode()

    def cudaDriverGetVersion(self) -> tuple[CudaError, int]:
        return CudaError.cudaSuccess, self.driver

    def cudaRuntimeGetVersion(self) -> tuple[CudaError, int]:
        return CudaError.cudaSuccess, self.runtime

    def cudaGetDeviceCount(self) -> tuple[CudaError, int]:
        if self.driver == 0:
            return CudaError.cudaErrorInsufficientDriver, 0
        return CudaError.cudaSuccess, len(self.devices)

    def cudaDeviceGetAttribute(self, attribute: Any, device: int) -> tuple[CudaError, int]:
        major, minor = self.devices[device]
        return CudaError.cudaSuccess, major if attribute == self.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor else minor

    def cudaSetDevice(self, device: int) -> tuple[CudaError]:
        if not 0 <= device < len(self.devices):
            return (CudaError.cudaErrorInvalidDevice,)
        self._local.device = device
        return (CudaError.cudaSuccess,)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[CudaError, int]:
        handle = self._next_handle
        self._next_handle += 1
        self.streams[handle] = FakeStream(handle, self.current)
        self.log.append(("stream", handle, self.current))
        return CudaError.cudaSuccess, handle

    def cudaStreamDestroy(self, stream: int) -> tuple[CudaError]:
        del self.streams[int(stream)]
        return (CudaError.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[CudaError]:
        return (CudaError.cudaSuccess,)

    def cudaMalloc(self, nbytes: int) -> tuple[CudaError, int]:
        address = self._allocate(nbytes, self.current)
        self.log.append(("malloc", self.current, nbytes))
        return CudaError.cudaSuccess, address

    def cudaMallocHost(self, nbytes: int) -> tuple[CudaError, int]:
        return CudaError.cudaSuccess, self._allocate(nbytes, None)

    def cudaFree(self, address: int) -> tuple[CudaError]:
        del self.blocks[address]
        return (CudaError.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, destination: int, source: int, nbytes: int, kind: Any, stream: int) -> tuple[CudaError]:
        name = {1: "h2d", 2: "d2h", 3: "d2d"}[int(kind)]
        self.enqueue(stream, f"copy {name} {nbytes}", lambda: ctypes.memmove(destination, source, nbytes))
        return (CudaError.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream: int, mode: Any) -> tuple[CudaError]:
        self.streams[int(stream)].capture = []
        self.log.append(("begin capture", int(stream)))
        return (CudaError.cudaSuccess,)

    def cudaStreamEndCapture(self, stream: int) -> tuple[CudaError, FakeGraph]:
        fake = self.streams[int(stream)]
        ops, fake.capture = fake.capture or [], None
        self.log.append(("end capture", int(stream)))
        return CudaError.cudaSuccess, FakeGraph(ops)

    def cudaGraphInstantiate(self, graph: FakeGraph, flags: int) -> tuple[CudaError, FakeGraph]:
        return CudaError.cudaSuccess, FakeGraph(list(graph.ops))

    def cudaGraphLaunch(self, graph: FakeGraph, stream: int) -> tuple[CudaError]:
        self.log.append(("launch graph", len(graph.ops)))
        for _, op in graph.ops:
            op()
        return (CudaError.cudaSuccess,)

    def cudaGraphExecDestroy(self, graph: FakeGraph) -> tuple[CudaError]:
        return (CudaError.cudaSuccess,)

    cudaGraphDestroy = cudaGraphExecDestroy


def install_cudart(monkeypatch: pytest.MonkeyPatch, cudart: FakeCudart) -> FakeCudart:
    """Make `from cuda.bindings import runtime` (and `cuda.bindings.utils`) return the fake."""
    package = types.ModuleType("cuda.bindings")
    utils = types.ModuleType("cuda.bindings.utils")
    utils.get_cuda_native_handle = int  # type: ignore[attr-defined]
    package.runtime = cudart  # type: ignore[attr-defined]
    package.utils = utils  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    return cudart


# --- TensorRT ----------------------------------------------------------------------------------


def host_view(address: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The bytes at `address` as an array (fake device memory is host memory)."""
    count = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * max(count, 1)).from_address(address))[:count]
    return raw.view(dtype).reshape(shape)


@dataclass
class FakeEngine:
    """One engine of the contract: its tensors from export.json, kernels as described above."""

    module: Any
    cudart: FakeCudart
    meta: EngineMeta
    kind: str
    contexts: list["FakeContext"] = field(default_factory=list)
    stale_replays: list[str] = field(default_factory=list)
    runtime_configs: list["FakeRuntimeConfig"] = field(default_factory=list)
    device_memory_size_v2: int = 4096

    def __post_init__(self) -> None:
        if self.kind == "detector":
            self.inputs, self.outputs = self.meta.detector_inputs(), self.meta.detector_outputs()
        else:
            self.inputs, self.outputs = self.meta.recheck_inputs(), self.meta.recheck_outputs()
        self.specs: dict[str, TensorSpec] = {**self.inputs, **self.outputs}
        self.names = list(self.specs)
        self.largest = {contract.BATCH_AXIS: self.meta.max_batch, contract.TRACKLET_AXIS: self.meta.max_tracklets}

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> Any:
        return self.module.TensorIOMode.INPUT if name in self.inputs else self.module.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return np.dtype(self.specs[name].dtype)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(-1 if isinstance(dim, str) else dim for dim in self.specs[name].shape)

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        spec = self.specs[name]
        low = tuple(1 if isinstance(dim, str) else dim for dim in spec.shape)
        high = tuple(self.largest[dim] if isinstance(dim, str) else dim for dim in spec.shape)
        return low, low, high

    def create_execution_context(self, setting: Any = None) -> "FakeContext":
        context = FakeContext(self, self.cudart.current, setting)
        self.contexts.append(context)
        return context

    def create_runtime_config(self) -> "FakeRuntimeConfig":
        config = FakeRuntimeConfig(self.module)
        self.runtime_configs.append(config)
        return config

    def run(self, context: "FakeContext", shapes: dict[str, tuple[int, ...]], addresses: dict[str, int]) -> None:
        """The kernel: what the enqueue captured (shapes, addresses) is what it computes with."""
        if context.pushed != shapes:
            self.stale_replays.append(f"context {self.contexts.index(context)} ran {shapes} with {context.pushed} pushed")
        outputs = {name: _concrete(spec, shapes) for name, spec in self.outputs.items()}
        if self.kind == "detector":
            images = host_view(addresses[contract.IMAGES], np.uint8, shapes[contract.IMAGES])
            for name, shape in outputs.items():
                values = images[:, 0, 0, 0].astype(np.float32) + MAP_OFFSETS.get(name, 0.0)
                target = host_view(addresses[name], self.specs[name].dtype, shape)
                target[...] = values.reshape((-1,) + (1,) * (len(shape) - 1))
            return
        firsts = {}
        for name in MAP_OFFSETS:
            frame = host_view(addresses[name], np.float32, shapes[name])
            if frame.shape[0] != 1 or frame.min() != frame.max():
                raise AssertionError(f"the re-check got '{name}' that is not one frame: {frame.shape}")
            firsts[name] = float(frame.flat[0])
        n = shapes[contract.TRACKLETS][0]
        for name, shape in outputs.items():
            host_view(addresses[name], self.specs[name].dtype, shape)[...] = firsts[contract.ID_EMBEDDINGS] + n


def _concrete(spec: TensorSpec, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    sizes = {}
    for name, shape in shapes.items():
        for dim, size in zip(_spec_dims(name), shape):
            if isinstance(dim, str):
                sizes[dim] = size
    return tuple(sizes.get(dim, 1) if isinstance(dim, str) else dim for dim in spec.shape)


def _spec_dims(name: str) -> tuple[Any, ...]:
    return {
        contract.IMAGES: (contract.BATCH_AXIS,),
        contract.TRACKLETS: (contract.TRACKLET_AXIS,),
    }.get(name, ())


@dataclass
class FakeContext:
    engine: FakeEngine
    device: int
    setting: Any
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    addresses: dict[str, int] = field(default_factory=dict)
    pushed: dict[str, tuple[int, ...]] = field(default_factory=dict)
    device_memory: tuple[int, int] | None = None

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(low) or any(not lo <= size <= hi for lo, size, hi in zip(low, shape, high)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return _concrete(self.engine.specs[name], self.shapes)

    def set_device_memory(self, address: int, nbytes: int) -> None:
        self.device_memory = (address, nbytes)

    def execute_async_v3(self, stream: int) -> bool:
        cudart = self.engine.cudart
        if cudart.current != self.device or cudart.streams[int(stream)].device != self.device:
            cudart.log.append(("wrong device", cudart.current, self.device))
            return False
        shapes, addresses = dict(self.shapes), dict(self.addresses)
        self.pushed = shapes
        index = self.engine.contexts.index(self)
        cudart.enqueue(stream, f"{self.engine.kind} context {index} {shapes}", lambda: self.engine.run(self, shapes, addresses))
        return True


@dataclass
class FakeRuntimeCache:
    """Serialises to b"fake-cache:" + what it loaded; refuses blobs without that prefix."""

    loaded: bytes = b""

    def deserialize(self, blob: bytes) -> bool:
        if not bytes(blob).startswith(b"fake-cache:"):
            return False
        self.loaded = bytes(blob)
        return True

    def serialize(self) -> bytes:
        return self.loaded or b"fake-cache:kernels"


@dataclass
class FakeRuntimeConfig:
    module: Any
    cuda_graph_strategy: Any = None
    dynamic_shapes_kernel_specialization_strategy: Any = None
    cache: FakeRuntimeCache | None = None

    def create_runtime_cache(self) -> FakeRuntimeCache:
        return FakeRuntimeCache()

    def set_runtime_cache(self, cache: FakeRuntimeCache) -> bool:
        self.cache = cache
        return True


class EngineValidity(enum.IntEnum):
    VALID = 0
    SUBOPTIMAL = 1
    INVALID = 2


class EngineInvalidityDiagnostics(enum.IntEnum):
    VERSION_MISMATCH = 1
    UNSUPPORTED_CC = 2
    OLD_CUDA_DRIVER = 4
    OLD_CUDA_RUNTIME = 8
    INSUFFICIENT_GPU_MEMORY = 16
    MALFORMED_ENGINE = 32
    CUDA_ERROR = 64


def fake_tensorrt(edition: str, cudart: FakeCudart, meta: EngineMeta) -> types.ModuleType:
    """A TensorRT module of `edition` ("rtx" or "tensorrt") whose engines run on `cudart`.

    `module.engines` collects the deserialised engines; `module.validity` is what the rtx
    edition's `Runtime.get_engine_validity` answers, (EngineValidity, diagnostics bits).
    """
    module = types.ModuleType("tensorrt_rtx" if edition == "rtx" else "tensorrt")
    module.__version__ = RTX_VERSION if edition == "rtx" else TENSORRT_VERSION  # type: ignore[attr-defined]
    module.engines = []  # type: ignore[attr-defined]
    module.validity = (EngineValidity.VALID, 0)  # type: ignore[attr-defined]

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine:
            kind = next(name for name, content in PLAN_BYTES.items() if content == bytes(plan))
            engine = FakeEngine(module, cudart, meta, kind)
            module.engines.append(engine)  # type: ignore[attr-defined]
            return engine

    if edition == "rtx":

        def get_engine_validity(self: Any, plan: bytes) -> tuple[EngineValidity, int]:
            return module.validity  # type: ignore[no-any-return]

        Runtime.get_engine_validity = get_engine_validity  # type: ignore[attr-defined]
        module.EngineValidity = EngineValidity  # type: ignore[attr-defined]
        module.EngineInvalidityDiagnostics = EngineInvalidityDiagnostics  # type: ignore[attr-defined]
        module.CudaGraphStrategy = enum.Enum("CudaGraphStrategy", "DISABLED WHOLE_GRAPH_CAPTURE")  # type: ignore[attr-defined]
        module.DynamicShapesKernelSpecializationStrategy = enum.Enum(  # type: ignore[attr-defined]
            "DynamicShapesKernelSpecializationStrategy", "LAZY EAGER NONE"
        )

    module.Builder = type("Builder", (), {})  # type: ignore[attr-defined]
    module.ILogger = ILogger  # type: ignore[attr-defined]
    module.Runtime = Runtime  # type: ignore[attr-defined]
    module.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")  # type: ignore[attr-defined]
    module.ExecutionContextAllocationStrategy = enum.Enum(  # type: ignore[attr-defined]
        "ExecutionContextAllocationStrategy", "STATIC ON_PROFILE_CHANGE USER_MANAGED"
    )
    module.nptype = lambda dtype: dtype  # type: ignore[attr-defined]
    return module


def write_fake_engines(folder: Path, meta: EngineMeta, edition: str, gpu_targets: tuple[str, ...], portable: bool = False) -> Path:
    """export.json and both fake plans with their sidecars, as `omc build` would leave them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / contract.EXPORT_JSON).write_text(meta.to_json())
    for engine, name in (("detector", contract.DETECTOR_PLAN), ("recheck", contract.RECHECK_PLAN)):
        plan = PLAN_BYTES[engine]
        (folder / name).write_bytes(plan)
        header = EngineHeader(
            engine=engine,
            edition=edition,
            tensorrt_version=RTX_VERSION if edition == "rtx" else TENSORRT_VERSION,
            gpu_targets=gpu_targets,
            portable=portable,
            plan_sha256=plan_sha256(plan),
            plan_bytes=len(plan),
            profiles={},
            export=json.loads(meta.to_json()),
            onnx_dir=str(folder),
            omc_version="test",
        )
        write_header(folder / name, header)
    return folder


@dataclass
class FakeGpu:
    """What a test gets: the fake CUDA runtime, the fake TensorRT module, the engine folder."""

    cudart: FakeCudart
    tensorrt: Any
    engines: Path
    meta: EngineMeta


def install_fake_gpu(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    meta: EngineMeta,
    edition: str = "rtx",
    devices: tuple[tuple[int, int], ...] = ((8, 6),),
    driver: int = 13000,
    gpu_targets: tuple[str, ...] = ("SM86",),
    portable: bool = False,
) -> FakeGpu:
    """Install a fake cuda-python and a fake TensorRT `edition`, and write fake engines to `folder`."""
    cudart = install_cudart(monkeypatch, FakeCudart(devices, driver))
    module = fake_tensorrt(edition, cudart, meta)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return FakeGpu(cudart, module, write_fake_engines(folder, meta, edition, gpu_targets, portable), meta)
