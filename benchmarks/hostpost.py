"""Host post-processing cost (NMS + fusion + association) on the synthetic crowd, three ways.

The same `SyntheticCrowd` frames (default 50 tracks, 100 detections above threshold, 100
re-check peaks) go through:

- `runtime`: omc's NumPy tracker (`Tracker.update_from_outputs` on the engines' compact outputs;
  the re-check engine replaced by an instant stand-in returning the frame's peaks);
- `torch_reference_path`: this project's PyTorch eager path (`TorchReferenceTracker`) from the
  network's raw outputs: re-check decode (boxes over the whole map, 3 x 3 peak suppression,
  top 100), threshold + cluster-DIoU NMS in torch, fusion, association;
- `reference_tracker`: the reference implementation's own `JDETracker.update` (in a subprocess,
  omc.benchmarks.reference_tracker), only when a checkout of it is given.

Each reports median and p90 per frame after a warm-up, and the output track ids of every timed
frame, so the three can be checked to agree.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.errors import BadInput
from omc.runtime.letterbox import LetterboxTransform
from omc.runtime.tracker import Tracker

from omc.benchmarks.stages import StageStats, summarize
from omc.benchmarks.synthetic import SyntheticCrowd

log = logging.getLogger(__name__)

# Variant of the throw-away network whose box decoder (Detect's k at initialisation, the grid)
# the PyTorch path's re-check decode uses; the smallest builds fastest.
DECODER_VARIANT = "s"
REFERENCE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class HostResult:
    """One implementation's host cost per frame: stage statistics (ms) and its output track ids."""

    stages: dict[str, StageStats]
    tracks: list[list[int]] = field(default_factory=list)
    notes: str = ""

    @property
    def total(self) -> StageStats:
        return self.stages["total"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "stages": {name: stats.to_dict() for name, stats in self.stages.items()},
            "median_output_tracks": int(np.median([len(t) for t in self.tracks])) if self.tracks else 0,
            "notes": self.notes,
        }


class _ReplayRecheck:
    """The re-check engine's stand-in: returns the current frame's peaks instantly."""

    def __init__(self) -> None:
        self.outputs: Mapping[str, np.ndarray] = {}

    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
        return self.outputs


class _NoDetector:
    def infer(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        raise BadInput("host timing feeds detector outputs directly")


def identity_transform(input_hw: tuple[int, int]) -> LetterboxTransform:
    """Frames that are the network input: network pixels are frame pixels."""
    return LetterboxTransform(1.0, 1.0, 0.0, 0.0, input_hw, input_hw)


def time_runtime(crowd: SyntheticCrowd, frames: int, warmup: int, config: TrackerConfig = TrackerConfig()) -> HostResult:
    """omc's NumPy host code on the crowd's engine-level outputs."""
    meta = EngineMeta(input_hw=crowd.input_hw, peaks=crowd.peaks, has_recheck=True, recheck_channels=1)
    recheck = _ReplayRecheck()
    tracker = Tracker(_NoDetector(), recheck, meta, config)
    transform = identity_transform(crowd.input_hw)
    nms, association, tracks = [], [], []
    for index, frame in enumerate(crowd.frames(warmup + frames)):
        detector_outputs = frame.detector_outputs()
        recheck.outputs = frame.recheck_outputs()
        online = tracker.update_from_outputs(detector_outputs, transform)
        if index >= warmup:
            # The stand-in re-check takes microseconds; its slot is the tracklet-pool build.
            nms.append(tracker.last_timings_ms["nms_fusion"] + tracker.last_timings_ms["recheck"])
            association.append(tracker.last_timings_ms["association"])
            tracks.append(sorted(t.track_id for t in online))
    return _result(nms, association, tracks, "re-check peaks come from the engine (decoded on the device)")


def time_torch_path(crowd: SyntheticCrowd, frames: int, warmup: int, config: TrackerConfig = TrackerConfig()) -> HostResult:
    """The PyTorch eager path's post-processing on the crowd's network-level outputs."""
    import torch

    from omc.benchmarks.torch_baseline import TorchReferencePath, TorchReferenceTracker
    from omc.export.model import DetectorOutputs, architecture_for_variant, build_network

    with torch.random.fork_rng(devices=[]):
        decoder = build_network(architecture_for_variant(DECODER_VARIANT), crowd.input_hw)
    path = TorchReferencePath(decoder, config, peaks=crowd.peaks)
    tracker = TorchReferenceTracker(path, config)
    transform = identity_transform(crowd.input_hw)
    nms, association, tracks = [], [], []
    for index, frame in enumerate(crowd.frames(warmup + frames)):
        outputs = DetectorOutputs(
            candidates=torch.from_numpy(frame.candidates),
            dense=torch.from_numpy(frame.dense),
            id_map=torch.from_numpy(frame.id_map),
            recheck_features=None,
            siambox_raw=torch.from_numpy(frame.siambox_raw),
        )
        online = tracker.update_from_torch(outputs, transform, heatmap=torch.from_numpy(frame.heatmap))
        if index >= warmup:
            timings = tracker.last_timings_ms
            nms.append(timings["recheck"] + timings["nms_fusion"])
            association.append(timings["association"])
            tracks.append(sorted(t.track_id for t in online))
    return _result(nms, association, tracks, "includes the re-check decode (peaks, top 100) the reference runs on its side")


def time_reference(
    repo: Path, crowd: SyntheticCrowd, frames: int, warmup: int, threads: int
) -> tuple[HostResult | None, str]:
    """The reference tracker's update on the crowd, in a subprocess; (None, reason) when it fails."""
    if crowd.input_hw != (608, 1088):
        return None, "the reference tracker hard-codes the 76 x 136 map of a 1088 x 608 input"
    with tempfile.TemporaryDirectory(prefix="omc-reference-") as folder:
        out = Path(folder) / "reference.json"
        command = [
            sys.executable, "-m", "omc.benchmarks.reference_tracker", "--repo", str(repo), "--out", str(out),
            "--tracks", str(crowd.tracks), "--detections", str(crowd.detections), "--frames", str(frames),
            "--warmup", str(warmup), "--seed", str(crowd.seed), "--threads", str(threads),
        ]  # fmt: skip
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return None, f"the reference tracker did not finish within {REFERENCE_TIMEOUT_S:.0f} s"
        if result.returncode != 0 or not out.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"the reference tracker failed ({last})"
        data = json.loads(out.read_text())
    log.info("reference tracker: %d frames in %.1f s (stubbed: %s)", frames, time.perf_counter() - start,
             ", ".join(data["stubbed"]) or "nothing")
    samples = data["samples_ms"]
    stages = {"total": summarize(samples)}
    notes = "JDETracker.update minus the stand-in network; stubbed: " + (", ".join(data["stubbed"]) or "nothing")
    return HostResult(stages, data["tracks"], notes), ""


def _result(nms: list[float], association: list[float], tracks: list[list[int]], notes: str) -> HostResult:
    total = np.add(nms, association).tolist()
    stages = {"nms_fusion": summarize(nms), "association": summarize(association), "total": summarize(total)}
    return HostResult(stages, tracks, notes)


def agreement(a: HostResult, b: HostResult) -> float:
    """Share of the timed frames on which two implementations output the same track ids."""
    if not a.tracks or len(a.tracks) != len(b.tracks):
        return 0.0
    return float(np.mean([x == y for x, y in zip(a.tracks, b.tracks)]))


def measure_host(
    tracks: int,
    detections: int,
    frames: int,
    warmup: int,
    seed: int,
    threads: int,
    reference_repo: Path | None = None,
    with_torch: bool = True,
) -> dict[str, Any]:
    """Host post-processing of the three implementations on the same synthetic crowd (JSON-able).

    Returns {"workload": ..., "runtime": ..., "torch_reference_path": ..., "reference_tracker":
    ..., "agreement": {...}}; an implementation that cannot run has status "skipped" and a reason.
    """
    crowd = SyntheticCrowd(tracks, detections, seed=seed)
    report: dict[str, Any] = {
        "workload": {"tracks": tracks, "detections": detections, "peaks": crowd.peaks, "frames": frames,
                     "warmup": warmup, "seed": seed, "input_hw": list(crowd.input_hw)},
    }  # fmt: skip
    runtime = time_runtime(crowd, frames, warmup)
    report["runtime"] = runtime.to_dict()
    results = {"runtime": runtime}
    if with_torch:
        torch_result = time_torch_path(crowd, frames, warmup)
        report["torch_reference_path"] = torch_result.to_dict()
        results["torch_reference_path"] = torch_result
    else:
        report["torch_reference_path"] = {"status": "skipped", "reason": "torch is not installed (the export extra)"}
    if reference_repo is None:
        report["reference_tracker"] = {"status": "skipped", "reason": "no --reference-repo given"}
    else:
        reference, reason = time_reference(reference_repo, crowd, frames, warmup, threads)
        if reference is None:
            log.warning("reference tracker skipped: %s", reason)
            report["reference_tracker"] = {"status": "skipped", "reason": reason}
        else:
            report["reference_tracker"] = reference.to_dict()
            results["reference_tracker"] = reference
    report["agreement"] = {
        f"runtime_vs_{name}": agreement(runtime, result) for name, result in results.items() if name != "runtime"
    }
    return report
