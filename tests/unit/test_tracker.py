"""Tracker behaviour: per-tracker ids, reset, life-cycle rules, robustness, filters and the API."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from scripted_scenes import (
    NET_HW,
    Scene,
    SceneDetector,
    SceneRecheck,
    ScriptedObject,
    run_scene,
    scene_meta,
    street_scene,
    walk,
)

from omc import contract
from omc.config import TrackerConfig
from omc.runtime.backends.base import Backend
from omc.runtime.tracker import STAGES, Tracker
from omc.runtime.tracks import EventKind


def _ids(results):
    return [sorted(t.track_id for t in tracks) for tracks in results]


def _single(scores, heat=None, frames=None, size=(50, 140), start=(200, 100), velocity=(2, 0)):
    frames = len(scores) if frames is None else frames
    heat = np.zeros(frames, np.float32) if heat is None else np.asarray(heat, np.float32)
    return Scene([ScriptedObject(walk(frames, start, velocity, size), np.asarray(scores, np.float32), heat)], frames)


def _tracker(scene, recheck=True, config=TrackerConfig(), meta=None):
    detector, rc = SceneDetector(scene), SceneRecheck(scene)
    tracker = Tracker(detector, rc if recheck else None, meta or scene_meta(), config)
    return tracker, detector, rc


def test_interleaved_trackers_give_the_ids_of_separate_runs_and_reset_restarts():
    scene = street_scene(40)
    alone, det, rc = _tracker(scene)
    expected = _ids(run_scene(scene, alone, det, rc))
    assert expected[0] == [] and expected[1] == [1, 2, 3, 4]
    alone.reset()
    assert _ids(run_scene(scene, alone, det, rc)) == expected  # ids start at 1 again

    (t1, d1, r1), (t2, d2, r2) = _tracker(scene), _tracker(scene)
    got1, got2 = [], []
    for f in range(scene.frames):
        got1 += run_scene(scene, t1, d1, r1, [f])
        got2 += run_scene(scene, t2, d2, r2, [f])
    assert _ids(got1) == expected and _ids(got2) == expected


def test_first_frame_never_outputs_and_second_confirms():
    scene = _single([0.9] * 3)
    tracker, det, rc = _tracker(scene)
    results = run_scene(scene, tracker, det, rc)
    assert results[0] == [] and [t.track_id for t in results[1]] == [1]
    assert [e.kind for e in tracker.last_events] == [EventKind.UPDATED]


def test_refound_track_keeps_its_score_until_its_next_update():
    scores = [0.9] * 10 + [0.0] * 3 + [0.7] * 3
    scene = _single(scores)
    tracker, det, rc = _tracker(scene, recheck=False)
    results = run_scene(scene, tracker, det, rc)
    assert results[12] == []
    assert [(t.track_id, t.score) for t in results[13]] == [(1, pytest.approx(0.9))]  # re-found
    assert [(t.track_id, t.score) for t in results[14]] == [(1, pytest.approx(0.7))]  # updated


def test_recheck_boxes_below_conf_thres_never_start_tracks():
    scene = _single([0.9] * 12, heat=[0.0] * 12)
    far = np.array([500, 200, 550, 340], np.float32)
    tracker, det, rc = _tracker(scene)
    rc.extra_peaks = [(far, 0.45)]  # a peak nobody is tracking, heat above 0.3 but below 0.5
    results = run_scene(scene, tracker, det, rc)
    assert all(len(tracks) <= 1 for tracks in results)
    assert tracker._ids.next() == 2  # only one id was ever handed out

    tracker, det, rc = _tracker(scene)
    rc.extra_peaks = [(far, 0.55)]  # at or above conf_thres a re-check box may start a track
    results = run_scene(scene, tracker, det, rc)
    restored = [t for t in results[-1] if t.restored]
    assert len(restored) == 1 and restored[0].track_id == 2


def test_restored_boxes_survive_a_frame_without_any_basic_detection():
    # The detector misses the only person on frames 5-9; the re-check still peaks on them. The
    # reference fused only when there was a basic detection and dropped these (section 5).
    scores = [0.9] * 5 + [0.0] * 5 + [0.9] * 3
    scene = _single(scores, heat=[0.6] * 13)
    tracker, det, rc = _tracker(scene)
    results = run_scene(scene, tracker, det, rc)
    for f in range(5, 10):
        assert [(t.track_id, t.restored) for t in results[f]] == [(1, True)]
    assert [(t.track_id, t.restored) for t in results[10]] == [(1, False)]


def test_removal_lags_one_frame_and_memory_stays_bounded():
    config = TrackerConfig(track_buffer=5)  # max_time_lost 5 frames at 30 fps
    scores = [0.9] * 10 + [0.0] * 20
    scene = _single(scores)
    tracker, det, rc = _tracker(scene, recheck=False, config=config)
    events = []
    for f in range(scene.frames):
        run_scene(scene, tracker, det, rc, [f])
        events += [(tracker.frame_id, e.kind) for e in tracker.last_events if e.kind is not EventKind.UPDATED]
    # Last match on frame 10; lost on 11; 16 - 10 = 6 > 5: removed on 16, and again on 17 (the lag frame).
    assert events == [(1, EventKind.NEW), (11, EventKind.LOST), (16, EventKind.REMOVED), (17, EventKind.REMOVED)]
    assert tracker._tracked == [] and tracker._lost == []

    # A long stream of people coming and going: the tracker's lists do not grow.
    rng = np.random.default_rng(0)
    objects = []
    for k in range(60):
        scores = np.zeros(600, np.float32)
        start = int(rng.integers(0, 560))
        scores[start : start + 40] = 0.9
        y = float(rng.uniform(0, 200))
        objects.append(ScriptedObject(walk(600, (float(k % 10) * 55, y), (0.5, 0), (40, 120)), scores, np.zeros(600)))
    crowd = Scene(objects, 600, seed=1)
    tracker, det, rc = _tracker(crowd, config=TrackerConfig(track_buffer=10))
    sizes = []
    for f in range(crowd.frames):
        run_scene(crowd, tracker, det, rc, [f])
        sizes.append(len(tracker._tracked) + len(tracker._lost))
    alive = max(sum(o.scores[f] > 0 for o in objects) for f in range(600))
    assert max(sizes) <= 2 * alive + 2


def test_non_finite_engine_rows_are_dropped_with_a_warning(caplog):
    scene = street_scene(6)
    tracker, det, rc = _tracker(scene)
    clean = _ids(run_scene(scene, *_tracker(scene)[:3]))
    det.corrupt = {contract.DET_DENSITY: (3, np.nan)}  # the fourth candidate (lowest score)
    with caplog.at_level(logging.WARNING, logger="omc.runtime.detections"):
        results = run_scene(scene, tracker, det, rc)
    assert "NaN or inf" in caplog.text
    assert all(len(tracks) <= 3 for tracks in results) and _ids(results)[1] == clean[1][:3]
    for name, value in ((contract.DET_SCORES, np.inf), (contract.DET_EMBEDDINGS, np.nan), (contract.DET_BOXES, -np.inf)):
        tracker, det, rc = _tracker(scene)
        det.corrupt = {name: (0, value)}
        results = run_scene(scene, tracker, det, rc)
        assert all(len(tracks) <= 3 for tracks in results), name


class _FlattenedRow:
    """A detector whose candidate `row` has y2 = y1 (zero height), otherwise `detector`'s outputs."""

    def __init__(self, detector, row):
        self.detector, self.row = detector, row

    def infer(self, feeds):
        outputs = self.detector.infer(feeds)
        boxes = outputs[contract.DET_BOXES]
        boxes[0, self.row, 3] = boxes[0, self.row, 1]
        return outputs


def test_zero_height_boxes_are_dropped_before_the_kalman_filter(caplog):
    """A zero-height box (a float16 size decode that underflowed) has no finite aspect w / h: it is
    dropped with a warning, never divides by zero, and the other objects track as without it."""
    frames = 8
    ones = np.ones(frames, np.float32)
    person = ScriptedObject(walk(frames, (100, 100), (2, 0), (50, 140)), 0.9 * ones, 0 * ones)
    flat = ScriptedObject(walk(frames, (400, 200), (1, 0), (60, 80)), 0.8 * ones, 0 * ones)
    clean = _ids(run_scene(Scene([person], frames), *_tracker(Scene([person], frames))[:3]))
    scene = Scene([person, flat], frames)
    detector, rc = SceneDetector(scene), SceneRecheck(scene)
    tracker = Tracker(_FlattenedRow(detector, 1), rc, scene_meta())  # row 1: the flat object (lower score)
    with caplog.at_level(logging.WARNING, logger="omc.runtime.detections"), np.errstate(divide="raise", invalid="raise"):
        results = run_scene(scene, tracker, detector, rc)
    assert "dropped 1 detection(s) with a zero-height box" in caplog.text
    assert _ids(results) == clean and clean[-1] == [1]
    assert all(np.isfinite(t.box).all() for tracks in results for t in tracks)


class _CorruptRecheck:
    """The re-check stand-in with `name`'s first row (the highest peak) set to `value` from `start` on."""

    def __init__(self, recheck, name, value, start):
        self.recheck, self.name, self.value, self.start = recheck, name, value, start

    def infer(self, feeds):
        outputs = self.recheck.infer(feeds)
        if self.recheck.frame >= self.start:
            outputs[self.name][0, 0] = self.value
        return outputs


@pytest.mark.parametrize(
    ("name", "value", "warning"),
    [
        (contract.TRANS_SCORES, np.nan, "re-check peak(s) with a NaN or inf score"),
        (contract.TRANS_BOXES, np.inf, "re-check peak row(s) with NaN or inf values"),
        (contract.TRANS_EMBEDDINGS, np.nan, "re-check detection(s) with a NaN or inf embedding"),
    ],
)
def test_non_finite_recheck_rows_are_dropped_with_a_warning(caplog, name, value, warning):
    """In the street scene C is restored by the re-check on frames 20-29 (its peak is the highest):
    a broken peak row is dropped with a warning and the stream goes on with finite boxes."""
    scene = street_scene(32)
    detector, rc = SceneDetector(scene), SceneRecheck(scene)
    tracker = Tracker(detector, _CorruptRecheck(rc, name, value, start=20), scene_meta())
    with caplog.at_level(logging.WARNING, logger="omc.runtime.detections"):
        results = run_scene(scene, tracker, detector, rc)
    assert warning in caplog.text
    assert all(len(tracks) <= 4 for tracks in results)
    assert all(np.isfinite(t.box).all() and np.isfinite(t.score) for tracks in results for t in tracks)
    assert not any(t.restored for tracks in results[20:] for t in tracks)  # C's restored boxes were the broken ones


def test_tracklets_beyond_the_export_maximum_are_capped(caplog):
    scene = street_scene(8)
    tracker, det, rc = _tracker(scene, meta=scene_meta(max_tracklets=2))
    with caplog.at_level(logging.WARNING, logger="omc.runtime.tracker"):
        run_scene(scene, tracker, det, rc)
    assert rc.tracklet_counts and max(rc.tracklet_counts) == 2
    assert "exceed the re-check engine's maximum of 2" in caplog.text


def test_output_filters_drop_small_and_wide_boxes():
    frames = 4
    ones = np.ones(frames, np.float32)
    objects = [
        ScriptedObject(walk(frames, (100, 100), (1, 0), (50, 140)), 0.9 * ones, 0 * ones),  # kept
        ScriptedObject(walk(frames, (300, 100), (1, 0), (250, 50)), 0.9 * ones, 0 * ones),  # w/h = 5 > 4
        ScriptedObject(walk(frames, (500, 300), (1, 0), (8, 10)), 0.9 * ones, 0 * ones),  # area 80 <= 100
    ]
    scene = Scene(objects, frames)
    tracker, det, rc = _tracker(scene)
    results = run_scene(scene, tracker, det, rc)
    assert [len(tracks) for tracks in results] == [0, 1, 1, 1]
    relaxed, det, rc = _tracker(scene, config=TrackerConfig(min_box_area=50, max_aspect_ratio=6))
    assert [len(tracks) for tracks in run_scene(scene, relaxed, det, rc)] == [0, 3, 3, 3]


def test_tracks_are_immutable_and_boxes_in_frame_pixels_for_any_frame_size():
    scene = _single([0.9] * 3, velocity=(0, 0), start=(200, 100), size=(50, 140))
    tracker, det, rc = _tracker(scene)
    # An 800x480 frame letterboxes into 640x384 at ratio 0.8 with no padding: frame = net / 0.8.
    blank = np.zeros((480, 800, 3), np.uint8)
    for f in range(3):
        det.frame = rc.frame = f
        tracks = tracker.update(blank)
    (track,) = tracks
    np.testing.assert_allclose(track.box, np.array([200, 100, 250, 240]) / 0.8, atol=2.0)
    assert track.box.dtype == np.float32
    with pytest.raises(dataclasses.FrozenInstanceError):
        track.track_id = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        track.box[0] = 0
    assert set(tracker.last_timings_ms) == set(STAGES)
    assert all(v >= 0 for v in tracker.last_timings_ms.values())
    assert tracker.frames == 3


class _CountingBackend(Backend):
    def __init__(self, inner):
        meta = scene_meta()
        super().__init__("detector", meta.detector_inputs(), meta.detector_outputs(), meta.axis_limits())
        self.inner = inner
        self.activations = 0
        self.deactivations = 0

    def check_feeds(self, feeds):  # the stand-in returns only the det_* outputs
        assert feeds[contract.IMAGES].shape == (1, *NET_HW, 3)

    def _activate(self):
        self.activations += 1

    def _infer(self, feeds):
        return self.inner.infer(feeds)

    def _deactivate(self):
        self.deactivations += 1


def test_tracker_activates_inactive_backends_and_close_releases_them():
    scene = _single([0.9] * 3)
    backend = _CountingBackend(SceneDetector(scene))
    with Tracker(backend, None, scene_meta()) as tracker:
        assert backend.is_active and backend.activations == 1
        tracker.update(np.zeros((*NET_HW, 3), np.uint8))
        assert backend.last_latency_ms is not None
    assert not backend.is_active and backend.deactivations == 1
