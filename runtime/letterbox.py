"""Letterbox: fit a BGR frame into the network input without distortion, and map boxes back.

The reference (omc-reference.md section 3) scales by ratio = min(H / h, W / w), resizes to
(round(w ratio), round(h ratio)) with INTER_AREA and pads with 127.5, which OpenCV stores as 128
in a uint8 image; the padding is split top = round(dh - 0.1), bottom = round(dh + 0.1) (likewise
left / right), dh and dw being half the padding. The detector takes the padded uint8 BGR bytes
(normalisation happens inside the graph).

`LetterboxTransform` maps network-input pixels back to frame pixels. `letterbox()` returns the
exact inverse of what it applied: per-axis scale new_w / w and new_h / h, integer offsets. The
reference's own scale-back instead uses the unrounded ratio and padding, about 1 px off at some
frame sizes (omc-reference.md 4.8); `LetterboxTransform.from_gain_pad` builds that form, so
parity tests can inject it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from omc.errors import BadInput

# The reference pads with 127.5; OpenCV's saturate_cast rounds half to even, so the stored byte is 128.
PAD_VALUE = 128
# The reference splits odd padding as round(half - 0.1) before and round(half + 0.1) after the image.
PAD_SPLIT_BIAS = 0.1


@dataclass(frozen=True)
class LetterboxTransform:
    """Network-input pixels -> frame pixels: frame = (net - offset) / scale, per axis.

    scale_x, scale_y: network pixels per frame pixel.  offset_x, offset_y: network pixels of
    padding before the image (left, top).  frame_hw / input_hw: (height, width) of both images.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]

    @classmethod
    def from_gain_pad(
        cls, gain: float, pad_x: float, pad_y: float, frame_hw: tuple[int, int], input_hw: tuple[int, int]
    ) -> "LetterboxTransform":
        """The reference's scale-back form: one gain for both axes and (possibly fractional) padding."""
        frame = (int(frame_hw[0]), int(frame_hw[1]))
        net = (int(input_hw[0]), int(input_hw[1]))
        return cls(float(gain), float(gain), float(pad_x), float(pad_y), frame, net)

    def to_frame(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """[N, 4] corners in network pixels -> new [N, 4] float32 corners in frame pixels.

        Computed in float32, as the reference does; the input is not modified.
        """
        boxes = np.asarray(boxes, dtype=np.float32)
        offset = np.array([self.offset_x, self.offset_y, self.offset_x, self.offset_y], np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return (boxes - offset) / scale

    def to_input(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """[N, 4] corners in frame pixels -> new [N, 4] float32 corners in network pixels."""
        boxes = np.asarray(boxes, dtype=np.float32)
        offset = np.array([self.offset_x, self.offset_y, self.offset_x, self.offset_y], np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return boxes * scale + offset


@dataclass(frozen=True)
class LetterboxGeometry:
    """The integer resize and padding `letterbox` applies to a frame of `frame_hw`."""

    resized_hw: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int
    transform: LetterboxTransform


def letterbox_geometry(frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> LetterboxGeometry:
    """Resize and padding for a frame of (h, w) into a network input of (H, W), as the reference computes them."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    height, width = int(input_hw[0]), int(input_hw[1])
    if h <= 0 or w <= 0:
        raise BadInput(f"frame size {w}x{h} is empty")
    ratio = min(height / h, width / w)
    # Python's round (half to even), as the reference.
    new_w, new_h = round(w * ratio), round(h * ratio)
    half_w, half_h = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = round(half_h - PAD_SPLIT_BIAS), round(half_h + PAD_SPLIT_BIAS)
    left, right = round(half_w - PAD_SPLIT_BIAS), round(half_w + PAD_SPLIT_BIAS)
    transform = LetterboxTransform(new_w / w, new_h / h, float(left), float(top), (h, w), (height, width))
    return LetterboxGeometry((new_h, new_w), top, bottom, left, right, transform)


def check_frame(frame_bgr: np.ndarray) -> None:
    """Raise BadInput unless `frame_bgr` is a uint8 [H, W, 3] image."""
    if not isinstance(frame_bgr, np.ndarray):
        raise BadInput(f"a frame must be a NumPy array, got {type(frame_bgr).__name__}")
    if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise BadInput(f"a frame must be uint8 [H, W, 3] BGR, got {frame_bgr.dtype} {list(frame_bgr.shape)}")
    if frame_bgr.shape[0] == 0 or frame_bgr.shape[1] == 0:
        raise BadInput(f"frame of shape {list(frame_bgr.shape)} is empty")


def letterbox(
    frame_bgr: npt.NDArray[np.uint8], input_hw: tuple[int, int]
) -> tuple[npt.NDArray[np.uint8], LetterboxTransform]:
    """Letterbox one frame into the detector's input batch.

    frame_bgr: uint8 [h, w, 3] BGR, any size (not modified).  input_hw: (H, W) of the network.
    Returns (images, transform): images uint8 [1, H, W, 3] BGR, padding 128; transform maps
    boxes on `images` back to the frame exactly.
    """
    check_frame(frame_bgr)
    geometry = letterbox_geometry(frame_bgr.shape[:2], input_hw)
    height, width = input_hw
    images = np.full((1, height, width, 3), PAD_VALUE, np.uint8)
    new_h, new_w = geometry.resized_hw
    resized: np.ndarray
    if (new_h, new_w) == frame_bgr.shape[:2]:
        resized = frame_bgr
    else:
        resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    images[0, geometry.top : geometry.top + new_h, geometry.left : geometry.left + new_w] = resized
    return images, geometry.transform
