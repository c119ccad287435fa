"""The TensorRT entropy calibrator's GPU-free parts: batching, the cache file, the callbacks; and a
clean refusal where full TensorRT or a GPU is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omc import contract
from omc.calib.dataset import CalibrationSet, TrackletSamples
from omc.calib.trt_calibrator import CalibrationBatches, CalibrationCache, EntropyCalibratorCore, entropy_calibrator
from omc.errors import BadInput, MissingDependency, OmcError


def _frames(count: int) -> np.ndarray:
    """uint8 [count, 8, 16, 3]; frame i is filled with i."""
    return np.repeat(np.arange(count, dtype=np.uint8), 8 * 16 * 3).reshape(count, 8, 16, 3)


def test_batches_are_full_contiguous_and_in_order(caplog: pytest.LogCaptureFixture) -> None:
    batches = CalibrationBatches(_frames(7)[:, :, ::2], batch_size=3)  # a strided view as input
    assert len(batches) == 2  # 7 // 3; the seventh frame is dropped, and logged
    assert "1 calibration frame(s) beyond the last full batch of 3" in caplog.text
    served = list(batches)
    assert [b.shape for b in served] == [(3, 8, 8, 3), (3, 8, 8, 3)]
    assert all(b.flags["C_CONTIGUOUS"] for b in served)
    assert [int(b[i, 0, 0, 0]) for b in served for i in range(3)] == [0, 1, 2, 3, 4, 5]
    assert batches.batch_nbytes == 3 * 8 * 8 * 3


def test_batches_refuse_what_cannot_fill_one_batch() -> None:
    with pytest.raises(BadInput, match="fewer than one batch of 4"):
        CalibrationBatches(_frames(3), batch_size=4)
    with pytest.raises(BadInput, match="uint8"):
        CalibrationBatches(_frames(3).astype(np.float32))
    with pytest.raises(BadInput, match="at least 1"):
        CalibrationBatches(_frames(3), batch_size=0)


def test_batches_read_a_calibration_set(tmp_path: Path) -> None:
    empty = TrackletSamples.from_lists([], [], [], dim=4)
    path = CalibrationSet(_frames(5), _frames(1), np.zeros((5, 2), np.int64), np.zeros((1, 2), np.int64),
                          empty, empty).save(tmp_path / "set.npz")  # fmt: skip
    batches = CalibrationBatches.from_file(path, batch_size=2)
    assert len(batches) == 2 and int(batches.batch(1)[1, 0, 0, 0]) == 3


def test_cache_round_trip_is_byte_exact_and_atomic(tmp_path: Path) -> None:
    cache = CalibrationCache(tmp_path / "sub" / "detector.calib")
    assert cache.read() is None  # no file: TensorRT calibrates
    data = bytes(range(256)) * 3 + b"TRT-1001-EntropyCalibration2\n"
    cache.write(memoryview(data))
    assert cache.read() == data
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["detector.calib"]
    cache.write(b"")
    assert cache.read() is None  # an empty cache is no cache


def test_core_serves_each_batch_once_then_signals_the_end(tmp_path: Path) -> None:
    uploaded: list[np.ndarray] = []

    def upload(batch: np.ndarray) -> int:
        uploaded.append(batch.copy())
        return 0x1000 + len(uploaded)

    core = EntropyCalibratorCore(CalibrationBatches(_frames(4), 2), CalibrationCache(tmp_path / "c.bin"), upload)
    assert core.batch_size == 2
    assert core.get_batch([contract.IMAGES]) == [0x1001]
    assert core.get_batch([contract.IMAGES]) == [0x1002]
    assert core.get_batch([contract.IMAGES]) == []  # TensorRT stops calibrating
    assert [int(b[0, 0, 0, 0]) for b in uploaded] == [0, 2]
    core.write_calibration_cache(b"scales")
    assert core.read_calibration_cache() == b"scales"
    with pytest.raises(OmcError, match="feeds only the detector's 'images'"):
        core.get_batch([contract.TRACKLETS])


def test_without_full_tensorrt_or_a_gpu_the_calibrator_is_one_clean_error(tmp_path: Path) -> None:
    from omc.runtime.backends.cuda_memory import cuda_unavailable_reason

    try:
        import tensorrt

        full_tensorrt = hasattr(tensorrt, "Builder")  # tensorrt-stubs alone import as an empty package
    except ImportError:
        full_tensorrt = False
    gpu = cuda_unavailable_reason(0) is None
    with pytest.raises(OmcError) as raised:
        entropy_calibrator(tmp_path / "set.npz", tmp_path / "cache.bin")
    message = str(raised.value)
    assert "\n" not in message
    if not full_tensorrt:
        assert isinstance(raised.value, MissingDependency) and "module tensorrt" in message
    elif not gpu:
        assert "runs the network on a CUDA GPU" in message
    else:  # everything present: the missing calibration set is what fails
        assert isinstance(raised.value, BadInput) and "set.npz not found" in message
    assert not (tmp_path / "cache.bin").exists()
