"""Letterbox geometry, pixels and its inverse transform."""

from __future__ import annotations

import numpy as np
import pytest

from omc.errors import BadInput
from omc.runtime.letterbox import LetterboxTransform, letterbox, letterbox_geometry


def test_geometry_720p_into_1088x608():
    g = letterbox_geometry((720, 1280), (608, 1088))
    # ratio = min(608 / 720, 1088 / 1280) = min(0.8444, 0.85) = 0.8444...
    # new size: round(1280 * 0.8444) = round(1080.89) = 1081, round(720 * 0.8444) = 608.
    # dw = (1088 - 1081) / 2 = 3.5 -> left round(3.4) = 3, right round(3.6) = 4; dh = 0.
    assert g.resized_hw == (608, 1081)
    assert (g.top, g.bottom, g.left, g.right) == (0, 0, 3, 4)
    t = g.transform
    assert t.scale_x == pytest.approx(1081 / 1280) and t.scale_y == pytest.approx(608 / 720)
    assert (t.offset_x, t.offset_y) == (3.0, 0.0)


def test_geometry_portrait_pads_left_and_right():
    g = letterbox_geometry((1080, 720), (608, 1088))
    # ratio = min(608 / 1080, 1088 / 720) = 0.56296; new (round(405.33) = 405, 608);
    # dw = (1088 - 405) / 2 = 341.5 -> left round(341.4) = 341, right round(341.6) = 342.
    assert g.resized_hw == (608, 405)
    assert (g.left, g.right, g.top, g.bottom) == (341, 342, 0, 0)


def test_geometry_pads_top_and_bottom():
    g = letterbox_geometry((480, 1280), (608, 1088))
    # ratio = min(608 / 480, 1088 / 1280) = 0.85; new (1088, 408); dh = 100 -> top 100, bottom 100.
    assert g.resized_hw == (408, 1088)
    assert (g.top, g.bottom, g.left, g.right) == (100, 100, 0, 0)


def test_letterbox_pixels_padding_and_inverse():
    frame = np.zeros((480, 1280, 3), np.uint8)
    frame[100:200, 400:640] = (255, 0, 0)  # a blue block (BGR) at x 400..640, y 100..200
    images, transform = letterbox(frame, (608, 1088))
    assert images.shape == (1, 608, 1088, 3) and images.dtype == np.uint8
    # Padding rows (top 100 and bottom 100) hold 128, the reference's 127.5 stored as a byte.
    assert (images[0, :100] == 128).all() and (images[0, 508:] == 128).all()
    # The block maps to x 400 * 0.85 = 340 .. 544, y 100 * 0.85 + 100 = 185 .. 270.
    block = transform.to_input(np.array([[400, 100, 640, 200]], np.float32))
    np.testing.assert_allclose(block, [[340, 185, 544, 270]], rtol=1e-6)
    inside = images[0, 190:265, 345:540]
    assert (inside[..., 0] == 255).all() and (inside[..., 1:] == 0).all()
    # The inverse maps back exactly.
    np.testing.assert_allclose(transform.to_frame(block), [[400, 100, 640, 200]], rtol=1e-6)
    frame_copy = frame.copy()
    letterbox(frame, (608, 1088))
    np.testing.assert_array_equal(frame, frame_copy)


def test_inverse_is_exact_for_any_frame_size():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = int(rng.integers(50, 2000)), int(rng.integers(50, 2000))
        g = letterbox_geometry((h, w), (608, 1088))
        # The image's own corners land on the resized region's corners and map back to the frame's.
        corners = np.array([[g.left, g.top, g.left + g.resized_hw[1], g.top + g.resized_hw[0]]], np.float32)
        np.testing.assert_allclose(g.transform.to_frame(corners), [[0, 0, w, h]], atol=1e-3)


def test_reference_transform_can_be_injected():
    # The reference's scale-back at 1280x720: gain 0.8444, padding (1088 - 1280 * 0.8444) / 2 = 3.5556.
    gain = 608 / 720
    t = LetterboxTransform.from_gain_pad(gain, (1088 - 1280 * gain) / 2, 0.0, (720, 1280), (608, 1088))
    box = np.array([[3.5556 + 84.4444, 0, 3.5556 + 168.8889, 84.4444]], np.float32)
    np.testing.assert_allclose(t.to_frame(box), [[100, 0, 200, 100]], atol=1e-3)
    assert t.to_frame(box).dtype == np.float32


def test_frame_of_the_input_size_is_copied_as_is():
    frame = np.random.default_rng(1).integers(0, 256, (192, 320, 3), dtype=np.uint8)
    images, transform = letterbox(frame, (192, 320))
    np.testing.assert_array_equal(images[0], frame)
    assert (transform.scale_x, transform.scale_y, transform.offset_x, transform.offset_y) == (1.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "frame",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8), np.zeros((0, 10, 3), np.uint8), [[1, 2, 3]]],
)
def test_bad_frames_are_refused(frame):
    with pytest.raises(BadInput):
        letterbox(frame, (608, 1088))
