"""The tracker against the reference tracker's recorded decisions (tracker_sample.md).

Two stand-in engines replay the fixture's scripted network outputs frame by frame; the tracker
sees blank 1280x720 frames and maps boxes back with the reference's own (unrounded) letterbox
gain and padding. Every frame must give the reference's ids, scores, boxes, restored flags,
re-check decision and tracklet count, and the same life-cycle events.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from paths import fixture_path

from omc import contract
from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.runtime.letterbox import LetterboxTransform, letterbox
from omc.runtime.tracker import Tracker

FIXTURE = "tracker_sample_720p.npz"


def _unit(rows: np.ndarray) -> np.ndarray:
    """float16 embeddings from the fixture, back to float32 unit rows (padding rows stay zero)."""
    rows = rows.astype(np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


class ReplayDetector:
    """Returns frame `frame`'s recorded detector outputs, whatever the image."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        self.data = data
        self.frame = 0

    def infer(self, feeds):
        f = self.frame
        assert feeds[contract.IMAGES].shape == (1, 608, 1088, 3)
        return {
            contract.DET_BOXES: self.data["det_boxes"][f],
            contract.DET_SCORES: self.data["det_scores"][f],
            contract.DET_DENSITY: self.data["det_density"][f],
            contract.DET_EMBEDDINGS: _unit(self.data["det_embeddings"][f]),
        }


class ReplayRecheck:
    """Returns frame `frame`'s recorded re-check outputs and records the tracklet count it got."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        self.data = data
        self.frame = 0
        self.tracklet_count: int | None = None

    def infer(self, feeds):
        f = self.frame
        tracklets = feeds[contract.TRACKLETS]
        assert tracklets.dtype == np.float32 and tracklets.shape[1] == 512
        np.testing.assert_allclose(np.linalg.norm(tracklets, axis=1), 1.0, rtol=1e-5)
        self.tracklet_count = len(tracklets)
        return {
            contract.TRANS_BOXES: self.data["trans_boxes"][f],
            contract.TRANS_SCORES: self.data["trans_scores"][f],
            contract.TRANS_EMBEDDINGS: _unit(self.data["trans_embeddings"][f]),
        }


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    with np.load(fixture_path(FIXTURE)) as data:
        return {key: data[key] for key in data.files}


def _replay(sample, tracker, detector, recheck, check):
    frame_h, frame_w = (int(v) for v in sample["frame_size"])
    net_hw = tuple(int(v) for v in sample["net_size"])
    gain, pad_x, pad_y = (float(v) for v in sample["letterbox"])
    transform = LetterboxTransform.from_gain_pad(gain, pad_x, pad_y, (frame_h, frame_w), net_hw)
    images, _ = letterbox(np.zeros((frame_h, frame_w, 3), np.uint8), net_hw)
    results = []
    for f in range(len(sample["det_count"])):
        detector.frame = recheck.frame = f
        recheck.tracklet_count = None
        tracks = tracker.update_letterboxed(images, transform)
        results.append(tracks)
        check(f, tracks, tracker, recheck)
    return results


def test_tracker_reproduces_reference_decisions(sample):
    detector, recheck = ReplayDetector(sample), ReplayRecheck(sample)
    meta = EngineMeta(input_hw=(608, 1088), topk=16, peaks=100, recheck_channels=128, has_recheck=True)
    tracker = Tracker(detector, recheck, meta, TrackerConfig(), frame_rate=float(sample["frame_rate"]))
    ref_off, det_off, ev_off = sample["ref_offsets"], sample["refdet_offsets"], sample["ev_offsets"]

    def check(f, tracks, tracker, recheck):
        where = f"frame {f}"
        # Re-check decision and tracklet count.
        assert (recheck.tracklet_count is not None) == bool(sample["ref_recheck_ran"][f]), where
        assert (recheck.tracklet_count or 0) == int(sample["ref_n_tracklets"][f]), where
        # Detections before association, in the reference's order.
        dets = tracker.last_detections
        lo, hi = det_off[f], det_off[f + 1]
        np.testing.assert_array_equal(dets.restored, sample["refdet_source"][lo:hi] == 1, err_msg=where)
        np.testing.assert_array_equal(dets.rows, sample["refdet_row"][lo:hi], err_msg=where)
        np.testing.assert_allclose(dets.tlwh, sample["refdet_tlwh"][lo:hi], atol=1e-3, err_msg=where)
        np.testing.assert_array_equal(dets.scores, sample["refdet_scores"][lo:hi], err_msg=where)
        # Life-cycle events, in the order they happened.
        lo, hi = ev_off[f], ev_off[f + 1]
        expected = list(zip(sample["ev_kind"][lo:hi].tolist(), sample["ev_id"][lo:hi].tolist(), sample["ev_det"][lo:hi].tolist()))
        got = [(int(e.kind), e.track_id, e.detection) for e in tracker.last_events]
        assert got == expected, where
        # Output tracks, as sets keyed by id.
        lo, hi = ref_off[f], ref_off[f + 1]
        ref_ids = sample["ref_ids"][lo:hi]
        assert sorted(t.track_id for t in tracks) == sorted(ref_ids.tolist()), where
        by_id = {t.track_id: t for t in tracks}
        for i, track_id in enumerate(ref_ids):
            track = by_id[int(track_id)]
            assert np.float32(track.score) == sample["ref_scores"][lo + i], f"{where} id {track_id}"
            assert track.restored == bool(sample["ref_restored"][lo + i]), f"{where} id {track_id}"
            np.testing.assert_allclose(track.box, sample["ref_boxes"][lo + i], atol=1e-3, rtol=0, err_msg=f"{where} id {track_id}")

    results = _replay(sample, tracker, detector, recheck, check)
    assert results[0] == []  # the reference never confirms on the first frame
    ids = {t.track_id for tracks in results for t in tracks}
    assert len(ids) == 8
    assert sum(t.restored for tracks in results for t in tracks) == 81
    assert sum(len(tracks) for tracks in results) == len(sample["ref_ids"])


def test_replay_after_reset_and_interleaved_match(sample):
    """reset() restarts ids at 1; two trackers stepped alternately give the ids of a lone run."""
    meta = EngineMeta(input_hw=(608, 1088), topk=16, peaks=100, recheck_channels=128, has_recheck=True)

    def run(tracker, detector, recheck, frames):
        return _replay_ids(sample, tracker, detector, recheck, frames)

    det_a, rc_a = ReplayDetector(sample), ReplayRecheck(sample)
    alone = Tracker(det_a, rc_a, meta)
    first = [[t.track_id for t in tracks] for tracks in run(alone, det_a, rc_a, range(60))]
    alone.reset()
    again = [[t.track_id for t in tracks] for tracks in run(alone, det_a, rc_a, range(60))]
    assert again == first

    det_b, rc_b = ReplayDetector(sample), ReplayRecheck(sample)
    det_c, rc_c = ReplayDetector(sample), ReplayRecheck(sample)
    b, c = Tracker(det_b, rc_b, meta), Tracker(det_c, rc_c, meta)
    ids_b, ids_c = [], []
    for f in range(60):
        ids_b += run(b, det_b, rc_b, [f])
        ids_c += run(c, det_c, rc_c, [f])
    assert [[t.track_id for t in x] for x in ids_b] == first
    assert [[t.track_id for t in x] for x in ids_c] == first
    assert Counter(i for x in first for i in x)  # ids were handed out at all


def _replay_ids(sample, tracker, detector, recheck, frames):
    frame_h, frame_w = (int(v) for v in sample["frame_size"])
    net_hw = tuple(int(v) for v in sample["net_size"])
    transform = LetterboxTransform.from_gain_pad(*(float(v) for v in sample["letterbox"]), (frame_h, frame_w), net_hw)
    images, _ = letterbox(np.zeros((frame_h, frame_w, 3), np.uint8), net_hw)
    out = []
    for f in frames:
        detector.frame = recheck.frame = f
        out.append(tracker.update_letterboxed(images, transform))
    return out
