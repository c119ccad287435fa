"""TensorRTBackend on a machine without a GPU: every refusal happens before TensorRT deserialises,
and the missing GPU is one clear OmcError. The `gpu` test runs a built pair end to end."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trt_exports import copy_engines, edit_sidecar

from omc import contract
from omc.contract import EngineMeta
from omc.errors import BadInput, EngineMismatch, MissingDependency, OmcError
from omc.runtime.backends.cuda_memory import cuda_unavailable_reason, device_compute_capability
from omc.runtime.backends.engine_header import compute_capability_name, read_header
from omc.runtime.backends.trt import TensorRTBackend, load_tensorrt, parse_device

NO_GPU = cuda_unavailable_reason(0)
needs_no_gpu = pytest.mark.skipif(NO_GPU is None, reason="checks the no-GPU path; this machine has a GPU")


class RecordingRuntime:
    """Stands in for TensorRT's Runtime: records deserialisation attempts, loads nothing."""

    calls: list[int] = []

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes) -> None:
        RecordingRuntime.calls.append(len(plan))
        return None


@pytest.fixture
def recording_runtime(monkeypatch: pytest.MonkeyPatch, rtx_module: Any) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(RecordingRuntime, "calls", calls)
    monkeypatch.setattr(rtx_module, "Runtime", RecordingRuntime)
    return calls


@pytest.mark.trt
@needs_no_gpu
def test_loading_without_a_gpu_is_a_clear_error(rtx_engines: Path, rtx_module: Any) -> None:
    meta = EngineMeta.load(rtx_engines)
    detector, recheck = TensorRTBackend.open_pair(rtx_engines, meta, device="cuda")
    assert recheck is not None
    for backend, plan in ((detector, "detector.plan"), (recheck, "recheck.plan")):
        with pytest.raises(OmcError) as caught:
            backend.activate()
        message = str(caught.value)
        assert type(caught.value) is OmcError  # not a mismatch: the plan is fine, the machine is not
        assert message.startswith(
            f"TensorRT for RTX {rtx_module.__version__} could not load {plan}: no usable CUDA GPU or driver ("
        )
        assert "need an NVIDIA GPU" in message and "\n" not in message
        assert not backend.is_active
    with pytest.raises(OmcError, match="is not active"):
        detector.infer({contract.IMAGES: np.zeros((1, 192, 320, 3), np.uint8)})


@pytest.mark.trt
@needs_no_gpu
def test_open_engines_factory_reports_the_missing_gpu(rtx_engines: Path) -> None:
    from omc.runtime.backends import open_engines

    with pytest.raises(OmcError, match="no usable CUDA GPU or driver"):
        open_engines(rtx_engines, backend="trt", device="cuda:0")


@pytest.mark.trt
def test_good_plan_reaches_deserialisation(rtx_engines: Path, recording_runtime: list[int]) -> None:
    meta = EngineMeta.load(rtx_engines)
    detector, _ = TensorRTBackend.open_pair(rtx_engines, meta)
    with pytest.raises(OmcError, match="could not load detector.plan"):
        detector.activate()
    assert recording_runtime == [(rtx_engines / contract.DETECTOR_PLAN).stat().st_size]


@pytest.mark.trt
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tensorrt_version": "1.6.0.0"}, r"built by TensorRT for RTX 1\.6\.0\.0, but 1\.7\.1\.116 is installed"),
        ({"edition": "tensorrt", "tensorrt_version": "10.13.0.35"}, r"built by NVIDIA TensorRT 10\.13\.0\.35, but this process runs TensorRT for RTX"),
        ({"plan_sha256": "0" * 64}, r"does not match the SHA-256"),
        ({"header_version": 99}, r"sidecar version 99"),
    ],
)
def test_mismatched_sidecar_is_refused_before_deserialisation(
    rtx_engines: Path, tmp_path: Path, recording_runtime: list[int], changes: dict[str, Any], message: str
) -> None:
    engines = copy_engines(rtx_engines, tmp_path / "engines")
    edit_sidecar(engines / contract.DETECTOR_PLAN, **changes)
    meta = EngineMeta.load(engines)
    detector, _ = TensorRTBackend.open_pair(engines, meta)
    with pytest.raises(EngineMismatch, match=message) as caught:
        detector.activate()
    assert "rebuild it: omc build --onnx " in str(caught.value)
    assert recording_runtime == []


@pytest.mark.trt
def test_other_export_is_refused_before_deserialisation(rtx_engines: Path, recording_runtime: list[int]) -> None:
    meta = replace(EngineMeta.load(rtx_engines), max_tracklets=128)
    _, recheck = TensorRTBackend.open_pair(rtx_engines, meta)
    assert recheck is not None
    with pytest.raises(EngineMismatch, match="max_tracklets: 64 in the engine, 128 in export.json"):
        recheck.activate()
    assert recording_runtime == []


@pytest.mark.trt
def test_missing_tensorrt_stops_activation_with_the_extra(rtx_engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    detector, _ = TensorRTBackend.open_pair(rtx_engines, EngineMeta.load(rtx_engines))
    with pytest.raises(MissingDependency, match=r"pip install '\.\[rtx\]'"):
        detector.activate()


@pytest.mark.trt
def test_missing_cuda_python_stops_activation_with_the_extra(rtx_engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    detector, _ = TensorRTBackend.open_pair(rtx_engines, EngineMeta.load(rtx_engines))
    with pytest.raises(MissingDependency, match=r"cuda-bindings \(module cuda.bindings\) is not installed"):
        detector.activate()


def test_type_stubs_are_not_mistaken_for_tensorrt() -> None:
    # tensorrt-stubs leaves an importable `tensorrt` namespace package of .pyi files.
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    if tensorrt is not None and hasattr(tensorrt, "Builder"):
        pytest.skip("full NVIDIA TensorRT is installed here")
    with pytest.raises(MissingDependency, match="NVIDIA TensorRT \\(module tensorrt\\) is not installed.*'trt-cu13' extra.*'trt-cu12' on a CUDA 12 driver"):
        load_tensorrt("tensorrt")


def test_open_pair_refuses_missing_plans_and_skips_recheck_without_it(tmp_path: Path, fp32_export: Path) -> None:
    meta = EngineMeta.load(fp32_export)
    with pytest.raises(BadInput, match=r"detector.plan not found; build the engines: omc build --onnx .* --edition auto"):
        TensorRTBackend.open_pair(fp32_export, meta)
    (tmp_path / contract.DETECTOR_PLAN).write_bytes(b"x")
    no_recheck = replace(meta, has_recheck=False, recheck_channels=0)
    detector, recheck = TensorRTBackend.open_pair(tmp_path, no_recheck, device="cuda:0")
    assert recheck is None and detector.session.device == 0
    assert sorted(detector.outputs) == sorted(contract.DETECTOR_CORE_OUTPUTS)
    with pytest.raises(BadInput, match="recheck.plan not found"):
        TensorRTBackend.open_pair(tmp_path, meta)


def test_pair_shares_one_cuda_session(tmp_path: Path, fp32_export: Path) -> None:
    meta = EngineMeta.load(fp32_export)
    for name in (contract.DETECTOR_PLAN, contract.RECHECK_PLAN):
        (tmp_path / name).write_bytes(b"x")
    detector, recheck = TensorRTBackend.open_pair(tmp_path, meta, device="cuda:1", cuda_graph=True)
    assert recheck is not None
    assert detector.session is recheck.session and detector.session.device == 1
    assert detector.cuda_graph and not recheck.cuda_graph  # graphs for the detector only
    assert recheck.axis_limits[contract.TRACKLET_AXIS] == (1, 64)


@pytest.mark.parametrize(("device", "index"), [(0, 0), (2, 2), ("0", 0), ("cuda", 0), ("cuda:3", 3), (" CUDA:1 ", 1)])
def test_parse_device(device: int | str, index: int) -> None:
    assert parse_device(device) == index


@pytest.mark.parametrize("device", ["cpu", "cuda:x", -1, "gpu0", True])
def test_parse_device_refuses(device: Any) -> None:
    with pytest.raises(BadInput):
        parse_device(device)


@pytest.mark.gpu
@pytest.mark.trt
def test_pair_matches_onnxruntime_on_a_gpu(rtx_engines: Path) -> None:
    if NO_GPU is not None:
        pytest.skip(f"needs a CUDA GPU: {NO_GPU}")
    capability = device_compute_capability(0)
    assert capability is not None
    target = compute_capability_name(*capability)
    if target not in read_header(rtx_engines / contract.DETECTOR_PLAN, "rtx").gpu_targets:
        pytest.skip(f"the portable TensorRT for RTX build does not cover this GPU ({target}; it has no SM90 target at all)")
    from omc.export.trt.verify import compare_trt_with_onnxruntime

    rng = np.random.default_rng(0)
    feeds = [{contract.IMAGES: rng.integers(0, 256, (batch, 192, 320, 3), dtype=np.uint8)} for batch in (1, 2, 4)]
    report = compare_trt_with_onnxruntime(rtx_engines, feeds, "fp32")
    assert report.passed, report.summary()
