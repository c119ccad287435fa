"""Time the tracker's host post-processing (NMS + fusion + association) on a synthetic crowd.

Not a test: `python tests/host_postprocess_timing.py [--tracks 50] [--detections 100] [--frames 300]`
prints the median and 90th percentile per frame of the `nms_fusion` and `association` stages
(re-check engine replaced by an instant stand-in), after a warm-up.
"""

from __future__ import annotations

import argparse

import numpy as np

from omc import contract
from omc.contract import EngineMeta
from omc.runtime.letterbox import LetterboxTransform
from omc.runtime.tracker import Tracker


def synthetic_outputs(rng: np.random.Generator, tracks: int, detections: int, frames: int, dim: int = 512):
    """Per frame: detector outputs with `detections` candidates above threshold (one per person,
    the rest duplicates), and re-check outputs with 100 peaks (half above the heat threshold)."""
    codes = rng.standard_normal((tracks, dim)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    start = np.stack([rng.uniform(40, 1000, tracks), rng.uniform(100, 500, tracks)], axis=1)
    velocity = rng.uniform(-2, 2, (tracks, 2))
    size = np.stack([rng.uniform(30, 60, tracks), rng.uniform(80, 160, tracks)], axis=1)
    for f in range(frames):
        centre = start + velocity * f
        person = np.concatenate([np.arange(tracks), rng.integers(0, tracks, detections - tracks)])
        jitter = rng.normal(0, 1.5, (detections, 2))
        c = centre[person] + jitter
        half = size[person] / 2
        boxes = np.concatenate([c - half, c + half], axis=1).astype(np.float32)
        scores = np.concatenate([rng.uniform(0.7, 0.95, tracks), rng.uniform(0.51, 0.69, detections - tracks)])
        order = np.argsort(-scores)
        emb = codes[person] + rng.normal(0, 0.05, (detections, dim)).astype(np.float32)
        det = {
            contract.DET_BOXES: boxes[order][None],
            contract.DET_SCORES: scores[order].astype(np.float32)[None],
            contract.DET_DENSITY: rng.uniform(0.0, 0.7, detections).astype(np.float32)[None],
            contract.DET_EMBEDDINGS: emb[order].astype(np.float32)[None],
        }
        peak_person = rng.integers(0, tracks, 100)
        pc = centre[peak_person] + rng.normal(0, 2.0, (100, 2))
        ph = size[peak_person] / 2
        trans = {
            contract.TRANS_BOXES: np.concatenate([pc - ph, pc + ph], axis=1).astype(np.float32)[None],
            contract.TRANS_SCORES: np.sort(rng.uniform(0.0, 0.6, 100)).astype(np.float32)[::-1].copy()[None],
            contract.TRANS_EMBEDDINGS: codes[peak_person][None],
        }
        yield det, trans


class InstantRecheck:
    def __init__(self) -> None:
        self.outputs = None

    def infer(self, feeds):
        return self.outputs


class NoDetector:
    def infer(self, feeds):
        raise RuntimeError("fed outputs directly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    meta = EngineMeta(input_hw=(608, 1088), has_recheck=True, recheck_channels=128)
    recheck = InstantRecheck()
    tracker = Tracker(NoDetector(), recheck, meta)
    transform = LetterboxTransform(1.0, 1.0, 0.0, 0.0, (608, 1088), (608, 1088))
    stages = {"nms_fusion": [], "association": []}
    live = []
    for det, trans in synthetic_outputs(rng, args.tracks, args.detections, args.frames):
        recheck.outputs = trans
        tracks = tracker.update_from_outputs(det, transform)
        live.append(len(tracks))
        for stage in stages:
            stages[stage].append(tracker.last_timings_ms[stage])
    warm = 10
    total = np.add(stages["nms_fusion"], stages["association"])[warm:]
    print(f"frames {args.frames - warm} (after {warm} warm-up), output tracks median {int(np.median(live[warm:]))}, "
          f"detections per frame {len(tracker.last_detections)}, tracklets {tracker.last_tracklet_count}")
    for stage, values in stages.items():
        v = np.asarray(values[warm:])
        print(f"{stage:12s} median {np.median(v):.3f} ms  p90 {np.percentile(v, 90):.3f} ms")
    print(f"{'host total':12s} median {np.median(total):.3f} ms  p90 {np.percentile(total, 90):.3f} ms")


if __name__ == "__main__":
    main()
