"""The ONNX Runtime backend and the engine factory on the toy engines (tests/toy_engines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from toy_engines import TOY_META, write_toy_engines

from omc import contract
from omc.errors import BadInput, EngineMismatch, OmcError
from omc.runtime.backends import open_engines
from omc.runtime.backends.base import DeviceTensor
from omc.runtime.backends.onnxrt import OnnxRuntimeBackend, OrtTensor
from omc.runtime.tracker import Tracker

H, W = TOY_META.input_hw


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy")
    write_toy_engines(folder)
    return folder


@pytest.fixture()
def opened(engines):
    detector, recheck, meta = open_engines(engines, intra_op_threads=1)
    yield detector, recheck, meta
    detector.deactivate()
    recheck.deactivate()


def _images(value=128, batch=1):
    return np.full((batch, H, W, 3), value, np.uint8)


def test_detector_outputs_follow_the_contract(opened, engines):
    detector, _, meta = opened
    out = detector.infer({contract.IMAGES: _images()})
    assert set(out) == set(contract.DETECTOR_OUTPUTS)
    for name, spec in meta.detector_outputs().items():
        shape = tuple(1 if d == contract.BATCH_AXIS else d for d in spec.shape)
        assert out[name].shape == shape and np.dtype(out[name].dtype) == np.dtype(spec.dtype), name
    # The maps that feed the re-check stay ONNX Runtime values; the rest are NumPy arrays.
    for name in contract.RECHECK_FEEDS_FROM_DETECTOR:
        assert isinstance(out[name], OrtTensor) and isinstance(out[name], DeviceTensor)
    assert isinstance(out[contract.DET_SCORES], np.ndarray)
    # Same numbers as a plain session.
    session = ort.InferenceSession(str(engines / contract.DETECTOR_ONNX), providers=["CPUExecutionProvider"])
    plain = dict(zip([o.name for o in session.get_outputs()], session.run(None, {contract.IMAGES: _images()})))
    for name in contract.DETECTOR_OUTPUTS:
        np.testing.assert_allclose(np.asarray(out[name]), plain[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # The toy detector's scores depend on the image: a black frame halves them.
    dark = detector.infer({contract.IMAGES: _images(0)})
    np.testing.assert_allclose(dark[contract.DET_SCORES][0, :3] * 2, out[contract.DET_SCORES][0, :3], rtol=1e-2)
    assert detector.last_latency_ms is not None and detector.providers == ["CPUExecutionProvider"]


def test_batches_up_to_the_export_maximum(opened):
    detector, _, meta = opened
    out = detector.infer({contract.IMAGES: _images(batch=meta.max_batch)})
    assert out[contract.DET_SCORES].shape == (meta.max_batch, meta.topk)
    with pytest.raises(BadInput, match="images"):
        detector.infer({contract.IMAGES: _images(batch=meta.max_batch + 1)})


def test_recheck_consumes_detector_handles_without_copies(opened):
    detector, recheck, _ = opened
    out = detector.infer({contract.IMAGES: _images()})
    tracklets = np.ascontiguousarray(out[contract.DET_EMBEDDINGS][0, :3])
    handles = {name: out[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
    by_handle = recheck.infer({**handles, contract.TRACKLETS: tracklets})
    copies = {name: np.asarray(out[name]) for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
    by_copy = recheck.infer({**copies, contract.TRACKLETS: tracklets})
    assert set(by_handle) == set(contract.RECHECK_OUTPUTS)
    for name in contract.RECHECK_OUTPUTS:
        np.testing.assert_array_equal(by_handle[name], by_copy[name], err_msg=name)
    # n matters: one tracklet gives a different heat map than three.
    fewer = recheck.infer({**handles, contract.TRACKLETS: tracklets[:1]})
    assert not np.array_equal(fewer[contract.RECHECK_HEATMAP], by_handle[contract.RECHECK_HEATMAP])


@pytest.mark.parametrize(
    "feeds_change, tensor",
    [
        ({contract.IMAGES: np.zeros((1, H, W, 3), np.float32)}, "images"),
        ({contract.IMAGES: np.zeros((1, H, W + 32, 3), np.uint8)}, "images"),
        ({contract.IMAGES: np.zeros((H, W, 3), np.uint8)}, "images"),
    ],
)
def test_detector_feed_checks_name_the_tensor(opened, feeds_change, tensor):
    detector, _, _ = opened
    with pytest.raises(BadInput, match=tensor):
        detector.infer(feeds_change)


def test_recheck_feed_checks_name_the_tensor(opened):
    detector, recheck, meta = opened
    out = detector.infer({contract.IMAGES: _images()})
    handles = {name: out[name] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
    with pytest.raises(BadInput, match="tracklets"):
        recheck.infer(handles)  # missing
    with pytest.raises(BadInput, match="tracklets"):
        recheck.infer({**handles, contract.TRACKLETS: np.zeros((meta.max_tracklets + 1, meta.embedding_dim), np.float32)})
    with pytest.raises(BadInput, match="tracklets"):
        recheck.infer({**handles, contract.TRACKLETS: np.zeros((2, meta.embedding_dim), np.float64)})


def test_missing_execution_provider_is_a_clear_error(engines):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    backend = OnnxRuntimeBackend(engines / contract.DETECTOR_ONNX, TOY_META, "detector", "cuda")
    with pytest.raises(OmcError, match="CUDAExecutionProvider"):
        backend.activate()
    assert not backend.is_active
    with pytest.raises(BadInput, match="cpu, cuda, tensorrt"):
        OnnxRuntimeBackend(engines / contract.DETECTOR_ONNX, TOY_META, "detector", "gpu")


def test_engines_from_another_export_are_refused(tmp_path, engines):
    for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX, contract.EXPORT_JSON):
        (tmp_path / name).write_bytes((engines / name).read_bytes())
    data = json.loads((tmp_path / contract.EXPORT_JSON).read_text())
    data["checkpoint_sha256"] = "0" * 64
    (tmp_path / contract.EXPORT_JSON).write_text(json.dumps(data))
    with pytest.raises(EngineMismatch, match="checkpoint_sha256.*re-export with omc export"):
        open_engines(tmp_path)


def test_engine_io_that_disagrees_with_export_json_is_refused(tmp_path, engines):
    # Without metadata in the file, the inputs and outputs still give a different export away.
    for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX):
        model = onnx.load(str(engines / name))
        del model.metadata_props[:]
        onnx.save(model, str(tmp_path / name))
    data = json.loads((engines / contract.EXPORT_JSON).read_text())
    data["topk"] = 64
    (tmp_path / contract.EXPORT_JSON).write_text(json.dumps(data))
    with pytest.raises(EngineMismatch, match="det_boxes.*re-export with omc export"):
        open_engines(tmp_path)


def test_factory_refusals(tmp_path, engines):
    with pytest.raises(BadInput, match="backend 'onnx'"):
        open_engines(engines, backend="onnx")
    with pytest.raises(BadInput, match="runs on a GPU"):
        open_engines(engines, backend="trt", device="cpu")
    # The default device "auto" sends TensorRT to the GPU: here it stops there (no plans, library or GPU).
    with pytest.raises(OmcError) as refused:
        open_engines(engines, backend="trt")
    assert "runs on a GPU" not in str(refused.value)
    with pytest.raises(BadInput, match="not found"):
        open_engines(tmp_path)
    for name in (contract.DETECTOR_ONNX, contract.EXPORT_JSON):
        (tmp_path / name).write_bytes((engines / name).read_bytes())
    with pytest.raises(BadInput, match="recheck.onnx not found"):
        open_engines(tmp_path)


def test_cstrack_export_opens_without_recheck(tmp_path):
    meta = write_toy_engines(tmp_path, with_recheck=False)
    detector, recheck, loaded = open_engines(tmp_path)
    try:
        assert recheck is None and loaded == meta and not loaded.has_recheck
        out = detector.infer({contract.IMAGES: _images()})
        assert set(out) == set(contract.DETECTOR_CORE_OUTPUTS)
    finally:
        detector.deactivate()


def test_tracker_from_engines_runs_end_to_end(engines):
    frame = np.full((480, 800, 3), 128, np.uint8)
    with Tracker.from_engines(engines, intra_op_threads=1) as tracker:
        results = [tracker.update(frame) for _ in range(4)]
        detector = tracker.detector
        assert results[0] == [] and len(results[1]) > 0
        assert tracker.last_tracklet_count > 0 and tracker.last_timings_ms["recheck"] > 0
        ids = [t.track_id for t in results[1]]
        assert ids == sorted(ids) and ids[0] == 1
        for track in results[3]:
            assert track.box.shape == (4,) and np.isfinite(track.box).all()
    assert not detector.is_active


def test_cstrack_tracker_from_engines(tmp_path):
    write_toy_engines(tmp_path, with_recheck=False)
    with Tracker.from_engines(tmp_path) as tracker:
        assert tracker.recheck is None
        results = [tracker.update(np.full((H, W, 3), 128, np.uint8)) for _ in range(3)]
    assert len(results[2]) > 0 and not any(t.restored for t in results[2])
