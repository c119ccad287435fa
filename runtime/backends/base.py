"""The backend interface: a runner that is opened once, infers name -> array dicts, and is closed.

Modelled on Polygraphy's runners: `activate()` acquires resources (imports the library, loads the
engine, allocates), `infer(feeds)` checks the feeds against the engine contract at the boundary
and calls `_infer`, `deactivate()` frees; a backend is also a context manager. Subclasses
implement `_activate`, `_infer`, `_deactivate` only.

Apps may bring any object with `infer(feeds) -> dict` (a remote server, a mock in a test); the
tracker needs nothing else. `Backend` adds the checks, state guards and timing.

Device residency: a backend may return some outputs as `DeviceTensor` handles instead of NumPy
arrays (ONNX Runtime OrtValues, TensorRT device buffers). The runtime only hands those on to the
re-check backend; `np.asarray(handle)` copies one to the host when someone does need it.
`batch_item(output, i)` takes frame i of a batched output ([B, ...] -> [1, ...]) without copying,
for the per-frame re-check after a batched detector call.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from omc.contract import TensorSpec
from omc.errors import BadInput, OmcError


@runtime_checkable
class DeviceTensor(Protocol):
    """An output left where the backend computed it; `np.asarray(t)` copies it to the host."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray: ...


ArrayLike = np.ndarray | DeviceTensor


class FixedShape:
    """The shape and dtype of a DeviceTensor implementation, set once at construction."""

    def __init__(self, shape: tuple[int, ...], dtype: str | np.dtype) -> None:
        self._shape = tuple(int(size) for size in shape)
        self._dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype


def batch_item(value: ArrayLike, index: int) -> ArrayLike:
    """Batch item `index` of an engine output [B, ...] as [1, ...], without copying where the
    backend allows it.

    NumPy arrays give the view `value[index:index + 1]`; a device handle with a `batch_item`
    method (the TensorRT backend's `DeviceArray`: the same device buffer at a byte offset) gives
    its own view, which the re-check engine of the same pair binds as its input directly; any
    other DeviceTensor is copied to the host first. ONNX Runtime's OrtTensor views its own
    memory at an offset too. BadInput unless 0 <= index < B.

    A view lives in the producing backend's output buffers: the TensorRT backend overwrites them
    at its next call, so finish every re-check of batch k (or copy what you keep) before running
    the detector on batch k + 1.
    """
    shape = tuple(value.shape)
    if not shape or not 0 <= index < shape[0]:
        raise BadInput(f"batch item {index} does not exist in an output of shape {list(shape)}")
    if isinstance(value, np.ndarray):
        return value[index : index + 1]
    slicer = getattr(value, "batch_item", None)
    if slicer is not None:
        item: ArrayLike = slicer(index)
        return item
    return np.asarray(value)[index : index + 1]


class Backend(ABC):
    """A runner for one engine of the contract.

    inputs / outputs: the engine's tensor specs (from `EngineMeta.detector_inputs()` etc.).
    axis_limits: inclusive (min, max) per dynamic axis, e.g. {"B": (1, 4)}.
    Outputs may reuse buffers between calls (documented per backend): copy what you keep.
    `fresh_outputs` says they never do (every call returns new buffers), so one call's outputs
    stay valid while the next call runs.
    """

    fresh_outputs: bool = False

    def __init__(
        self,
        name: str,
        inputs: Mapping[str, TensorSpec],
        outputs: Mapping[str, TensorSpec],
        axis_limits: Mapping[str, tuple[int, int]],
    ) -> None:
        self.name = name
        self.inputs = dict(inputs)
        self.outputs = dict(outputs)
        self.axis_limits = dict(axis_limits)
        self.is_active = False
        self.last_latency_ms: float | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def activate(self) -> None:
        if self.is_active:
            raise OmcError(f"backend '{self.name}' is already active")
        self._activate()
        self.is_active = True

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def __enter__(self) -> "Backend":
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    # --- inference -----------------------------------------------------------------------------

    def infer(self, feeds: Mapping[str, ArrayLike]) -> dict[str, ArrayLike]:
        """Run the engine on `feeds` (contract name -> array) and return contract name -> array."""
        if not self.is_active:
            raise OmcError(f"backend '{self.name}' is not active; call activate() or use it as a context manager")
        self.check_feeds(feeds)
        start = time.perf_counter()
        outputs = self._infer(feeds)
        self.last_latency_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def check_feeds(self, feeds: Mapping[str, ArrayLike]) -> None:
        """Raise BadInput naming the tensor when feeds do not match the contract."""
        missing = [name for name in self.inputs if name not in feeds]
        unknown = [name for name in feeds if name not in self.inputs]
        if missing or unknown:
            raise BadInput(
                f"backend '{self.name}' expects inputs {sorted(self.inputs)}; "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        for name, spec in self.inputs.items():
            value = feeds[name]
            if isinstance(value, np.ndarray):
                spec.check(value, self.axis_limits)
            else:
                spec.check(_ShapeOnly(value), self.axis_limits)  # type: ignore[arg-type]

    # --- to implement --------------------------------------------------------------------------

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: Mapping[str, ArrayLike]) -> dict[str, ArrayLike]: ...

    @abstractmethod
    def _deactivate(self) -> None: ...


class _ShapeOnly:
    """Lets `TensorSpec.check` read a DeviceTensor's shape and dtype without copying it."""

    def __init__(self, tensor: DeviceTensor) -> None:
        self.shape = tuple(tensor.shape)
        self.dtype = np.dtype(tensor.dtype)
        self.ndim = len(self.shape)
