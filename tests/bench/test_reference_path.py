"""The PyTorch eager reference path decides as the runtime does (same detections, same tracks), and
`omc bench` times it side by side with ONNX Runtime on a small real export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omc.benchmarks.clip import generated_clip  # noqa: E402
from omc.benchmarks.torch_baseline import (  # noqa: E402
    TorchReferencePath,
    TorchReferenceTracker,
    cluster_diou_nms_torch,
)
from omc.cli import main  # noqa: E402
from omc.config import TrackerConfig  # noqa: E402
from omc.contract import EngineMeta  # noqa: E402
from omc.runtime.nms import cluster_diou_nms, nms_thresholds  # noqa: E402
from omc.runtime.tracker import Tracker  # noqa: E402
from small_export import copy_export, small_checkpoint, small_export  # noqa: E402

# Frames of the generated clip (smaller than MOT17's: the network input is small anyway).
CLIP_SIZE = (640, 360)
CLIP_FRAMES = 8
# The small random network scores the clip's candidates around 0.01-0.2: a low detection
# threshold gives it tracks, re-check calls and restored boxes to compare (fewer candidates pass
# it than the engine's top-K keeps, so both paths see the same candidates).
CONF_THRES = 0.05
# Source frames of the benchmark run (its INT8 calibration takes 16 + 8 held out; fewer is a warning).
CALIBRATION_SOURCE_FRAMES = 12


@pytest.fixture(scope="module")
def export() -> tuple[Path, Any]:
    """(export folder, LoadedCheckpoint) of the tests' small random-weights OMC export (not to be modified)."""
    return small_export(), small_checkpoint()


def test_torch_nms_keeps_what_the_runtime_keeps() -> None:
    rng = np.random.default_rng(4)
    centres = rng.uniform(20, 300, (60, 2))
    sizes = rng.uniform(10, 60, (60, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
    boxes = np.concatenate([boxes, boxes + rng.normal(0, 2, boxes.shape).astype(np.float32)])  # near-duplicates
    scores = rng.uniform(0.5, 1.0, len(boxes)).astype(np.float32)
    density = rng.uniform(0.3, 0.9, len(boxes)).astype(np.float32)
    thresholds = nms_thresholds(density, 0.6)
    expected = cluster_diou_nms(boxes, scores, thresholds, exponent=0.7, max_rounds=200, max_keep=300)
    got = cluster_diou_nms_torch(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(thresholds),
        exponent=0.7, max_rounds=200, max_keep=300,
    )  # fmt: skip
    assert 0 < len(expected) < len(boxes)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert len(cluster_diou_nms_torch(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0), exponent=0.7,
                                      max_rounds=200, max_keep=300)) == 0  # fmt: skip


def test_torch_path_tracks_equal_the_runtimes(export: tuple[Path, Any]) -> None:
    engines, loaded = export
    config = TrackerConfig(conf_thres=CONF_THRES)
    frames = generated_clip(CLIP_SIZE, CLIP_FRAMES, seed=0)
    with Tracker.from_engines(engines, config=config) as runtime:
        reference = TorchReferenceTracker(TorchReferencePath(loaded.network, config, peaks=runtime.meta.peaks), config)
        tracked, restored, rechecked = 0, 0, 0
        for frame in frames:
            expected = runtime.update(frame)
            got = reference.update(frame)
            ours, theirs = runtime.last_detections, reference.last_detections
            assert ours is not None and theirs is not None
            assert len(theirs) == len(ours)
            np.testing.assert_array_equal(theirs.restored, ours.restored)
            np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=0.5)
            np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-3)
            assert reference.last_tracklet_count == runtime.last_tracklet_count
            assert [t.track_id for t in got] == [t.track_id for t in expected]
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a.box, b.box, atol=0.5)
                assert a.restored == b.restored
            tracked += len(expected)
            restored += int(ours.restored.sum())
            rechecked += runtime.last_tracklet_count
    # The comparison is only worth something if the clip made tracks, re-check calls and restored boxes.
    assert tracked > 0 and rechecked > 0 and restored > 0


def test_bench_times_torch_beside_onnxruntime(export: tuple[Path, Any], tmp_path: Path) -> None:
    """torch, ort and ort-int8 (whose INT8 graphs the benchmark makes with omc.calib) side by side."""
    import cv2

    engines = copy_export(export[0], tmp_path / "engines")  # the benchmark writes int8-cpu/ into it
    # A few small frames as the source: the benchmark calibrates on them (on its default 1920x1080
    # clip, making the calibration set alone took 16 s of this test).
    source = tmp_path / "frames"
    source.mkdir()
    for index, frame in enumerate(generated_clip(CLIP_SIZE, CALIBRATION_SOURCE_FRAMES, seed=0)):
        assert cv2.imwrite(str(source / f"{index + 1:06d}.png"), frame)
    results = tmp_path / "results"
    status = main([
        "bench", "--onnx", str(engines), "--backend", "torch,ort,ort-int8", "--frames", "2", "--warmup", "1",
        "--tracklets", "0,4", "--headline-tracklets", "4", "--batch", "1,2", "--batch-repeats", "1",
        "--host-frames", "3", "--ceiling-size", "64", "--source", str(source), "--threads", "1",
        "--results", str(results), "--name", "small",
    ])  # fmt: skip
    assert status == 0
    result = json.loads((results / "small.json").read_text())
    torch_run, ort_run = result["backends"]["torch"], result["backends"]["ort"]
    assert torch_run["status"] == ort_run["status"] == "ok"
    assert torch_run["speedup_vs_torch"] == 1.0
    assert ort_run["speedup_vs_torch"] == pytest.approx(
        torch_run["stages"]["total"]["median_ms"] / ort_run["stages"]["total"]["median_ms"])
    assert torch_run["environment"]["backend"]["threads"] == ort_run["environment"]["backend"]["threads"]
    assert torch_run["environment"]["backend"]["weights"].startswith("random weights")
    assert [e["n"] for e in torch_run["tracklet_sweep"]] == [0, 4]
    assert torch_run["stages"]["recheck"]["median_ms"] > 0
    assert result["model"]["flops"]["omc_vs_cstrack"] > 1.0
    int8 = result["backends"]["ort-int8"]
    assert int8["status"] == "ok" and int8["environment"]["backend"]["engine_dir"] == str(engines / "int8-cpu")
    assert (engines / "int8-cpu" / "export.json").is_file()
    # The calibration set stays beside the export, so omc verify can judge the INT8 graphs later.
    record = EngineMeta.load(engines / "int8-cpu").extra["int8"]
    assert record["calibration"]["path"] == str((engines / "calib-bench.npz").resolve())
    assert record["float_export"] == str(engines.resolve())


def test_channels_last_and_fp16_forms_decide_as_fp32_and_leave_the_network_alone(export: tuple[Path, Any]) -> None:
    """The CUDA backends' forms, checked on the CPU: channels-last float32 gives the NCHW path's
    detections; float16 stays finite and near; the caller's float32 network is not converted."""
    _, loaded = export
    config = TrackerConfig(conf_thres=CONF_THRES)
    frame = generated_clip(CLIP_SIZE, 1, seed=0)[0]

    def run(**options: Any) -> tuple[Any, Any, Any]:
        path = TorchReferencePath(loaded.network, config, peaks=100, **options)
        images, transform = path.preprocess(frame)
        outputs = path.detect(path.to_device(images))
        tracklets = path.network.normalize_id_map(outputs.id_map[0:1].float())[0, 4:8, 4:8].reshape(16, -1)
        peaks = path.recheck(outputs, tracklets)
        return outputs, peaks, path.detections(outputs, peaks, transform)

    base_outputs, base_peaks, base = run()
    cl_outputs, cl_peaks, channels_last = run(channels_last=True)
    assert len(base) > 0 and int(base.restored.sum()) > 0  # detections and restored boxes to compare
    np.testing.assert_allclose(cl_outputs.candidates.numpy(), base_outputs.candidates.numpy(), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(cl_peaks.scores.numpy(), base_peaks.scores.numpy(), atol=1e-5)
    np.testing.assert_array_equal(channels_last.restored, base.restored)
    np.testing.assert_allclose(channels_last.boxes, base.boxes, atol=0.05)
    half_outputs, half_peaks, half = run(precision="fp16", channels_last=True)
    assert half_outputs.candidates.dtype == torch.float16
    assert torch.isfinite(half_outputs.candidates).all() and torch.isfinite(half_peaks.scores).all()
    assert half.boxes.dtype == np.float32 and half.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.sort(half_peaks.scores.numpy()), np.sort(base_peaks.scores.numpy()), atol=5e-3)
    weight = loaded.network.model.model[1].conv.weight  # a 3x3 convolution's [out, in, 3, 3] weight
    assert weight.dtype == torch.float32 and weight.is_contiguous()
    assert not weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_graphs_need_a_cuda_device(export: tuple[Path, Any]) -> None:
    from omc.errors import BadInput

    with pytest.raises(BadInput, match="CUDA graphs need a CUDA device, not 'cpu'"):
        TorchReferencePath(export[1].network, cuda_graph=True)
    with pytest.raises(BadInput, match="precision 'int8' is not one of fp32, fp16"):
        TorchReferencePath(export[1].network, precision="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; this machine has a CUDA GPU")
def test_cuda_backends_are_skipped_with_their_reason_without_a_gpu(export: tuple[Path, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    status = main([
        "bench", "--onnx", str(export[0]), "--backend", "torch-cuda,torch-cuda-graph,ort", "--frames", "1",
        "--warmup", "0", "--tracklets", "0,4", "--headline-tracklets", "4", "--batch", "1", "--batch-repeats", "1",
        "--host-frames", "2", "--ceiling-size", "64", "--results", str(results), "--name", "cuda",
    ])  # fmt: skip
    assert status == 0
    result = json.loads((results / "cuda.json").read_text())
    for name in ("torch-cuda", "torch-cuda-graph"):
        assert result["backends"][name]["status"] == "skipped"
        assert result["backends"][name]["reason"].startswith(f"{name} needs a CUDA GPU that torch can use")
    assert result["backends"]["ort"]["status"] == "ok"
    assert "- torch-cuda: skipped (torch-cuda needs a CUDA GPU" in (results / "cuda.md").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU that torch can use")
def test_cuda_graph_replays_the_eager_detector_frame_after_frame(export: tuple[Path, Any]) -> None:
    _, loaded = export
    options = {"device": "cuda", "precision": "fp16", "channels_last": True}
    eager = TorchReferencePath(loaded.network, peaks=100, **options)
    graphed = TorchReferencePath(loaded.network, peaks=100, cuda_graph=True, **options)
    frames = generated_clip(CLIP_SIZE, 3, seed=1)
    previous = None
    for frame in frames:
        images, _ = eager.preprocess(frame)
        expected = eager.detect(eager.to_device(images))
        got = graphed.detect(graphed.to_device(images))
        for name in ("candidates", "dense", "id_map", "recheck_features", "siambox_raw"):
            np.testing.assert_allclose(getattr(got, name).float().cpu().numpy(), getattr(expected, name).float().cpu().numpy(),
                                       rtol=1e-2, atol=1e-2, err_msg=name)  # fmt: skip
        current = got.candidates.float().cpu().numpy()
        assert previous is None or not np.array_equal(current, previous)  # the graph read the new frame
        previous = current
    assert len(graphed.captured._graphs) == 1  # type: ignore[union-attr]  # one shape, one capture
