"""ONNX Runtime backend: runs detector.onnx or recheck.onnx on the CPU, CUDA or TensorRT provider.

`OnnxRuntimeBackend` is a `Backend` (activate / infer / deactivate, feeds checked against the
engine contract). onnxruntime is imported in `activate()`, so importing this module costs nothing.

Device residency: every call goes through ONNX Runtime's I/O binding. The outputs named in
`device_outputs` (for the detector, the three maps the re-check consumes) come back as
`OrtTensor` handles wrapping the OrtValues ONNX Runtime produced, and an `OrtTensor` fed to
another `OnnxRuntimeBackend` is bound as it is: on CUDA the maps never leave the GPU, on the
CPU they are not copied. `np.asarray(handle)` copies one to a NumPy array when needed. Every
call allocates fresh outputs, so results stay valid after the next call.

At activation the session's inputs, outputs and metadata are checked against export.json;
engines from another export are refused (EngineMismatch) instead of producing wrong tracks.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from omc import contract
from omc.config import ORT_DEVICE_PROVIDERS
from omc.contract import EngineMeta, TensorSpec
from omc.errors import BadInput, EngineMismatch, OmcError, raised_by_interrupt
from omc.runtime.backends.base import ArrayLike, Backend, FixedShape

logger = logging.getLogger(__name__)

# ONNX Runtime's type strings of the contract's dtypes.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(uint8)": "uint8",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
}
# ONNX Runtime logs warnings (e.g. unused initializers) at severity 2; keep errors only.
_ORT_LOG_SEVERITY_ERROR = 3


class OrtTensor(FixedShape):
    """A DeviceTensor over an onnxruntime.OrtValue; `np.asarray(t)` copies it to the host.

    ortvalue: the wrapped value (feed it to another session's I/O binding as it is).
    item: None for the whole value; an index i for batch item i alone (shape [1, ...]), a view
    at an offset into the same memory: `batch_item(i)` makes one without copying.
    """

    def __init__(self, ortvalue: Any, item: int | None = None) -> None:
        full = tuple(int(d) for d in ortvalue.shape())
        if item is not None and not 0 <= item < full[0]:
            raise IndexError(f"batch item {item} of a tensor with batch {full[0]}")
        super().__init__(full if item is None else (1, *full[1:]), _ORT_TYPES.get(ortvalue.data_type(), "float32"))
        self.ortvalue = ortvalue
        self.item = item
        self._item_nbytes = int(np.prod(full[1:], dtype=np.int64)) * self._dtype.itemsize

    @property
    def device(self) -> str:
        return str(self.ortvalue.device_name())

    @property
    def data_ptr(self) -> int:
        """Address of this tensor's first element (the batch item's, for an item view)."""
        return int(self.ortvalue.data_ptr()) + (self.item or 0) * self._item_nbytes

    def batch_item(self, index: int) -> "OrtTensor":
        """Batch item `index` of this whole tensor: shape [1, ...], same memory, no copy."""
        if self.item is not None:
            raise ValueError("batch_item of a batch item")
        return OrtTensor(self.ortvalue, index)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.ortvalue.numpy()
        if self.item is not None:
            array = array[self.item : self.item + 1]
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        item = "" if self.item is None else f", item={self.item}"
        return f"OrtTensor(shape={self._shape}, dtype={self._dtype}, device={self.device}{item})"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        if raised_by_interrupt(exc):  # Ctrl-C while its extension module initialised
            raise KeyboardInterrupt from None
        if importlib.util.find_spec("onnxruntime") is not None:
            raise OmcError(f"onnxruntime is installed but does not import ({exc}); reinstall it: pip install --force-reinstall onnxruntime") from None
        raise OmcError(
            "onnxruntime is not installed; it is a core dependency of omc: pip install onnxruntime"
        ) from None
    return onnxruntime


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON (or nested too deep to be ours): compared as text
        return value


def check_metadata(path: Path, metadata: Mapping[str, str], meta: EngineMeta) -> None:
    """Raise EngineMismatch when an ONNX file's export metadata disagrees with export.json.

    metadata: the file's metadata_props (export.json's keys, each value JSON-encoded).
    """
    expected = json.loads(json.dumps(meta.to_dict()))
    missing = [key for key in expected if key not in metadata]
    if missing:
        # Without them nothing binds the file to export.json: an edited export.json would go unnoticed.
        what = "no omc export metadata" if len(missing) == len(expected) else f"no {', '.join(missing)} in its metadata"
        raise EngineMismatch(
            f"{path} carries {what}, so it cannot be checked against export.json; re-export with omc export"
        )
    differ = [key for key in expected if _decode(metadata[key]) != expected[key]]
    if differ:
        details = ", ".join(f"{key} {metadata[key]} vs {json.dumps(expected[key])}" for key in differ)
        raise EngineMismatch(
            f"{path} does not belong to this export.json ({details}); re-export with omc export so the files match"
        )


def check_io(
    path: Path, kind: str, args: list[Any], specs: Mapping[str, TensorSpec], limits: Mapping[str, tuple[int, int]]
) -> None:
    """Raise EngineMismatch when a session's inputs or outputs (`args`) differ from the contract's `specs`."""
    got = {arg.name: arg for arg in args}
    missing = [name for name in specs if name not in got]
    extra = [name for name in got if name not in specs]
    if missing or (kind == "input" and extra):
        raise EngineMismatch(
            f"{path} {kind}s are {sorted(got)}, export.json describes {sorted(specs)}; re-export with omc export"
        )
    for name, spec in specs.items():
        arg = got[name]
        dtype = _ORT_TYPES.get(arg.type, arg.type)
        shape = list(arg.shape)
        problem = dtype != spec.dtype or len(shape) != len(spec.shape)
        for want, have in zip(spec.shape, shape):
            if isinstance(want, int) and isinstance(have, int) and want != have:
                problem = True
            if isinstance(want, str) and isinstance(have, int) and limits.get(want, (have, have)) != (have, have):
                problem = True  # a fixed axis where the contract needs the dynamic range
        if problem:
            raise EngineMismatch(
                f"{path} {kind} '{name}' is {dtype} {shape}, export.json describes {spec.dtype} {list(spec.shape)}; "
                "re-export with omc export"
            )


class OnnxRuntimeBackend(Backend):
    """One ONNX engine of the contract in an ONNX Runtime session.

    path: the .onnx file.  meta: its export.json (checked against the file at activation).
    engine: "detector" or "recheck".  device: "cpu", "cuda" or "tensorrt" (execution providers;
    the last two need an onnxruntime build that has them, e.g. onnxruntime-gpu).
    intra_op_threads: threads for one operator (0: ONNX Runtime's default, all cores).
    device_outputs: outputs returned as OrtTensor handles instead of NumPy arrays; by default
    the detector's maps that feed the re-check, none for the re-check.
    device_id: the GPU for "cuda" / "tensorrt".
    allow_spinning: let idle intra-op threads spin. Off by default: the detector and re-check
    sessions alternate, and each session's spinning pool steals the cores the other needs
    (measured on 2 cores: detector 1132 -> 1085 ms and re-check 116 -> 89 ms for OMC-L with
    spinning turned off).
    optimize_graph: ONNX Runtime's graph optimisations, all of them (ORT_ENABLE_ALL). False runs
    the graph as written (ORT_DISABLE_ALL): in a Q/DQ INT8 graph nothing then fuses into integer
    kernels, so every operator computes in float on dequantized values (omc.calib.drift uses this
    to measure the quantization's own drift, which does not depend on the CPU's instruction set).

    Every call returns new buffers (ONNX Runtime allocates the outputs of each run): one call's
    outputs stay valid while the next runs.
    """

    fresh_outputs = True

    def __init__(
        self,
        path: str | Path,
        meta: EngineMeta,
        engine: str,
        device: str = "cpu",
        *,
        intra_op_threads: int = 0,
        device_outputs: tuple[str, ...] | None = None,
        device_id: int = 0,
        allow_spinning: bool = False,
        optimize_graph: bool = True,
    ) -> None:
        inputs, outputs = meta.engine_specs(engine)
        if device not in ORT_DEVICE_PROVIDERS:
            raise BadInput(f"ONNX Runtime device '{device}' is not one of {', '.join(ORT_DEVICE_PROVIDERS)}")
        if intra_op_threads < 0:
            raise BadInput(f"intra_op_threads must be 0 (default) or more, got {intra_op_threads}")
        default_device_outputs: tuple[str, ...] = ()
        if engine == contract.DETECTOR:
            default_device_outputs = tuple(n for n in contract.RECHECK_FEEDS_FROM_DETECTOR if n in outputs)
        super().__init__(engine, inputs, outputs, meta.axis_limits())
        self.path = Path(path)
        self.meta = meta
        self.device = device
        self.device_id = device_id
        self.intra_op_threads = intra_op_threads
        self.allow_spinning = allow_spinning
        self.optimize_graph = optimize_graph
        self.device_outputs = default_device_outputs if device_outputs is None else tuple(device_outputs)
        unknown = [n for n in self.device_outputs if n not in outputs]
        if unknown:
            raise BadInput(f"device_outputs {unknown} are not outputs of the {engine} engine")
        self._ort: Any = None
        self._session: Any = None
        self._output_device = "cpu" if device == "cpu" else "cuda"

    # --- life cycle ----------------------------------------------------------------------------

    def _activate(self) -> None:
        if not self.path.is_file():
            raise BadInput(f"{self.path} not found; export the engines first (omc export)")
        ort = _import_onnxruntime()
        providers = ORT_DEVICE_PROVIDERS[self.device]
        available = ort.get_available_providers()
        if providers[0] not in available:
            raise OmcError(
                f"device '{self.device}' needs ONNX Runtime's {providers[0]}, which this onnxruntime "
                f"{ort.__version__} lacks (it has {', '.join(available)}); install a GPU build (onnxruntime-gpu) "
                "or use device 'cpu'"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize_graph else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        options.intra_op_num_threads = self.intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        options.log_severity_level = _ORT_LOG_SEVERITY_ERROR
        provider_options = [{"device_id": self.device_id} if p != "CPUExecutionProvider" else {} for p in providers]
        try:
            session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=list(providers), provider_options=provider_options
            )
        except Exception as exc:  # ONNX Runtime raises its own types for unreadable or invalid models
            raise EngineMismatch(f"{self.path} cannot be loaded by ONNX Runtime ({exc}); re-export with omc export") from None
        check_io(self.path, "input", session.get_inputs(), self.inputs, self.axis_limits)
        check_io(self.path, "output", session.get_outputs(), self.outputs, self.axis_limits)
        check_metadata(self.path, session.get_modelmeta().custom_metadata_map, self.meta)
        self._ort, self._session = ort, session
        logger.info("%s: %s on %s", self.name, self.path, ", ".join(session.get_providers()))

    def _deactivate(self) -> None:
        self._session = None
        self._ort = None

    # --- inference -----------------------------------------------------------------------------

    def _infer(self, feeds: Mapping[str, ArrayLike]) -> dict[str, ArrayLike]:
        binding = self._session.io_binding()
        for name in self.inputs:
            value = feeds[name]
            if isinstance(value, OrtTensor) and value.item is None:
                binding.bind_ortvalue_input(name, value.ortvalue)
            elif isinstance(value, OrtTensor):
                # One batch item of another session's output: bound where it lies, not copied.
                device = "cpu" if value.device.lower() == "cpu" else "cuda"
                binding.bind_input(name, device, self.device_id if device != "cpu" else 0, value.dtype.type, list(value.shape), value.data_ptr)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        names = list(self.outputs)
        for name in names:
            device = self._output_device if name in self.device_outputs else "cpu"
            binding.bind_output(name, device, self.device_id if device != "cpu" else 0)
        self._session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {
            name: OrtTensor(value) if name in self.device_outputs else value.numpy()
            for name, value in zip(names, values)
        }

    @property
    def providers(self) -> list[str]:
        """The session's execution providers (after activation)."""
        return list(self._session.get_providers()) if self._session is not None else []
