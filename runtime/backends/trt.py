"""TensorRT backend: runs `detector.plan` and `recheck.plan` with either TensorRT edition.

Two editions share one Python API (export-and-tensorrt-notes.md): NVIDIA TensorRT
(`import tensorrt`: data-centre GPUs, Jetson) and TensorRT for RTX (`import tensorrt_rtx`:
RTX-class GPUs). This module imports whichever the engine's sidecar names, and uses the names
both editions have: `Runtime`, `deserialize_cuda_engine`, `create_execution_context`, the
name-based tensor API (`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`,
`get_tensor_dtype`, `get_tensor_profile_shape`, `set_input_shape`, `set_tensor_address`,
`get_tensor_shape`), `execute_async_v3` and `device_memory_size_v2` (TensorRT for RTX has no
`device_memory_size`). No bindings API, no version branches. Type-checked against the full
TensorRT API (tensorrt-stubs): objects are annotated with `tensorrt` types while the module
object itself is whichever edition is installed. What only one edition has lives in one place
each: TensorRT for RTX's runtime config (`_RtxRuntime`: kernel strategy, runtime cache, built-in
CUDA graphs) and its `Runtime.get_engine_validity`; full TensorRT's own graph capture.

How a call runs (runtime/backends/binding_plan.py decides every buffer, from export.json):
one CUDA stream per engine pair; device buffers sized once from the profiles' largest shapes;
host inputs copied in; compact outputs (det_*, trans_*) copied to pinned host buffers and
returned as NumPy views of them; maps returned as `DeviceArray` handles that stay on the GPU.
The re-check backend of the same pair binds the detector's map handles directly as its inputs,
whole ([1, ...] after a one-frame call) or one frame of a batch (`base.batch_item`, a view at a
byte offset); only `tracklets` comes from the host. With no tracklets the tracker skips the
re-check (its profile starts at n = 1). Every call makes the session's GPU current for the
calling thread, so backends on two GPUs, or calls from worker threads, stay on their own GPU.

CUDA graphs (`cuda_graph=True`, the detector only):
- TensorRT for RTX: its runtime config's built-in strategy (whole-graph capture), which captures
  each input shape after the JIT has compiled that shape's specialised kernels; omc never
  captures itself (NVIDIA's route: capturing while kernels may still be compiling would freeze
  the slow generic ones into the graph).
- full TensorRT: omc captures, with one execution context per input shape (a graph replays the
  context state it was captured with; after a call at another shape the one context's state no
  longer matches, and a replay would skip the shape update a normal enqueue pushes). The first
  call of a shape runs normally (lazy set-up), the second is captured, later ones replay. The
  contexts share one activation buffer: they run one after another on the one stream.

Runtime cache (TensorRT for RTX): the kernels compiled on this GPU are kept in
`<plan>.runtime-cache` beside the plan, read at activation and written at deactivation, so the
next process does not compile them again (`TensorRTRuntimeConfig`).

Outputs reuse the same buffers on every call: copy what you keep past the next call. In
particular, a batch's map handles (and their per-frame views) are overwritten by the next
detector call: run every re-check of batch k before the detector runs batch k + 1.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from omc import contract
from omc.config import RTX_GPU_TARGETS, TensorRTRuntimeConfig
from omc.contract import DETECTOR, RECHECK, EngineMeta
from omc.errors import BadInput, EngineMismatch, MissingDependency, OmcError
from omc.files import replacing
from omc.runtime.backends.base import ArrayLike, Backend
from omc.runtime.backends.binding_plan import Binding, Transfer, plan_bindings
from omc.runtime.backends.cuda_memory import (
    DEVICE_ALIGNMENT_BYTES,
    CudaGraph,
    CudaSession,
    DeviceArray,
    DeviceBuffer,
    PinnedBuffer,
    cuda_driver_mismatch,
    cuda_unavailable_reason,
    device_compute_capability,
    load_cudart,
)
from omc.runtime.backends.engine_header import (
    EDITION_RTX,
    EDITION_TENSORRT,
    EDITION_TITLES,
    EngineHeader,
    compute_capability_name,
    load_checked_plan,
    read_header,
    rebuild_command,
)

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

# Python module of each edition, and the pip extra that provides what omc needs around it.
EDITION_MODULES = {EDITION_TENSORRT: "tensorrt", EDITION_RTX: "tensorrt_rtx"}
AUTO_EDITION = "auto"
# "auto" prefers full TensorRT: where both are installed, it is the one built for the host's GPU class.
AUTO_ORDER = (EDITION_TENSORRT, EDITION_RTX)
# TensorRT for RTX's compiled kernels for this GPU, kept beside the plan: `detector.plan.runtime-cache`.
RUNTIME_CACHE_SUFFIX = ".runtime-cache"
# How the detector replays CUDA graphs: not at all, TensorRT for RTX's built-in strategy, or
# omc's own capture (full TensorRT).
GRAPHS_OFF = "off"
GRAPHS_BUILT_IN = "built-in"
GRAPHS_CAPTURED = "captured"


@dataclass(frozen=True)
class TensorRTEdition:
    """An imported TensorRT: name ("tensorrt" or "rtx"), its module, its version string."""

    name: str
    module: Any
    version: str

    @property
    def title(self) -> str:
        return f"{EDITION_TITLES[self.name]} {self.version}"


def _import_edition(name: str) -> TensorRTEdition | None:
    try:
        module = importlib.import_module(EDITION_MODULES[name])
    except ImportError:
        return None
    # tensorrt-stubs (installed for type checking) leaves a `tensorrt` folder of .pyi files that
    # imports as an empty namespace package: only a module with a Builder is TensorRT.
    if not hasattr(module, "Builder"):
        return None
    return TensorRTEdition(name, module, str(module.__version__))


def load_tensorrt(edition: str = AUTO_EDITION) -> TensorRTEdition:
    """Import TensorRT: "tensorrt", "rtx", or "auto" (full TensorRT when importable, else RTX).

    Raises MissingDependency with the pip extra when the edition is not installed.
    """
    if edition == AUTO_EDITION:
        for name in AUTO_ORDER:
            found = _import_edition(name)
            if found is not None:
                return found
        raise MissingDependency("TensorRT (module tensorrt or tensorrt_rtx)", "rtx")
    if edition not in EDITION_MODULES:
        raise BadInput(f"TensorRT edition '{edition}' is not one of {AUTO_EDITION}, {', '.join(EDITION_MODULES)}")
    found = _import_edition(edition)
    if found is not None:
        return found
    if edition == EDITION_RTX:
        raise MissingDependency("TensorRT for RTX (module tensorrt_rtx)", "rtx")
    raise MissingDependency(
        "NVIDIA TensorRT (module tensorrt)",
        "trt-cu13",
        "or 'trt-cu12' on a CUDA 12 driver; TensorRT itself comes from NVIDIA's channels or JetPack; "
        "on RTX GPUs use the rtx edition",
    )


def make_trt_logger(edition: TensorRTEdition) -> Any:
    """The process's TensorRT ILogger for `edition`: forwards to this module's Python logger and
    keeps the last error message in `.last_error` (for the one-line errors omc raises).

    TensorRT keeps the first logger it is given for the whole process and ignores (with a warning)
    any other, so there is exactly one per edition: the only process-wide state omc keeps, forced
    by TensorRT. TensorRT's INFO is chatty (one line per loaded engine), so it goes to DEBUG.
    """
    return _trt_logger(edition.name, edition.module)


@functools.lru_cache(maxsize=None)
def _trt_logger(name: str, module: Any) -> Any:
    base = module.ILogger
    severity = base.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    class ForwardingLogger(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.last_error = ""

        def log(self, level: Any, message: str) -> None:
            python_level = levels.get(level, logging.WARNING)
            if python_level >= logging.ERROR:
                self.last_error = message
            log.log(python_level, "TensorRT: %s", message)

    return ForwardingLogger()


def parse_device(device: int | str) -> int:
    """GPU index from 0, "0", "cuda" or "cuda:1"; BadInput otherwise."""
    if isinstance(device, int) and not isinstance(device, bool):
        index = device
    else:
        text = str(device).strip().lower()
        text = "0" if text in ("cuda", "gpu") else text.removeprefix("cuda:")
        if not text.isdigit():
            raise BadInput(f"device '{device}' must be a GPU index such as 0 or 'cuda:0'")
        index = int(text)
    if index < 0:
        raise BadInput(f"device {device} must be a GPU index of 0 or more")
    return index


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[axis]) for axis in range(len(dims)))


def runtime_cache_path(plan_path: str | Path) -> Path:
    """`detector.plan` -> `detector.plan.runtime-cache` (TensorRT for RTX's compiled kernels)."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + RUNTIME_CACHE_SUFFIX)


@dataclass
class _RtxRuntime:
    """TensorRT for RTX's runtime config of one engine and its runtime cache (None when off)."""

    config: Any  # tensorrt_rtx.IRuntimeConfig: TensorRT for RTX API, absent from the full TensorRT stubs
    cache: Any
    cache_path: Path


@dataclass
class _ShapeContext:
    """An execution context that only ever runs one set of input shapes (full TensorRT's captured
    graphs), with its graph once captured; `warm` after its first, uncaptured run."""

    context: trt.IExecutionContext
    graph: CudaGraph | None = None
    warm: bool = False


@dataclass
class _ActiveEngine:
    """What an active backend holds; created by `_activate`, dropped by `_deactivate`.

    shared_context: the one context of every call, except in captured-graph mode, where each
    input shape has its own in `shape_contexts`, all on the `scratch` activation buffer.
    """

    edition: TensorRTEdition
    header: EngineHeader
    runtime: trt.Runtime
    engine: trt.ICudaEngine
    logger: Any
    graphs: str
    rtx: _RtxRuntime | None = None
    shared_context: trt.IExecutionContext | None = None
    shape_contexts: dict[tuple[tuple[int, ...], ...], _ShapeContext] = field(default_factory=dict)
    scratch: DeviceBuffer | None = None
    device_buffers: dict[str, DeviceBuffer] = field(default_factory=dict)
    pinned_buffers: dict[str, PinnedBuffer] = field(default_factory=dict)


class TensorRTBackend(Backend):
    """Runs one TensorRT engine of the contract ("detector" or "recheck") on one GPU.

    plan_path: `detector.plan` or `recheck.plan` with its `<plan>.json` sidecar.  meta: the
    export.json the engine must have been built from.  session: the CUDA device and stream,
    shared with the other engine of the pair (`open_pair` does this); a new one on `device` when
    None.  edition: "auto" loads the edition the sidecar names, else "tensorrt" or "rtx".
    cuda_graph: replay the detector through CUDA graphs (ignored for the re-check, whose n varies).

    infer() returns NumPy views of pinned buffers for det_* / trans_* and `DeviceArray` handles
    for the maps; both are overwritten by the next call.
    """

    def __init__(
        self,
        plan_path: str | Path,
        meta: EngineMeta,
        engine: str = DETECTOR,
        *,
        session: CudaSession | None = None,
        device: int | str = 0,
        edition: str = AUTO_EDITION,
        cuda_graph: bool = False,
        runtime_config: TensorRTRuntimeConfig = TensorRTRuntimeConfig(),
    ) -> None:
        inputs, outputs = meta.engine_specs(engine)
        super().__init__(f"trt:{engine}", inputs, outputs, meta.axis_limits())
        if edition != AUTO_EDITION and edition not in EDITION_MODULES:
            raise BadInput(f"TensorRT edition '{edition}' is not one of {AUTO_EDITION}, {', '.join(EDITION_MODULES)}")
        self.plan_path = Path(plan_path)
        self.meta = meta
        self.engine = engine
        self.session = session if session is not None else CudaSession(parse_device(device))
        self.requested_edition = edition
        self.cuda_graph = cuda_graph and engine == DETECTOR
        self.runtime_config = runtime_config
        self.bindings: tuple[Binding, ...] = plan_bindings(meta, engine)
        self._active: _ActiveEngine | None = None

    @classmethod
    def open_pair(
        cls,
        engine_dir: str | Path,
        meta: EngineMeta,
        device: int | str = 0,
        *,
        edition: str = AUTO_EDITION,
        cuda_graph: bool = False,
        runtime_config: TensorRTRuntimeConfig = TensorRTRuntimeConfig(),
    ) -> tuple["TensorRTBackend", "TensorRTBackend | None"]:
        """(detector, recheck) backends for the engines in `engine_dir`, sharing one GPU stream.

        recheck is None for an export without the re-check network. Nothing is loaded until
        activate(); missing plans are refused here with the command that builds them.
        """
        engine_dir = Path(engine_dir)
        engines = [DETECTOR, RECHECK] if meta.has_recheck else [DETECTOR]
        for name in (contract.PLAN_FILES[engine] for engine in engines):
            if not (engine_dir / name).is_file():
                raise BadInput(
                    f"{engine_dir / name} not found; build the engines: {rebuild_command(engine_dir / name, edition)}"
                )
        session = CudaSession(parse_device(device))
        detector = cls(
            engine_dir / contract.DETECTOR_PLAN,
            meta,
            DETECTOR,
            session=session,
            edition=edition,
            cuda_graph=cuda_graph,
            runtime_config=runtime_config,
        )
        recheck = (
            cls(
                engine_dir / contract.RECHECK_PLAN,
                meta,
                RECHECK,
                session=session,
                edition=edition,
                runtime_config=runtime_config,
            )
            if meta.has_recheck
            else None
        )
        return detector, recheck

    # --- activation ----------------------------------------------------------------------------

    def _runtime_edition(self, header: EngineHeader) -> TensorRTEdition:
        if self.requested_edition != AUTO_EDITION:
            return load_tensorrt(self.requested_edition)
        # The plan's own edition when it is installed; otherwise whatever is, and the header
        # check then names the mismatch and the command that rebuilds for it.
        found = _import_edition(header.edition) if header.edition in EDITION_MODULES else None
        return found if found is not None else load_tensorrt(AUTO_EDITION)

    def _activate(self) -> None:
        # The sidecar names the edition to load; then everything that can be refused is refused
        # (load_checked_plan) before TensorRT deserialises anything.
        edition = self._runtime_edition(read_header(self.plan_path, self.requested_edition))
        cudart = load_cudart()  # the memory layer: MissingDependency now rather than after loading the plan
        mismatch = cuda_driver_mismatch(cudart)
        if mismatch is not None:
            raise OmcError(mismatch)
        compute_capability = device_compute_capability(self.session.device)
        header, plan = load_checked_plan(self.plan_path, self.meta, edition.name, edition.version, compute_capability)

        logger = make_trt_logger(edition)
        logger.last_error = ""
        runtime: trt.Runtime = edition.module.Runtime(logger)
        no_gpu = cuda_unavailable_reason(self.session.device)
        if no_gpu is None:
            self.session.use_device()
            if edition.name == EDITION_RTX and compute_capability is not None:
                self._check_validity(runtime, plan, edition, header, compute_capability)
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            if no_gpu is not None:
                raise OmcError(
                    f"{edition.title} could not load {self.plan_path.name}: {no_gpu}; TensorRT engines "
                    "need an NVIDIA GPU with its driver (use the ONNX Runtime backend on this machine)"
                )
            raise EngineMismatch(
                f"{edition.title} could not load {self.plan_path.name} ({logger.last_error or 'no reason given'}); "
                f"rebuild it: {rebuild_command(self.plan_path, edition.name, onnx_dir=header.onnx_dir)}"
            )
        self._check_engine_io(engine, edition, header)

        self.session.acquire()
        try:
            active = _ActiveEngine(edition, header, runtime, engine, logger, self._graph_mode(edition))
            self._active = active
            self._allocate(active)
            if edition.name == EDITION_RTX:
                active.rtx = self._open_rtx_runtime(active)
            if active.graphs == GRAPHS_CAPTURED:
                # Shape contexts are made at the first call of each shape, on this one buffer.
                active.scratch = DeviceBuffer(self.session, engine.device_memory_size_v2)
            else:
                active.shared_context = self._new_context(active)
        except BaseException:
            self._release()
            raise
        log.info(
            "%s: %s on GPU %d, %.1f MB of buffers + %.1f MB TensorRT activations%s",
            self.plan_path.name,
            edition.title,
            self.session.device,
            sum(b.nbytes + b.pinned_nbytes for b in self.bindings if b.device_buffer_at_activation) / 1e6,
            engine.device_memory_size_v2 / 1e6,
            {GRAPHS_OFF: "", GRAPHS_BUILT_IN: ", built-in CUDA graphs", GRAPHS_CAPTURED: ", CUDA graphs per input shape"}[
                active.graphs
            ],
        )

    def _graph_mode(self, edition: TensorRTEdition) -> str:
        if not self.cuda_graph:
            return GRAPHS_OFF
        return GRAPHS_BUILT_IN if edition.name == EDITION_RTX else GRAPHS_CAPTURED

    def _check_validity(
        self,
        runtime: trt.Runtime,
        plan: bytes,
        edition: TensorRTEdition,
        header: EngineHeader,
        compute_capability: tuple[int, int],
    ) -> None:
        """Ask TensorRT for RTX whether `plan` runs on this host's GPU and driver (the answer the
        sidecar cannot give for GPUs newer than a portable plan's list); EngineMismatch if not."""
        rtx_runtime: Any = runtime  # get_engine_validity is TensorRT for RTX API
        validity, diagnostics = rtx_runtime.get_engine_validity(plan)
        module = edition.module
        if validity == module.EngineValidity.VALID:
            return
        reasons = [
            name.lower().replace("_", " ")
            for name, flag in module.EngineInvalidityDiagnostics.__members__.items()
            if int(diagnostics) & int(flag)
        ]
        target = compute_capability_name(*compute_capability)
        said = f"{edition.title} reports that {self.plan_path.name} {{}} on this GPU ({target}: {', '.join(reasons) or 'no reason given'})"
        if validity == module.EngineValidity.SUBOPTIMAL:
            log.warning(said.format("runs, but not at its best,") + "; rebuilding it on this host may be faster")
            return
        command = rebuild_command(
            self.plan_path, EDITION_RTX, target if target in RTX_GPU_TARGETS else None, header.onnx_dir
        )
        driver = "update the NVIDIA driver, or " if any("old cuda" in reason for reason in reasons) else ""
        raise EngineMismatch(said.format("cannot run") + f"; {driver}rebuild it: {command}")

    def _open_rtx_runtime(self, active: _ActiveEngine) -> _RtxRuntime:
        """TensorRT for RTX's runtime config: the kernel strategy of this engine, built-in CUDA
        graphs when asked for, and the runtime cache beside the plan (loaded when it fits)."""
        module = active.edition.module
        rtx_engine: Any = active.engine
        config: Any = rtx_engine.create_runtime_config()
        strategy = self.runtime_config.detector_kernels if self.engine == DETECTOR else self.runtime_config.recheck_kernels
        config.dynamic_shapes_kernel_specialization_strategy = getattr(
            module.DynamicShapesKernelSpecializationStrategy, strategy.upper()
        )
        graphs = module.CudaGraphStrategy
        config.cuda_graph_strategy = graphs.WHOLE_GRAPH_CAPTURE if active.graphs == GRAPHS_BUILT_IN else graphs.DISABLED
        path = runtime_cache_path(self.plan_path)
        if not self.runtime_config.runtime_cache:
            return _RtxRuntime(config, None, path)
        cache: Any = config.create_runtime_cache()
        if path.is_file():
            if cache.deserialize(path.read_bytes()):
                log.info("%s: compiled kernels from %s", self.plan_path.name, path.name)
            else:
                # TensorRT for RTX checks the GPU, driver and its own version; another host's cache
                # is refused and replaced at deactivation.
                log.info("%s: %s was made on another GPU, driver or version; compiling anew", self.plan_path.name, path.name)
        if not config.set_runtime_cache(cache):
            raise OmcError(f"{active.edition.title} refused the runtime cache of {self.plan_path.name}")
        return _RtxRuntime(config, cache, path)

    def _save_runtime_cache(self, rtx: _RtxRuntime) -> None:
        if rtx.cache is None:
            return
        data = bytes(memoryview(rtx.cache.serialize()))
        try:
            with replacing(rtx.cache_path) as temporary:
                temporary.write_bytes(data)
        except (OSError, OmcError) as exc:
            # A read-only engine folder costs compile time at the next start, nothing else.
            log.warning("could not keep the runtime cache %s (%s); the next process compiles its kernels again", rtx.cache_path, exc)
            return
        log.info("%s: %.1f MB of compiled kernels kept in %s", self.plan_path.name, len(data) / 1e6, rtx.cache_path.name)

    def _new_context(self, active: _ActiveEngine) -> trt.IExecutionContext:
        """An execution context with every allocated buffer bound (inputs are bound again per call)."""
        engine = active.engine
        context: trt.IExecutionContext | None
        if active.rtx is not None:
            context = engine.create_execution_context(active.rtx.config)
        elif active.scratch is not None:
            context = engine.create_execution_context(active.edition.module.ExecutionContextAllocationStrategy.USER_MANAGED)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise OmcError(
                f"{active.edition.title} could not create an execution context for {self.plan_path.name} "
                f"({active.logger.last_error or 'out of GPU memory?'})"
            )
        if active.scratch is not None and active.rtx is None:
            context.set_device_memory(active.scratch.ptr, active.scratch.nbytes)
        for name, buffer in active.device_buffers.items():
            self._bind(context, name, buffer.ptr)
        return context

    def _check_engine_io(self, engine: trt.ICudaEngine, edition: TensorRTEdition, header: EngineHeader) -> None:
        """EngineMismatch unless the engine's tensors are the contract's names, directions, dtypes
        and largest shapes (so the planned buffers fit)."""
        rebuild = rebuild_command(self.plan_path, edition.name, onnx_dir=header.onnx_dir)
        names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
        expected = {binding.name: binding for binding in self.bindings}
        if sorted(names) != sorted(expected):
            raise EngineMismatch(
                f"{self.plan_path.name} has tensors {sorted(names)}, the contract wants {sorted(expected)}; rebuild it: {rebuild}"
            )
        input_mode = edition.module.TensorIOMode.INPUT
        for name in names:
            binding = expected[name]
            if (engine.get_tensor_mode(name) == input_mode) != binding.is_input:
                raise EngineMismatch(f"{self.plan_path.name}: '{name}' has the wrong direction; rebuild it: {rebuild}")
            dtype = np.dtype(edition.module.nptype(engine.get_tensor_dtype(name)))
            if dtype != np.dtype(binding.dtype):
                raise EngineMismatch(
                    f"{self.plan_path.name}: '{name}' is {dtype}, the contract wants {binding.dtype}; rebuild it: {rebuild}"
                )
            if binding.is_input:
                largest = _dims(engine.get_tensor_profile_shape(name, 0)[2])
            else:
                largest = _dims(engine.get_tensor_shape(name))
                largest = tuple(b if d < 0 else d for d, b in zip(largest, binding.max_shape))
            if largest != binding.max_shape:
                raise EngineMismatch(
                    f"{self.plan_path.name}: '{name}' allows shape {list(largest)}, export.json implies "
                    f"{list(binding.max_shape)}; rebuild it: {rebuild}"
                )

    def _allocate(self, active: _ActiveEngine) -> None:
        for binding in self.bindings:
            if binding.device_buffer_at_activation:
                active.device_buffers[binding.name] = DeviceBuffer(self.session, binding.nbytes)
            if binding.pinned_nbytes:
                active.pinned_buffers[binding.name] = PinnedBuffer(self.session, binding.pinned_nbytes)

    def _bind(self, context: trt.IExecutionContext, name: str, address: int) -> None:
        if not context.set_tensor_address(name, address):
            raise OmcError(f"TensorRT refused the buffer for '{name}' of {self.plan_path.name}")

    # --- inference -----------------------------------------------------------------------------

    def _require_active(self) -> _ActiveEngine:
        if self._active is None:
            raise OmcError(f"backend '{self.name}' is not active; call activate() or use it as a context manager")
        return self._active

    def _input_address(self, active: _ActiveEngine, binding: Binding, value: ArrayLike) -> int:
        if (
            binding.transfer is Transfer.DEVICE_HANDLE_OR_HOST
            and isinstance(value, DeviceArray)
            and value.session is self.session
        ):
            # A handle from this pair's detector is on this GPU and stream: bind it, no copy. A
            # batch item's view starts at an offset; TensorRT is given 256-byte aligned addresses
            # only (what cudaMalloc returns), others are copied on the stream into our own buffer.
            if value.ptr % DEVICE_ALIGNMENT_BYTES == 0:
                return value.ptr
            buffer = self._own_input_buffer(active, binding)
            self.session.copy_async(buffer.ptr, value.ptr, value.nbytes, "d2d")
            return buffer.ptr
        host = np.ascontiguousarray(np.asarray(value))
        buffer = self._own_input_buffer(active, binding)
        buffer.upload(host)
        return buffer.ptr

    def _own_input_buffer(self, active: _ActiveEngine, binding: Binding) -> DeviceBuffer:
        buffer = active.device_buffers.get(binding.name)
        if buffer is None:
            # Re-check map inputs that do not arrive as bindable handles: one buffer, made on first use, kept.
            buffer = DeviceBuffer(self.session, binding.nbytes)
            active.device_buffers[binding.name] = buffer
        return buffer

    def _context_for(self, active: _ActiveEngine, shapes: tuple[tuple[int, ...], ...]) -> trt.IExecutionContext:
        if active.graphs != GRAPHS_CAPTURED:
            if active.shared_context is None:
                raise RuntimeError("the shared execution context is made at activation")  # a bug, not a user error
            return active.shared_context
        shape_context = active.shape_contexts.get(shapes)
        if shape_context is None:
            shape_context = _ShapeContext(self._new_context(active))
            active.shape_contexts[shapes] = shape_context
        return shape_context.context

    def _enqueue(self, active: _ActiveEngine, context: trt.IExecutionContext, output_shapes: Mapping[str, tuple[int, ...]]) -> None:
        if not context.execute_async_v3(self.session.stream):
            raise OmcError(f"TensorRT failed to run {self.plan_path.name} ({active.logger.last_error or 'no reason given'})")
        for binding in self.bindings:
            if binding.transfer is Transfer.DEVICE_TO_PINNED:
                nbytes = int(np.prod(output_shapes[binding.name], dtype=np.int64)) * np.dtype(binding.dtype).itemsize
                self.session.copy_async(
                    active.pinned_buffers[binding.name].ptr, active.device_buffers[binding.name].ptr, nbytes, "d2h"
                )

    def _run(
        self,
        active: _ActiveEngine,
        shapes: tuple[tuple[int, ...], ...],
        context: trt.IExecutionContext,
        output_shapes: Mapping[str, tuple[int, ...]],
    ) -> None:
        if active.graphs != GRAPHS_CAPTURED or not self.cuda_graph:
            self._enqueue(active, context, output_shapes)
            return
        shape_context = active.shape_contexts[shapes]
        if shape_context.graph is not None:
            shape_context.graph.launch()
            return
        if not shape_context.warm:
            self._enqueue(active, context, output_shapes)
            shape_context.warm = True
            return
        graph = CudaGraph(self.session)
        try:
            graph.begin()
            try:
                self._enqueue(active, context, output_shapes)
            finally:
                graph.end()
        except OmcError as exc:
            # Some engines cannot be captured (e.g. data-dependent shapes): run them as they are.
            graph.close()
            self.cuda_graph = False
            log.warning("%s: CUDA graph capture failed (%s); running without CUDA graphs", self.plan_path.name, exc)
            self._enqueue(active, context, output_shapes)
            return
        shape_context.graph = graph
        graph.launch()

    def _infer(self, feeds: Mapping[str, ArrayLike]) -> dict[str, ArrayLike]:
        active = self._require_active()
        # CUDA's current device is per thread: this call may come from another thread or follow
        # a call on another GPU's backend.
        self.session.make_current()
        inputs = [binding for binding in self.bindings if binding.is_input]
        shapes = tuple(tuple(int(size) for size in feeds[binding.name].shape) for binding in inputs)
        context = self._context_for(active, shapes)
        for binding, shape in zip(inputs, shapes):
            self._bind(context, binding.name, self._input_address(active, binding, feeds[binding.name]))
            if not context.set_input_shape(binding.name, shape):
                raise BadInput(f"{self.plan_path.name} does not accept '{binding.name}' of shape {list(shape)}")
        output_shapes = {
            binding.name: _dims(context.get_tensor_shape(binding.name)) for binding in self.bindings if not binding.is_input
        }
        self._run(active, shapes, context, output_shapes)
        self.session.synchronize()
        outputs: dict[str, ArrayLike] = {}
        for binding in self.bindings:
            if binding.is_input:
                continue
            shape = output_shapes[binding.name]
            if binding.transfer is Transfer.DEVICE_TO_PINNED:
                outputs[binding.name] = active.pinned_buffers[binding.name].view(binding.dtype, shape)
            else:
                outputs[binding.name] = DeviceArray(active.device_buffers[binding.name], shape, binding.dtype)
        return outputs

    # --- deactivation --------------------------------------------------------------------------

    def _release(self) -> None:
        active, self._active = self._active, None
        try:
            if active is not None:
                self.session.make_current()
                if active.rtx is not None:
                    self._save_runtime_cache(active.rtx)
                for shape_context in active.shape_contexts.values():
                    if shape_context.graph is not None:
                        shape_context.graph.close()
                # Contexts go before their runtime config and buffers, the engine before its runtime.
                active.shape_contexts.clear()
                active.shared_context = None
                active.rtx = None
                for device_buffer in active.device_buffers.values():
                    device_buffer.close()
                for pinned_buffer in active.pinned_buffers.values():
                    pinned_buffer.close()
                if active.scratch is not None:
                    active.scratch.close()
                del active.engine, active.runtime
        finally:
            self.session.release()

    def _deactivate(self) -> None:
        self._release()
