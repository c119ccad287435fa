"""The cuda-python memory layer: a clear error without a GPU; buffers, handles and graphs with one."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from omc.errors import MissingDependency, OmcError
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
from omc.runtime.backends.base import DeviceTensor

pytest.importorskip("cuda.bindings", reason="cuda-python is not installed (pip install '.[rtx]')")
NO_GPU = cuda_unavailable_reason(0)
needs_gpu = pytest.mark.skipif(NO_GPU is not None, reason=f"needs a CUDA GPU: {NO_GPU}")
needs_no_gpu = pytest.mark.skipif(NO_GPU is None, reason="checks the no-GPU path; this machine has a GPU")


@needs_no_gpu
def test_no_gpu_is_reported_not_crashed() -> None:
    assert NO_GPU is not None and NO_GPU.startswith("no usable CUDA GPU or driver (")
    assert device_compute_capability(0) is None
    session = CudaSession(0)
    with pytest.raises(OmcError, match="cannot use CUDA device 0: no usable CUDA GPU or driver"):
        session.acquire()
    with pytest.raises(OmcError, match="session is not open"):
        _ = session.stream
    session.release()  # releasing what was never acquired is harmless


def test_missing_cuda_python_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(MissingDependency, match=r"cuda-bindings \(module cuda.bindings\) is not installed.*'\.\[rtx\]'"):
        load_cudart()
    assert "cuda-bindings" in str(cuda_unavailable_reason(0))


@pytest.mark.gpu
@needs_gpu
def test_device_and_pinned_round_trip_and_handle() -> None:
    session = CudaSession(0)
    session.acquire()
    try:
        data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        device = DeviceBuffer(session, data.nbytes * 2)
        device.upload(data)
        handle = DeviceArray(device, (2, 3, 4), "float32")
        assert isinstance(handle, DeviceTensor)
        np.testing.assert_array_equal(np.asarray(handle), data)
        pinned = PinnedBuffer(session, data.nbytes)
        session.copy_async(pinned.ptr, device.ptr, data.nbytes, "d2h")
        session.synchronize()
        np.testing.assert_array_equal(pinned.view("float32", (2, 3, 4)), data)
        # A graph replays the copy it captured.
        other = DeviceBuffer(session, data.nbytes)
        graph = CudaGraph(session)
        graph.begin()
        session.copy_async(other.ptr, device.ptr, data.nbytes, "d2d")
        graph.end()
        graph.launch()
        np.testing.assert_array_equal(np.asarray(DeviceArray(other, (2, 3, 4), "float32")), data)
        with pytest.raises(OmcError, match="do not fit"):
            other.upload(np.zeros(100, np.float32))
        for item in (graph, other, pinned, device):
            item.close()
    finally:
        session.release()
