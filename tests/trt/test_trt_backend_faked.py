"""The TensorRT backend's GPU-only paths, run on a fake GPU (tests/trt/fake_gpu.py).

What the fakes cannot show (real kernels, real CUDA graph capture, TensorRT for RTX's JIT) needs a
GPU; what they do show is what omc asks of CUDA and TensorRT, in which order, on which device,
with which shapes and addresses: batch slicing of the detector's maps into the re-check, one
captured graph per input shape, the device made current on every call, TensorRT for RTX's
runtime config and runtime cache, its engine validity check, and the driver check of
cuda-bindings' CUDA major.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_gpu import MAP_OFFSETS, EngineInvalidityDiagnostics, EngineValidity, FakeGpu, install_fake_gpu
from toy_engines import TOY_META

from omc import contract
from omc.config import TensorRTRuntimeConfig
from omc.errors import BadInput, EngineMismatch, OmcError
from omc.runtime.backends.base import batch_item
from omc.runtime.backends.cuda_memory import (
    CudaSession,
    DeviceArray,
    cuda_driver_mismatch,
    cuda_unavailable_reason,
    load_cudart,
    native_handle,
)
from omc.runtime.backends.trt import TensorRTBackend, runtime_cache_path

META = TOY_META  # 320 x 192 input, 40 x 24 maps, E 512, C 8, max batch 4, max tracklets 64
H, W = META.input_hw


def frames(*values: int) -> np.ndarray:
    """uint8 [B, H, W, 3]; frame b is filled with values[b] (the fake detector reads the first byte)."""
    return np.stack([np.full((H, W, 3), value, np.uint8) for value in values])


def tracklets(n: int) -> np.ndarray:
    return np.ones((n, META.embedding_dim), np.float32)


def open_pair(gpu: FakeGpu, **options: Any) -> tuple[TensorRTBackend, TensorRTBackend]:
    detector, recheck = TensorRTBackend.open_pair(gpu.engines, gpu.meta, **options)
    assert recheck is not None
    detector.activate()
    recheck.activate()
    return detector, recheck


@pytest.fixture
def rtx_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGpu:
    return install_fake_gpu(monkeypatch, tmp_path / "engines", META)


# --- batch slicing -----------------------------------------------------------------------------


def test_recheck_binds_each_frame_of_a_batch_at_its_offset_without_copying(rtx_gpu: FakeGpu) -> None:
    detector, recheck = open_pair(rtx_gpu)
    outputs = detector.infer({contract.IMAGES: frames(10, 20, 30)})
    maps = {name: outputs[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
    assert outputs[contract.ID_EMBEDDINGS].shape == (3, 24, 40, 512)
    assert outputs[contract.DET_SCORES].shape == (3, META.topk)
    mallocs = [entry for entry in rtx_gpu.cudart.log if entry[0] == "malloc"]
    recheck_engine = rtx_gpu.tensorrt.engines[1]
    for index, value in enumerate((10, 20, 30)):
        feeds = {name: batch_item(handle, index) for name, handle in maps.items()}
        for name, view in feeds.items():
            assert isinstance(view, DeviceArray) and view.shape == (1, *maps[name].shape[1:])
            whole: Any = maps[name]
            assert view.ptr == whole.ptr + index * whole.nbytes // 3 and view.ptr % 256 == 0
        result = recheck.infer({**feeds, contract.TRACKLETS: tracklets(5)})
        # The fake re-check fills its outputs with id_embeddings' value (the frame's) + n.
        np.testing.assert_array_equal(result[contract.TRANS_SCORES], np.full((1, META.peaks), value + 5, np.float32))
        for name, view in feeds.items():
            assert recheck_engine.contexts[0].addresses[name] == view.ptr  # bound as it is
            np.testing.assert_array_equal(np.asarray(view), np.full(view.shape, value + MAP_OFFSETS[name], np.float32))
    # No device-to-device copy, no buffer of the re-check's own for the maps.
    assert not [entry for entry in rtx_gpu.cudart.log if entry[0] == "ran" and entry[1].startswith("copy d2d")]
    assert [entry for entry in rtx_gpu.cudart.log if entry[0] == "malloc"] == mallocs


def test_a_misaligned_view_is_copied_on_the_stream_instead_of_bound(rtx_gpu: FakeGpu) -> None:
    detector, recheck = open_pair(rtx_gpu)
    outputs = detector.infer({contract.IMAGES: frames(7, 7)})  # two equal frames: a shifted view reads 7s too
    feeds = {name: batch_item(outputs[name], 0) for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
    embeddings: Any = feeds[contract.ID_EMBEDDINGS]
    shifted = DeviceArray(embeddings.buffer, embeddings.shape, embeddings.dtype, offset=4)
    result = recheck.infer({**feeds, contract.ID_EMBEDDINGS: shifted, contract.TRACKLETS: tracklets(1)})
    assert result[contract.TRANS_SCORES][0, 0] == 7 + 1
    bound = rtx_gpu.tensorrt.engines[1].contexts[0].addresses[contract.ID_EMBEDDINGS]
    assert bound != shifted.ptr and bound % 256 == 0
    assert ("ran", f"copy d2d {shifted.nbytes}") in rtx_gpu.cudart.log


def test_batch_item_of_numpy_is_a_view_and_out_of_range_is_refused() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    item = batch_item(batch, 2)
    assert isinstance(item, np.ndarray) and item.shape == (1, 2, 4) and np.shares_memory(item, batch)
    np.testing.assert_array_equal(item[0], batch[2])
    for index in (-1, 3):
        with pytest.raises(BadInput, match=rf"batch item {index} does not exist in an output of shape \[3, 2, 4\]"):
            batch_item(batch, index)


def test_batch_item_copies_other_device_tensors_to_the_host() -> None:
    class HostOnlyHandle:
        shape = (2, 3)
        dtype = np.dtype(np.float32)

        def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return np.arange(6, dtype=np.float32).reshape(2, 3)

    item = batch_item(HostOnlyHandle(), 1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(item, [[3.0, 4.0, 5.0]])


# --- CUDA graphs -------------------------------------------------------------------------------


@pytest.fixture
def tensorrt_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGpu:
    return install_fake_gpu(monkeypatch, tmp_path / "engines", META, edition="tensorrt")


def test_full_tensorrt_replays_one_graph_per_batch_size_with_its_own_context(tensorrt_gpu: FakeGpu) -> None:
    detector, _ = open_pair(tensorrt_gpu, cuda_graph=True)
    engine = tensorrt_gpu.tensorrt.engines[0]
    calls = [(1, 5), (1, 6), (1, 7), (2, 8), (2, 9), (2, 10), (1, 11), (2, 12), (1, 13)]
    for batch, value in calls:
        values = [value + b for b in range(batch)]
        outputs = detector.infer({contract.IMAGES: frames(*values)})
        # Outputs follow B and hold this call's frames (uploaded before the graph launch).
        assert outputs[contract.DET_SCORES].shape == (batch, META.topk)
        assert outputs[contract.ID_EMBEDDINGS].shape == (batch, 24, 40, 512)
        np.testing.assert_array_equal(outputs[contract.DET_SCORES][:, 0], np.asarray(values, np.float32))
        np.testing.assert_array_equal(np.asarray(outputs[contract.RECHECK_BOXES])[:, 0, 0, 0], np.asarray(values) + 2000.0)
    # Two shapes, two contexts (sharing one activation buffer), each warmed, captured once, replayed.
    assert len(engine.contexts) == 2
    assert {context.device_memory for context in engine.contexts} == {(detector._active.scratch.ptr, 4096)}  # type: ignore[union-attr]
    assert [context.shapes[contract.IMAGES][0] for context in engine.contexts] == [1, 2]
    assert sum(1 for entry in tensorrt_gpu.cudart.log if entry[0] == "begin capture") == 2
    assert sum(1 for entry in tensorrt_gpu.cudart.log if entry[0] == "launch graph") == 2 + 5  # capture runs + replays
    assert engine.stale_replays == []


def test_one_context_for_every_shape_would_replay_stale_state(tensorrt_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake has teeth: sharing one context between the B = 1 and B = 2 graphs (the old design)
    # replays the B = 1 graph while the context holds B = 2.
    detector, _ = open_pair(tensorrt_gpu, cuda_graph=True)
    original = TensorRTBackend._context_for

    def one_context(self: TensorRTBackend, active: Any, shapes: Any) -> Any:
        first = next(iter(active.shape_contexts.values()), None)
        if first is not None and shapes not in active.shape_contexts:
            active.shape_contexts[shapes] = type(first)(first.context)
        return original(self, active, shapes)

    monkeypatch.setattr(TensorRTBackend, "_context_for", one_context)
    for batch in (1, 1, 2, 2, 1):
        detector.infer({contract.IMAGES: frames(*range(1, batch + 1))})
    assert tensorrt_gpu.tensorrt.engines[0].stale_replays


def test_tensorrt_for_rtx_graphs_use_its_built_in_strategy_and_omc_never_captures(rtx_gpu: FakeGpu) -> None:
    detector, recheck = open_pair(rtx_gpu, cuda_graph=True)
    for batch in (1, 1, 2, 2, 1):
        detector.infer({contract.IMAGES: frames(*range(batch))})
    module = rtx_gpu.tensorrt
    detector_config, recheck_config = (engine.runtime_configs[0] for engine in module.engines)
    assert detector_config.cuda_graph_strategy == module.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
    assert recheck_config.cuda_graph_strategy == module.CudaGraphStrategy.DISABLED
    assert detector_config.dynamic_shapes_kernel_specialization_strategy == module.DynamicShapesKernelSpecializationStrategy.LAZY
    assert recheck_config.dynamic_shapes_kernel_specialization_strategy == module.DynamicShapesKernelSpecializationStrategy.NONE
    assert not [entry for entry in rtx_gpu.cudart.log if entry[0] in ("begin capture", "launch graph")]
    assert len(module.engines[0].contexts) == 1  # one context; TensorRT for RTX handles the shapes


# --- devices and threads -----------------------------------------------------------------------


def test_every_call_runs_on_its_own_gpu_from_any_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gpu = install_fake_gpu(monkeypatch, tmp_path / "engines", META, devices=((8, 6), (8, 6)))
    first = open_pair(gpu, device=0)
    second = open_pair(gpu, device=1)
    assert [context.device for engine in gpu.tensorrt.engines for context in engine.contexts] == [0, 0, 1, 1]
    failures: list[BaseException] = []

    def track(pair: tuple[TensorRTBackend, TensorRTBackend], value: int) -> None:
        try:
            detector, recheck = pair
            outputs = detector.infer({contract.IMAGES: frames(value)})
            # Host maps make the re-check allocate its own buffers now, on this call's thread.
            feeds = {name: np.asarray(outputs[name]) for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
            result = recheck.infer({**feeds, contract.TRACKLETS: tracklets(2)})
            assert result[contract.TRANS_SCORES][0, 0] == value + 2
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    track(first, 3)
    track(second, 4)  # same thread, the other GPU
    worker = threading.Thread(target=track, args=(first, 5))  # a thread whose current device is 0 by default
    gpu.cudart.cudaSetDevice(1)  # the main thread now points at GPU 1
    worker.start()
    worker.join()
    track(first, 6)
    assert failures == []
    assert not [entry for entry in gpu.cudart.log if entry[0] == "wrong device"]
    for backend, device in ((first[1], 0), (second[1], 1)):
        own = backend._active.device_buffers[contract.ID_EMBEDDINGS]  # type: ignore[union-attr]
        assert gpu.cudart.device_of(own.ptr) == device


# --- TensorRT for RTX: runtime cache, validity -------------------------------------------------


def test_runtime_cache_is_kept_beside_the_plan_and_loaded_next_time(rtx_gpu: FakeGpu, caplog: pytest.LogCaptureFixture) -> None:
    detector, recheck = open_pair(rtx_gpu)
    cache = runtime_cache_path(rtx_gpu.engines / contract.DETECTOR_PLAN)
    assert cache.name == "detector.plan.runtime-cache" and not cache.exists()
    detector.deactivate()
    recheck.deactivate()
    assert cache.read_bytes() == b"fake-cache:kernels"
    assert (rtx_gpu.engines / "recheck.plan.runtime-cache").is_file()
    cache.write_bytes(b"fake-cache:compiled earlier")
    with caplog.at_level(logging.INFO, logger="omc"):
        detector, _ = open_pair(rtx_gpu)
    assert rtx_gpu.tensorrt.engines[-2].runtime_configs[0].cache.loaded == b"fake-cache:compiled earlier"
    assert "detector.plan: compiled kernels from detector.plan.runtime-cache" in caplog.messages
    detector.deactivate()
    # A cache of another GPU or driver is refused by TensorRT for RTX and replaced.
    cache.write_bytes(b"another GPU")
    with caplog.at_level(logging.INFO, logger="omc"):
        detector, _ = open_pair(rtx_gpu)
    assert any("was made on another GPU, driver or version; compiling anew" in m for m in caplog.messages)
    detector.deactivate()
    assert cache.read_bytes() == b"fake-cache:kernels"
    assert not list(rtx_gpu.engines.glob(".*.tmp"))


def test_runtime_cache_that_cannot_be_written_costs_a_warning_only(rtx_gpu: FakeGpu, caplog: pytest.LogCaptureFixture) -> None:
    runtime_cache_path(rtx_gpu.engines / contract.DETECTOR_PLAN).mkdir()  # unreplaceable, even for root
    detector, _ = open_pair(rtx_gpu)
    with caplog.at_level(logging.WARNING, logger="omc"):
        detector.deactivate()
    assert not detector.is_active
    assert any("could not keep the runtime cache" in m and "compiles its kernels again" in m for m in caplog.messages)


def test_runtime_cache_and_strategies_follow_the_runtime_config(rtx_gpu: FakeGpu) -> None:
    settings = TensorRTRuntimeConfig(detector_kernels="eager", recheck_kernels="lazy", runtime_cache=False)
    detector, recheck = open_pair(rtx_gpu, runtime_config=settings)
    detector.deactivate()
    recheck.deactivate()
    strategies = rtx_gpu.tensorrt.DynamicShapesKernelSpecializationStrategy
    configs = [engine.runtime_configs[0] for engine in rtx_gpu.tensorrt.engines]
    assert [c.dynamic_shapes_kernel_specialization_strategy for c in configs] == [strategies.EAGER, strategies.LAZY]
    assert [c.cache for c in configs] == [None, None]
    assert not list(rtx_gpu.engines.glob("*.runtime-cache"))
    with pytest.raises(BadInput, match="recheck_kernels must be one of lazy, eager, none, got 'bucket'"):
        TensorRTRuntimeConfig(recheck_kernels="bucket")


def test_portable_plan_on_a_newer_gpu_is_judged_by_tensorrt_for_rtx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from omc.config import RTX_PORTABLE_TARGETS

    gpu = install_fake_gpu(monkeypatch, tmp_path / "engines", META, devices=((13, 0),), gpu_targets=RTX_PORTABLE_TARGETS, portable=True)
    gpu.tensorrt.validity = (EngineValidity.INVALID, EngineInvalidityDiagnostics.UNSUPPORTED_CC | EngineInvalidityDiagnostics.OLD_CUDA_DRIVER)
    detector, _ = TensorRTBackend.open_pair(gpu.engines, META)
    with pytest.raises(EngineMismatch) as caught:
        detector.activate()
    message = str(caught.value)
    assert message.startswith(
        "TensorRT for RTX 1.7.1.116 reports that detector.plan cannot run on this GPU (SM130: unsupported cc, old cuda driver); "
        "update the NVIDIA driver, or rebuild it: omc build --onnx "
    )
    assert gpu.tensorrt.engines == []  # refused before deserialisation
    gpu.tensorrt.validity = (EngineValidity.SUBOPTIMAL, 0)
    detector.activate()  # runs, with a warning
    assert detector.is_active


# --- cuda-bindings against the driver ----------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "message"),
    [
        (
            12040,
            "cuda-bindings 13.4 needs an NVIDIA driver for CUDA 13 (R580 or newer), but this driver supports CUDA 12.4; "
            "install the CUDA 12 build instead (pip install '.[rtx-cu12]' for TensorRT for RTX, '.[trt-cu12]' for full "
            "TensorRT), or update the driver",
        ),
        (13000, None),
        (13020, None),
        (0, None),  # no driver: cuda_unavailable_reason says so in CUDA's words
    ],
)
def test_cuda_bindings_newer_than_the_driver_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, driver: int, message: str | None
) -> None:
    gpu = install_fake_gpu(monkeypatch, tmp_path / "engines", META, driver=driver)
    assert cuda_driver_mismatch(load_cudart()) == message
    detector, _ = TensorRTBackend.open_pair(gpu.engines, META)
    if message is None:
        if driver:
            detector.activate()
            assert detector.is_active
        else:
            assert cuda_unavailable_reason(0) == "no usable CUDA GPU or driver (cudaErrorInsufficientDriver)"
        return
    assert cuda_unavailable_reason(0) == message
    with pytest.raises(OmcError) as caught:
        detector.activate()
    assert str(caught.value) == message
    with pytest.raises(OmcError, match=r"cannot use CUDA device 0: cuda-bindings 13\.4 needs"):
        CudaSession(0).acquire()


def test_native_handle_uses_get_cuda_native_handle_when_the_bindings_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    bindings = pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings is not installed")
    assert native_handle(bindings.cudaStream_t(4096)) == 4096  # the real bindings
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)  # cuda-bindings before 12.9.1
    assert native_handle(bindings.cudaStream_t(4096)) == 4096


def test_recheck_meta_limits_still_checked_on_views(rtx_gpu: FakeGpu) -> None:
    detector, recheck = open_pair(rtx_gpu)
    outputs = detector.infer({contract.IMAGES: frames(1, 2)})
    feeds = {name: outputs[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}  # B = 2, not one frame
    with pytest.raises(BadInput, match="id_embeddings"):
        recheck.infer({**feeds, contract.TRACKLETS: tracklets(1)})
    with pytest.raises(BadInput):
        recheck.infer({**{n: batch_item(v, 0) for n, v in feeds.items()}, contract.TRACKLETS: tracklets(META.max_tracklets + 1)})


@pytest.mark.trt
def test_the_fake_uses_tensorrt_for_rtx_api_that_exists(rtx_module: Any) -> None:
    # The fake stands in for TensorRT for RTX 1.7 only where these names are real.
    module = rtx_module
    for owner, names in (
        (module.Runtime, ("deserialize_cuda_engine", "get_engine_validity")),
        (module.ICudaEngine, ("create_runtime_config", "create_execution_context", "device_memory_size_v2")),
        (module.IRuntimeConfig, ("cuda_graph_strategy", "dynamic_shapes_kernel_specialization_strategy", "create_runtime_cache", "set_runtime_cache")),
        (module.IRuntimeCache, ("serialize", "deserialize")),
        (module.IExecutionContext, ("set_device_memory", "set_tensor_address", "set_input_shape", "get_tensor_shape", "execute_async_v3")),
    ):
        assert [name for name in names if not hasattr(owner, name)] == []
    assert {"WHOLE_GRAPH_CAPTURE", "DISABLED"} <= set(module.CudaGraphStrategy.__members__)
    assert {"LAZY", "EAGER", "NONE"} <= set(module.DynamicShapesKernelSpecializationStrategy.__members__)
    assert {"VALID", "SUBOPTIMAL", "INVALID"} <= set(module.EngineValidity.__members__)
    real = {name: int(value) for name, value in module.EngineInvalidityDiagnostics.__members__.items()}
    assert real == {member.name: int(member) for member in EngineInvalidityDiagnostics}
    assert "USER_MANAGED" in module.ExecutionContextAllocationStrategy.__members__
