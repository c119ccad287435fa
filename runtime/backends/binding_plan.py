"""Where each engine tensor lives while the TensorRT backend runs: a pure function of export.json.

The TensorRT backend allocates every buffer once, at activation, from the optimisation profiles'
largest shapes, and never reallocates per frame. This module decides, without TensorRT or a GPU,
which tensor gets which buffer:

- inputs the caller sends from the host (`images`, `tracklets`) are copied into a device buffer;
- compact outputs (`det_*`, `trans_*`: a few hundred KB at most) are copied back into page-locked
  ("pinned") host buffers, because only page-locked memory makes device-to-host copies truly
  asynchronous and fast;
- the maps (`id_embeddings`, `recheck_features`, `recheck_boxes`, `recheck_heatmap`: tens of MB)
  stay on the device and are returned as DeviceTensor handles; the re-check engine binds the
  detector's three maps directly as its inputs, so they never cross the PCIe bus;
- the re-check engine's map inputs get a device buffer of their own only when a caller sends
  host arrays (another detector backend, a test), allocated at the first such call.

The same profile shapes are what `omc build` gives TensorRT, so the builder imports
`profile_shapes` from here: one definition of "the largest shape the engine accepts".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from omc import contract
from omc.contract import RECHECK, EngineMeta, TensorSpec
from omc.errors import BadInput

# Outputs small enough to copy to the host every call (det_*, trans_*); everything else is a map.
COMPACT_OUTPUTS: tuple[str, ...] = (
    contract.DET_BOXES,
    contract.DET_SCORES,
    contract.DET_DENSITY,
    contract.DET_EMBEDDINGS,
    contract.TRANS_BOXES,
    contract.TRANS_SCORES,
    contract.TRANS_EMBEDDINGS,
)


class Transfer(Enum):
    """How a tensor crosses between host and device on each call."""

    # Input copied from the caller's host array into the tensor's device buffer.
    HOST_TO_DEVICE = "host-to-device"
    # Input bound to a device pointer the detector produced; a host array is copied instead.
    DEVICE_HANDLE_OR_HOST = "device-handle-or-host"
    # Output copied into a pinned host buffer after the engine runs.
    DEVICE_TO_PINNED = "device-to-pinned"
    # Output left on the device and returned as a DeviceTensor handle.
    STAYS_ON_DEVICE = "stays-on-device"


@dataclass(frozen=True)
class ProfileShape:
    """One input's optimisation profile: the smallest, tuned-for and largest shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_lists(self) -> list[list[int]]:
        return [list(self.min), list(self.opt), list(self.max)]


@dataclass(frozen=True)
class Binding:
    """One engine tensor and its buffers.

    max_shape: the largest shape the profile allows.  nbytes: device buffer size for it, bytes.
    pinned_nbytes: page-locked host buffer size, bytes (0 when the tensor has none).
    device_buffer_at_activation: False only for the re-check map inputs, whose buffer is made at
    the first call that sends them from the host (they normally arrive as device handles).
    """

    name: str
    is_input: bool
    dtype: str
    max_shape: tuple[int, ...]
    nbytes: int
    transfer: Transfer
    pinned_nbytes: int
    device_buffer_at_activation: bool


def _specs(meta: EngineMeta, engine: str) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    if engine == RECHECK and not meta.has_recheck:
        raise BadInput("this export has no re-check network, so it has no recheck engine")
    return meta.engine_specs(engine)


def _concrete(spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[dim] if isinstance(dim, str) else dim for dim in spec.shape)


def max_shapes(meta: EngineMeta, engine: str) -> dict[str, tuple[int, ...]]:
    """Largest shape of every input and output of `engine` ("detector" or "recheck").

    B becomes meta.max_batch, n becomes meta.max_tracklets.
    """
    inputs, outputs = _specs(meta, engine)
    largest = {contract.BATCH_AXIS: meta.max_batch, contract.TRACKLET_AXIS: meta.max_tracklets}
    return {name: _concrete(spec, largest) for name, spec in {**inputs, **outputs}.items()}


def profile_shapes(meta: EngineMeta, engine: str, opt_batch: int, opt_tracklets: int) -> dict[str, ProfileShape]:
    """The optimisation profile of each input with a dynamic axis.

    detector: `images` B from 1 to meta.max_batch, tuned for opt_batch.
    recheck: `tracklets` n from 1 to meta.max_tracklets, tuned for opt_tracklets; both clipped
    to the export's maximum. Inputs with fixed shapes need no profile and are left out.
    """
    inputs, _ = _specs(meta, engine)
    low = {contract.BATCH_AXIS: 1, contract.TRACKLET_AXIS: 1}
    opt = {
        contract.BATCH_AXIS: min(opt_batch, meta.max_batch),
        contract.TRACKLET_AXIS: min(opt_tracklets, meta.max_tracklets),
    }
    high = {contract.BATCH_AXIS: meta.max_batch, contract.TRACKLET_AXIS: meta.max_tracklets}
    return {
        name: ProfileShape(_concrete(spec, low), _concrete(spec, opt), _concrete(spec, high))
        for name, spec in inputs.items()
        if any(isinstance(dim, str) for dim in spec.shape)
    }


def _transfer(name: str, is_input: bool, engine: str) -> Transfer:
    if is_input:
        if engine == RECHECK and name in contract.RECHECK_FEEDS_FROM_DETECTOR:
            return Transfer.DEVICE_HANDLE_OR_HOST
        return Transfer.HOST_TO_DEVICE
    return Transfer.DEVICE_TO_PINNED if name in COMPACT_OUTPUTS else Transfer.STAYS_ON_DEVICE


def plan_bindings(meta: EngineMeta, engine: str) -> tuple[Binding, ...]:
    """Every input then every output of `engine`, in contract order, with its buffers.

    Sizes are bytes for the largest profile shape (B = max_batch, n = max_tracklets), with the
    contract's boundary dtypes (uint8 images, float32 otherwise), whatever precision the engine
    computes in. Does not modify `meta`.
    """
    inputs, outputs = _specs(meta, engine)
    largest = max_shapes(meta, engine)
    bindings = []
    for is_input, specs in ((True, inputs), (False, outputs)):
        for name, spec in specs.items():
            shape = largest[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            transfer = _transfer(name, is_input, engine)
            bindings.append(
                Binding(
                    name=name,
                    is_input=is_input,
                    dtype=spec.dtype,
                    max_shape=shape,
                    nbytes=nbytes,
                    transfer=transfer,
                    pinned_nbytes=nbytes if transfer is Transfer.DEVICE_TO_PINNED else 0,
                    device_buffer_at_activation=transfer is not Transfer.DEVICE_HANDLE_OR_HOST,
                )
            )
    return tuple(bindings)
