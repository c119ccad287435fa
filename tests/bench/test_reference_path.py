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
from omc.benchmarks.reference_path import (  # noqa: E402
    TorchReferencePath,
    TorchReferenceTracker,
    cluster_diou_nms_torch,
)
from omc.cli import main  # noqa: E402
from omc.config import TrackerConfig  # noqa: E402
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
    engines = copy_export(export[0], tmp_path / "engines")  # the benchmark writes int8-cpu/ into it
    results = tmp_path / "results"
    status = main([
        "bench", "--onnx", str(engines), "--backend", "torch,ort,ort-int8", "--frames", "2", "--warmup", "1",
        "--tracklets", "0,4", "--headline-tracklets", "4", "--batch", "1,2", "--batch-repeats", "1",
        "--host-frames", "3", "--ceiling-size", "64", "--results", str(results), "--name", "small",
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
