"""The tracker on scripted scenes with stand-in engines: identities, restored boxes, metrics.

The street scene (tests/scripted_scenes.py) has a crossing pair, a person whose detector score
drops below the threshold for ten frames while the re-check still sees them, and a person who
walks out of the frame and back.
"""

from __future__ import annotations

import numpy as np
import pytest
from scripted_scenes import SceneDetector, SceneRecheck, run_scene, scene_meta, street_scene

from omc.config import TrackerConfig
from omc.runtime.boxes import box_iou
from omc.runtime.tracker import Tracker

mm = pytest.importorskip("motmetrics")

A, B, C, D = range(4)


def _run(recheck: bool):
    scene = street_scene()
    detector, rc = SceneDetector(scene), SceneRecheck(scene)
    tracker = Tracker(detector, rc if recheck else None, scene_meta())
    return scene, run_scene(scene, tracker, detector, rc), rc


def _assign(scene, results):
    """Per frame: {object index: output track} by IoU >= 0.5, one-to-one (greedy on IoU)."""
    out = []
    for f, tracks in enumerate(results):
        ids, truth = scene.truth(f)
        boxes = np.array([t.box for t in tracks], np.float32).reshape(-1, 4)
        iou = box_iou(truth, boxes)
        frame = {}
        while iou.size and iou.max() >= 0.5:
            i, j = np.unravel_index(iou.argmax(), iou.shape)
            frame[ids[i]] = tracks[j]
            iou[i, :] = -1
            iou[:, j] = -1
        out.append(frame)
    return out


def _metrics(scene, results):
    acc = mm.MOTAccumulator(auto_id=True)
    for f, tracks in enumerate(results):
        ids, truth = scene.truth(f)
        boxes = np.array([t.box for t in tracks], np.float32).reshape(-1, 4)
        distance = 1.0 - box_iou(truth, boxes).astype(np.float64)
        distance[distance > 0.5] = np.nan
        acc.update(ids, [t.track_id for t in tracks], distance)
    summary = mm.metrics.create().compute(
        acc, metrics=["num_misses", "num_false_positives", "num_switches", "mota"], name="scene"
    )
    return summary.iloc[0]


def test_identities_hold_through_crossing_dropout_and_exit():
    scene, results, _ = _run(recheck=True)
    matched = _assign(scene, results)
    for obj in (A, B, C, D):
        ids = {frame[obj].track_id for frame in matched if obj in frame}
        assert len(ids) == 1, f"object {obj} got ids {ids}"
    # D is out of view on frames 16-34 and comes back under its old id.
    assert all(D not in matched[f] for f in range(16, 35))
    assert D in matched[35] and matched[35][D].track_id == matched[15][D].track_id


def test_restored_boxes_cover_the_detector_dropout():
    scene, results, rc = _run(recheck=True)
    matched = _assign(scene, results)
    for f in range(20, 30):
        assert C in matched[f], f"frame {f}: the re-check should keep C"
        assert matched[f][C].restored
    # Outside the dropout C's boxes come from the detector.
    assert not any(matched[f][C].restored for f in (10, 19, 30, 40))
    # Frame 1 has no confirmed track with a stored feature yet; from frame 2 on the re-check runs.
    assert rc.calls == scene.frames - 2
    assert rc.tracklet_counts[0] == 4


def test_recheck_reduces_false_negatives_on_the_same_scene():
    scene, with_recheck, _ = _run(recheck=True)
    _, baseline, rc = _run(recheck=False)
    assert rc.calls == 0
    m_with, m_base = _metrics(scene, with_recheck), _metrics(scene, baseline)
    # The baseline misses C on its ten dropout frames; the re-check restores them.
    assert m_base["num_misses"] - m_with["num_misses"] == 10
    assert m_with["num_switches"] <= m_base["num_switches"]
    assert m_with["num_false_positives"] == m_base["num_false_positives"]
    assert m_with["mota"] > m_base["mota"]


def test_config_switch_runs_the_baseline_with_a_recheck_backend():
    scene = street_scene(30)
    detector, rc = SceneDetector(scene), SceneRecheck(scene)
    tracker = Tracker(detector, rc, scene_meta(), TrackerConfig(recheck=False))
    results = run_scene(scene, tracker, detector, rc)
    assert rc.calls == 0
    assert all(not t.restored for tracks in results for t in tracks)
