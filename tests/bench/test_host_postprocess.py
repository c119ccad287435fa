"""Host post-processing workload: the synthetic crowd, its three consumers, and the reference shims."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omc import contract
from omc.benchmarks.hostpost import agreement, measure_host, time_runtime, time_torch_path
from omc.benchmarks.reference_tracker import _StubFinder, bbox_overlaps, find_lib_dir
from omc.benchmarks.stages import FrameTimings, summarize
from omc.benchmarks.synthetic import SyntheticCrowd, decode_recheck_boxes, suppress_non_peaks
from omc.runtime.boxes import box_iou


def test_summarize_median_p90_and_frame_totals() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (stats.median_ms, stats.min_ms, stats.mean_ms, stats.samples) == (3.0, 1.0, 4.0, 5)
    assert stats.p90_ms == pytest.approx(4.0 + 0.6 * 6.0)  # numpy's linear interpolation between 4 and 10
    timings = FrameTimings()
    timings.add({"detector": 5.0, "recheck": 1.5})
    timings.add({"detector": 7.0, "letterbox": 1.0})
    assert timings.samples("total") == [6.5, 8.0]  # a missing stage counts 0 ms
    with pytest.raises(ValueError, match="unknown stage"):
        timings.add({"decode": 1.0})


def test_crowd_frames_are_deterministic_and_consistent() -> None:
    crowd = SyntheticCrowd(tracks=6, detections=10, peaks=20, seed=3)
    first = [frame.detector_outputs() for frame in crowd.frames(3)]
    again = [frame.detector_outputs() for frame in crowd.frames(3)]
    for a, b in zip(first, again):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    frame = next(iter(crowd.frames(1)))
    det = frame.detector_outputs()
    assert det[contract.DET_BOXES].shape == (1, 10, 4) and np.all(np.diff(det[contract.DET_SCORES][0]) <= 0)
    norms = np.linalg.norm(det[contract.DET_EMBEDDINGS][0], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    trans = frame.recheck_outputs()
    assert trans[contract.TRANS_BOXES].shape == (1, 20, 4)
    assert np.all(np.diff(trans[contract.TRANS_SCORES][0]) <= 0)


def test_peak_suppression_and_box_decode_by_hand() -> None:
    heat = np.zeros((4, 5), np.float32)
    heat[1, 1], heat[1, 2], heat[3, 4] = 0.5, 0.4, 0.2  # 0.4 sits next to 0.5: suppressed
    kept = suppress_non_peaks(heat)
    assert kept[1, 1] == 0.5 and kept[1, 2] == 0 and kept[3, 4] == pytest.approx(0.2)
    raw = np.zeros((2, 3, 4), np.float32)
    raw[1, 2] = [0.0, 0.0, 2.0, 4.0]  # sigmoid(0) = 0.5: the cell's own corner; 2 x 8 by 4 x 8 pixels
    box = decode_recheck_boxes(raw)[1, 2]
    np.testing.assert_allclose(box, [2 * 8 - 8, 1 * 8 - 16, 2 * 8 + 8, 1 * 8 + 16])


def test_runtime_and_torch_path_make_the_same_tracks() -> None:
    pytest.importorskip("torch")
    crowd = SyntheticCrowd(tracks=8, detections=16, peaks=30, seed=1)
    runtime = time_runtime(crowd, frames=6, warmup=2)
    torch_path = time_torch_path(crowd, frames=6, warmup=2)
    assert set(runtime.stages) == {"nms_fusion", "association", "total"}
    assert len(runtime.tracks) == 6 and max(len(t) for t in runtime.tracks) > 0
    assert agreement(runtime, torch_path) == 1.0


def test_measure_host_without_reference_records_why() -> None:
    report = measure_host(tracks=4, detections=8, frames=2, warmup=1, seed=0, threads=1, with_torch=False)
    assert report["runtime"]["status"] == "ok"
    assert report["reference_tracker"] == {"status": "skipped", "reason": "no --reference-repo given"}
    assert report["torch_reference_path"]["status"] == "skipped"
    assert report["workload"]["tracks"] == 4


def test_bbox_overlaps_shim_is_the_plus_one_iou() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (30, 2))
    a = np.concatenate([corners, corners + rng.uniform(-5, 40, (30, 2))], 1)  # some degenerate boxes
    b = a[rng.permutation(30)[:12]] + rng.normal(0, 3, (12, 4))
    np.testing.assert_allclose(bbox_overlaps(a, b), box_iou(a, b, plus_one=True), atol=1e-12)
    # Two 10 x 10 (inclusive) boxes sharing a 5 x 10 strip: 50 / (100 + 100 - 50).
    assert bbox_overlaps(np.array([[0, 0, 9, 9.0]]), np.array([[5, 0, 14, 9.0]]))[0, 0] == pytest.approx(50 / 150)


def test_stub_finder_makes_missing_modules_inert() -> None:
    finder = _StubFinder(["omc_bench_absent_library"])
    sys.meta_path.insert(0, finder)
    try:
        module = importlib.import_module("omc_bench_absent_library.ops")
        assert module.nms(1, 2).anything.more is not None  # attributes and calls give inert stand-ins
        base = importlib.import_module("omc_bench_absent_library").Base

        class Derived(base):  # type: ignore[misc, valid-type]
            pass

        assert Derived.__mro__[-1] is object
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.startswith("omc_bench_absent_library")]:
            del sys.modules[name]


def test_find_lib_dir_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="JudasDie/SOTS"):
        find_lib_dir(tmp_path)
    lib = tmp_path / "OMC" / "lib" / "tracker"
    lib.mkdir(parents=True)
    (lib / "cstrack_w_recheck.py").write_text("")
    assert find_lib_dir(tmp_path) == tmp_path / "OMC" / "lib"


@pytest.mark.slow
def test_reference_tracker_agrees_with_the_runtime(tmp_path: Path) -> None:
    """Needs a checkout of JudasDie/SOTS (branch MOT) named by OMC_SOTS_REPO; never part of omc."""
    repo = os.environ.get("OMC_SOTS_REPO")
    if not repo:
        pytest.skip("set OMC_SOTS_REPO to a checkout of JudasDie/SOTS (branch MOT) to run the reference tracker")
    out = tmp_path / "reference.json"
    subprocess.run(
        [sys.executable, "-m", "omc.benchmarks.reference_tracker", "--repo", repo, "--out", str(out),
         "--tracks", "20", "--detections", "40", "--frames", "8", "--warmup", "2", "--seed", "2"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    reference = json.loads(out.read_text())
    runtime = time_runtime(SyntheticCrowd(tracks=20, detections=40, seed=2), frames=8, warmup=2)
    assert reference["tracks"] == runtime.tracks
