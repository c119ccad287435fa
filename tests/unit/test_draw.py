"""Overlay: solid vs dashed (restored) boxes, trails, colours, the video writer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from omc.config import OverlayConfig
from omc.errors import BadInput
from omc.apps.draw import OverlayVideoWriter, TrailHistory, draw_tracks, id_colour

STYLE = OverlayConfig(line_thickness_px=1, dash_length_px=4)


def _bottom_edge(track_restored: bool) -> np.ndarray:
    frame = np.zeros((120, 120, 3), np.uint8)
    # Box 20..100 x 40..90; its label sits above y = 40, so the bottom edge (y = 90) shows the line alone.
    out = draw_tracks(frame, np.array([3]), np.array([[20.0, 40.0, 100.0, 90.0]]), np.array([track_restored]), None, STYLE)
    return out[90, 20:101]


def test_restored_boxes_are_dashed_and_others_solid() -> None:
    colour = np.array(id_colour(3), np.uint8)
    solid = _bottom_edge(False)
    dashed = _bottom_edge(True)
    assert (solid == colour).all(axis=1).all()  # every pixel of the solid edge has the id colour
    lit = (dashed == colour).all(axis=1)
    dark = (dashed == 0).all(axis=1)
    # Dashes of 4 px and gaps of 4 px along 81 px: about half lit, half dark, nothing else.
    assert 0.35 < lit.mean() < 0.65 and 0.35 < dark.mean() < 0.65
    assert (lit | dark).all()


def test_restored_label_is_longer() -> None:
    frame = np.zeros((120, 120, 3), np.uint8)
    box = np.array([[20.0, 60.0, 100.0, 110.0]])
    normal = draw_tracks(frame, np.array([3]), box, np.array([False]), None, STYLE)
    restored = draw_tracks(frame, np.array([3]), box, np.array([True]), None, STYLE)
    label_row = 60 - 5  # inside the filled label background above the box
    assert (restored[label_row] != 0).any(axis=1).sum() > (normal[label_row] != 0).any(axis=1).sum()


def test_draw_tracks_returns_a_new_image_and_handles_no_tracks() -> None:
    frame = np.full((30, 40, 3), 9, np.uint8)
    empty = draw_tracks(frame, np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool))
    assert empty is not frame and (empty == 9).all()
    draw_tracks(frame, np.array([1]), np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([False]))
    assert (frame == 9).all()


def test_id_colours_are_stable_and_differ() -> None:
    assert id_colour(5) == id_colour(5)
    assert len({id_colour(i) for i in range(1, 11)}) == 10


def test_trails_follow_centres_and_expire() -> None:
    trails = TrailHistory(length=3)
    for x in (10.0, 20.0, 30.0, 40.0):
        trails.update(np.array([1]), np.array([[x, 0.0, x + 10.0, 10.0]]))
    # Centres 15, 25, 35, 45; only the last 3 are kept.
    np.testing.assert_array_equal(trails.trail(1), [[25, 5], [35, 5], [45, 5]])
    assert trails.trail(99).shape == (0, 2)
    for _ in range(3):  # track 1 absent for 3 frames -> dropped
        trails.update(np.zeros(0, np.int64), np.zeros((0, 4)))
    assert len(trails) == 0


def test_trail_is_drawn() -> None:
    trails = TrailHistory(length=30)
    frame = np.zeros((100, 100, 3), np.uint8)
    for x in (10.0, 50.0):
        trails.update(np.array([2]), np.array([[x, 60.0, x + 10.0, 80.0]]))
    out = draw_tracks(frame, np.array([2]), np.array([[50.0, 60.0, 60.0, 80.0]]), np.array([False]), trails, STYLE)
    # The trail runs from centre (15, 70) to (55, 70); x = 30 lies on it and outside both boxes.
    assert (out[70, 30] != 0).any()


def test_overlay_video_writer(tmp_path: Path) -> None:
    path = tmp_path / "out" / "demo.mp4"
    with OverlayVideoWriter(path, 12.0, (64, 48)) as writer:
        for value in (0, 100, 200):
            writer.write(np.full((48, 64, 3), value, np.uint8))
        with pytest.raises(ValueError, match="frame is 32x48"):
            writer.write(np.zeros((48, 32, 3), np.uint8))
    assert path.is_file() and not (tmp_path / "out" / "demo.partial.mp4").exists()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 3 and capture.get(cv2.CAP_PROP_FPS) == 12.0
    capture.release()


def test_overlay_video_writer_without_frames_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "demo.mp4"
    assert OverlayVideoWriter(path, 30.0, (64, 48)).close() is None
    assert list(tmp_path.iterdir()) == []


def test_overlay_video_writer_unknown_container(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot write video"):
        OverlayVideoWriter(tmp_path / "demo.xyz", 30.0, (64, 48))
    assert list(tmp_path.iterdir()) == []
