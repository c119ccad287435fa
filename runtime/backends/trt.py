"""TensorRT backend: runs `detector.plan` and `recheck.plan` with either TensorRT edition.

Two editions share one Python API (export-and-tensorrt-notes.md): NVIDIA TensorRT
(`import tensorrt`: data-centre GPUs, Jetson) and TensorRT for RTX (`import tensorrt_rtx`:
RTX-class GPUs). This module imports whichever the engine's sidecar names, and uses only the
names both editions have: `Runtime`, `deserialize_cuda_engine`, `create_execution_context`, the
name-based tensor API (`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`,
`get_tensor_dtype`, `get_tensor_profile_shape`, `set_input_shape`, `set_tensor_address`,
`get_tensor_shape`), `execute_async_v3` and `device_memory_size_v2` (TensorRT for RTX has no
`device_memory_size`). No bindings API, no version branches. Type-checked against the full
TensorRT API (tensorrt-stubs): objects are annotated with `tensorrt` types while the module
object itself is whichever edition is installed.

How a call runs (runtime/backends/binding_plan.py decides every buffer, from export.json):
one CUDA stream per engine pair; device buffers sized once from the profiles' largest shapes;
host inputs copied in; compact outputs (det_*, trans_*) copied to pinned host buffers and
returned as NumPy views of them; maps returned as `DeviceArray` handles that stay on the GPU.
The re-check backend of the same pair binds the detector's map handles directly as its inputs;
only `tracklets` comes from the host. With no tracklets the tracker skips the re-check (its
profile starts at n = 1). The detector can replay each batch size as a CUDA graph
(`cuda_graph=True`): the first call per shape runs normally (TensorRT finishes lazy set-up and,
for TensorRT for RTX, compiles its kernels), the second is captured, later ones replay.

Outputs reuse the same buffers on every call: copy what you keep past the next call.
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
from omc.contract import EngineMeta
from omc.errors import BadInput, EngineMismatch, MissingDependency, OmcError
from omc.runtime.backends.base import ArrayLike, Backend
from omc.runtime.backends.binding_plan import DETECTOR, ENGINES, RECHECK, Binding, Transfer, plan_bindings
from omc.runtime.backends.cuda_memory import (
    CudaGraph,
    CudaSession,
    DeviceArray,
    DeviceBuffer,
    PinnedBuffer,
    cuda_unavailable_reason,
    device_compute_capability,
    load_cudart,
)
from omc.runtime.backends.engine_header import (
    EDITION_RTX,
    EDITION_TENSORRT,
    EDITION_TITLES,
    EngineHeader,
    check_header,
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
        "trt",
        "TensorRT itself comes from NVIDIA's pip index or JetPack; on RTX GPUs use the rtx edition",
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


@dataclass
class _ActiveEngine:
    """What an active backend holds; created by `_activate`, dropped by `_deactivate`."""

    edition: TensorRTEdition
    header: EngineHeader
    runtime: trt.Runtime
    engine: trt.ICudaEngine
    context: trt.IExecutionContext
    logger: Any
    device_buffers: dict[str, DeviceBuffer] = field(default_factory=dict)
    pinned_buffers: dict[str, PinnedBuffer] = field(default_factory=dict)
    # CUDA graphs by input shapes, and the shapes that ran once (the next run of those is captured).
    graphs: dict[tuple[tuple[int, ...], ...], CudaGraph] = field(default_factory=dict)
    warm_shapes: set[tuple[tuple[int, ...], ...]] = field(default_factory=set)


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
    ) -> None:
        if engine not in ENGINES:
            raise BadInput(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
        if engine == DETECTOR:
            inputs, outputs = meta.detector_inputs(), meta.detector_outputs()
        else:
            inputs, outputs = meta.recheck_inputs(), meta.recheck_outputs()
        super().__init__(f"trt:{engine}", inputs, outputs, meta.axis_limits())
        if edition != AUTO_EDITION and edition not in EDITION_MODULES:
            raise BadInput(f"TensorRT edition '{edition}' is not one of {AUTO_EDITION}, {', '.join(EDITION_MODULES)}")
        self.plan_path = Path(plan_path)
        self.meta = meta
        self.engine = engine
        self.session = session if session is not None else CudaSession(parse_device(device))
        self.requested_edition = edition
        self.cuda_graph = cuda_graph and engine == DETECTOR
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
    ) -> tuple["TensorRTBackend", "TensorRTBackend | None"]:
        """(detector, recheck) backends for the engines in `engine_dir`, sharing one GPU stream.

        recheck is None for an export without the re-check network. Nothing is loaded until
        activate(); missing plans are refused here with the command that builds them.
        """
        engine_dir = Path(engine_dir)
        names = [contract.DETECTOR_PLAN] + ([contract.RECHECK_PLAN] if meta.has_recheck else [])
        for name in names:
            if not (engine_dir / name).is_file():
                raise BadInput(
                    f"{engine_dir / name} not found; build the engines: {rebuild_command(engine_dir / name, edition)}"
                )
        session = CudaSession(parse_device(device))
        detector = cls(
            engine_dir / contract.DETECTOR_PLAN, meta, DETECTOR, session=session, edition=edition, cuda_graph=cuda_graph
        )
        recheck = (
            cls(engine_dir / contract.RECHECK_PLAN, meta, RECHECK, session=session, edition=edition)
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
        header = read_header(self.plan_path, self.requested_edition)
        edition = self._runtime_edition(header)
        load_cudart()  # the memory layer: MissingDependency now rather than after loading the plan
        compute_capability = device_compute_capability(self.session.device)
        plan = self.plan_path.read_bytes()
        # Everything that can be refused is refused here, before TensorRT deserialises anything.
        check_header(header, self.plan_path, plan, self.meta, edition.name, edition.version, compute_capability)

        logger = make_trt_logger(edition)
        logger.last_error = ""
        runtime: trt.Runtime = edition.module.Runtime(logger)
        no_gpu = cuda_unavailable_reason(self.session.device)
        if no_gpu is None:
            self.session.use_device()
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
            context: trt.IExecutionContext | None = engine.create_execution_context()
            if context is None:
                raise OmcError(
                    f"{edition.title} could not create an execution context for {self.plan_path.name} "
                    f"({logger.last_error or 'out of GPU memory?'})"
                )
            active = _ActiveEngine(edition, header, runtime, engine, context, logger)
            self._active = active
            self._allocate(active)
        except BaseException:
            self._release()
            raise
        log.info(
            "%s: %s on GPU %d, %.1f MB of buffers + %.1f MB TensorRT activations",
            self.plan_path.name,
            edition.title,
            self.session.device,
            sum(b.nbytes + b.pinned_nbytes for b in self.bindings if b.device_buffer_at_activation) / 1e6,
            engine.device_memory_size_v2 / 1e6,
        )

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
                buffer = DeviceBuffer(self.session, binding.nbytes)
                active.device_buffers[binding.name] = buffer
                self._bind(active.context, binding.name, buffer.ptr)
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
        # A handle from this pair's detector is on this GPU and stream: bind it, no copy.
        if (
            binding.transfer is Transfer.DEVICE_HANDLE_OR_HOST
            and isinstance(value, DeviceArray)
            and value.session is self.session
        ):
            return value.ptr
        host = np.ascontiguousarray(np.asarray(value))
        buffer = active.device_buffers.get(binding.name)
        if buffer is None:
            # Re-check map inputs sent from the host: one buffer, made on first use, kept.
            buffer = DeviceBuffer(self.session, binding.nbytes)
            active.device_buffers[binding.name] = buffer
        buffer.upload(host)
        return buffer.ptr

    def _enqueue(self, active: _ActiveEngine, output_shapes: Mapping[str, tuple[int, ...]]) -> None:
        if not active.context.execute_async_v3(self.session.stream):
            raise OmcError(f"TensorRT failed to run {self.plan_path.name} ({active.logger.last_error or 'no reason given'})")
        for binding in self.bindings:
            if binding.transfer is Transfer.DEVICE_TO_PINNED:
                nbytes = int(np.prod(output_shapes[binding.name], dtype=np.int64)) * np.dtype(binding.dtype).itemsize
                self.session.copy_async(
                    active.pinned_buffers[binding.name].ptr, active.device_buffers[binding.name].ptr, nbytes, "d2h"
                )

    def _run(self, active: _ActiveEngine, shapes_key: tuple[tuple[int, ...], ...], output_shapes: Mapping[str, tuple[int, ...]]) -> None:
        graph = active.graphs.get(shapes_key)
        if graph is not None:
            graph.launch()
            return
        if not self.cuda_graph or shapes_key not in active.warm_shapes:
            self._enqueue(active, output_shapes)
            active.warm_shapes.add(shapes_key)
            return
        graph = CudaGraph(self.session)
        try:
            graph.begin()
            try:
                self._enqueue(active, output_shapes)
            finally:
                graph.end()
        except OmcError as exc:
            # Some engines cannot be captured (e.g. data-dependent shapes): run them as they are.
            graph.close()
            self.cuda_graph = False
            log.warning("%s: CUDA graph capture failed (%s); running without CUDA graphs", self.plan_path.name, exc)
            self._enqueue(active, output_shapes)
            return
        active.graphs[shapes_key] = graph
        graph.launch()

    def _infer(self, feeds: Mapping[str, ArrayLike]) -> dict[str, ArrayLike]:
        active = self._require_active()
        context = active.context
        shapes = []
        for binding in self.bindings:
            if not binding.is_input:
                continue
            value = feeds[binding.name]
            shape = tuple(int(size) for size in value.shape)
            self._bind(context, binding.name, self._input_address(active, binding, value))
            if not context.set_input_shape(binding.name, shape):
                raise BadInput(f"{self.plan_path.name} does not accept '{binding.name}' of shape {list(shape)}")
            shapes.append(shape)
        output_shapes = {
            binding.name: _dims(context.get_tensor_shape(binding.name)) for binding in self.bindings if not binding.is_input
        }
        self._run(active, tuple(shapes), output_shapes)
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
                for graph in active.graphs.values():
                    graph.close()
                for device_buffer in active.device_buffers.values():
                    device_buffer.close()
                for pinned_buffer in active.pinned_buffers.values():
                    pinned_buffer.close()
                # The context goes before the engine, the engine before its runtime.
                del active.context, active.engine, active.runtime
        finally:
            self.session.release()

    def _deactivate(self) -> None:
        self._release()
