"""Frame sources: videos, image folders, MOTChallenge sequences, normalisation and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from omc.errors import BadInput
from omc.runtime import sources
from omc.runtime.sources import (
    DEFAULT_FRAME_RATE,
    ImageFolderSource,
    MotSequenceSource,
    VideoSource,
    natural_key,
    open_source,
    to_bgr8,
)

W, H = 64, 48


def write_video(path: Path, values: list[int], fps: float = 25.0, size: tuple[int, int] = (W, H)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for value in values:
        writer.write(np.full((size[1], size[0], 3), value, np.uint8))
    writer.release()
    return path


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def grey(value: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def read_all(source: sources.FrameSource) -> list[tuple[int, np.ndarray]]:
    with source:
        return list(source)


# --- videos --------------------------------------------------------------------------------------


def test_video_frames_rate_count_and_name(tmp_path: Path) -> None:
    values = [20, 80, 140, 200, 250]
    source = open_source(write_video(tmp_path / "clip.mp4", values, fps=25.0))
    assert isinstance(source, VideoSource)
    assert (source.name, source.frame_rate, source.frame_count) == ("clip", 25.0, 5)
    frames = read_all(source)
    assert [i for i, _ in frames] == [1, 2, 3, 4, 5]
    for (_, frame), value in zip(frames, values):
        assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
        # mp4v is lossy; a flat frame decodes within a few grey levels.
        assert abs(float(frame.mean()) - value) < 4
    assert source.frame_size == (W, H)


def test_video_without_frame_rate_assumes_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = write_video(tmp_path / "clip.mp4", [100, 100])
    real_capture = cv2.VideoCapture

    class NoFpsCapture:
        def __init__(self, name: str) -> None:
            self._inner = real_capture(name)

        def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
            return getattr(self._inner, attr)

        def get(self, prop: int) -> float:
            return 0.0 if prop == cv2.CAP_PROP_FPS else self._inner.get(prop)

    monkeypatch.setattr(sources.cv2, "VideoCapture", NoFpsCapture)
    with caplog.at_level(logging.WARNING, logger="omc.runtime.sources"):
        source = open_source(path)
    assert source.frame_rate == DEFAULT_FRAME_RATE
    assert "frame rate" in caplog.text
    assert len(read_all(source)) == 2


def test_empty_video_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(BadInput, match=r"empty\.mp4 is empty"):
        open_source(path)


def test_corrupt_video_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"not a video at all " * 64)
    with pytest.raises(BadInput, match=r"cannot open video .*junk\.mp4"):
        open_source(path)


def test_video_that_yields_no_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A container that opens but decodes nothing (e.g. a header without frames).
    path = write_video(tmp_path / "clip.mp4", [100])
    real_capture = cv2.VideoCapture

    class NoFrames:
        def __init__(self, name: str) -> None:
            self._inner = real_capture(name)

        def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
            return getattr(self._inner, attr)

        def read(self) -> tuple[bool, None]:
            return False, None

    monkeypatch.setattr(sources.cv2, "VideoCapture", NoFrames)
    source = open_source(path)
    with pytest.raises(BadInput, match=r"clip\.mp4 has no readable frame"):
        read_all(source)


# --- image folders -------------------------------------------------------------------------------


def test_image_folder_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    for name, value in (("f10.png", 30), ("f2.png", 20), ("f1.png", 10)):
        write_image(folder / name, grey(value))
    (folder / "notes.txt").write_text("ignored")
    source = open_source(folder)
    assert isinstance(source, ImageFolderSource) and not isinstance(source, MotSequenceSource)
    assert (source.name, source.frame_rate, source.frame_count) == ("frames", DEFAULT_FRAME_RATE, 3)
    frames = read_all(source)
    assert [i for i, _ in frames] == [1, 2, 3]
    assert [int(f[0, 0, 0]) for _, f in frames] == [10, 20, 30]  # f1, f2, f10 (PNG is lossless)


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["img10.jpg", "img2.jpg", "IMG1.jpg", "img2b.jpg"]
    assert sorted(names, key=natural_key) == ["IMG1.jpg", "img2.jpg", "img2b.jpg", "img10.jpg"]


def test_mot_sequence_with_seqinfo(tmp_path: Path) -> None:
    seq = tmp_path / "MOT17-02-FRCNN"
    for number, value in ((1, 10), (2, 20), (5, 50)):
        write_image(seq / "img1" / f"{number:06d}.png", grey(value))
    (seq / "seqinfo.ini").write_text(
        "[Sequence]\nname=MOT17-02-FRCNN\nimDir=img1\nframeRate=14\nseqLength=5\nimWidth=64\nimHeight=48\nimExt=.png\n"
    )
    source = open_source(seq)
    assert isinstance(source, MotSequenceSource)
    assert (source.name, source.frame_rate, source.frame_count) == ("MOT17-02-FRCNN", 14.0, 3)
    frames = read_all(source)
    assert [i for i, _ in frames] == [1, 2, 5]  # numbers from the file names
    assert [int(f[0, 0, 0]) for _, f in frames] == [10, 20, 50]


def test_mot_sequence_without_seqinfo_uses_default_rate(tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    write_image(seq / "img1" / "000003.png", grey(5))
    source = open_source(seq)
    assert isinstance(source, MotSequenceSource) and source.frame_rate == DEFAULT_FRAME_RATE
    assert [i for i, _ in read_all(source)] == [3]


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("[Sequence]\nname=x\n", "no frameRate"),
        ("[Sequence]\nframeRate=fast\n", "not a number"),
        ("[Sequence]\nframeRate=0\n", "must be positive"),
        ("[Other]\nframeRate=30\n", r"no \[Sequence\] section"),
        ("frameRate=30\n", "cannot parse"),
    ],
)
def test_bad_seqinfo(tmp_path: Path, ini: str, message: str) -> None:
    seq = tmp_path / "seq"
    write_image(seq / "img1" / "000001.png", grey(5))
    (seq / "seqinfo.ini").write_text(ini)
    with pytest.raises(BadInput, match=message):
        open_source(seq)


def test_mot_image_names_must_be_numbers(tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    write_image(seq / "img1" / "frame_a.png", grey(5))
    with pytest.raises(BadInput, match="named by its frame number"):
        open_source(seq)


# --- pixel formats -------------------------------------------------------------------------------


def test_grayscale_16bit_and_alpha_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "mixed"
    gray = np.full((H, W), 77, np.uint8)
    deep = np.full((H, W, 3), 257 * 100, np.uint16)  # 25700 * 255 / 65535 = 100 exactly
    deep[0, 0] = 65535  # -> 255
    bgra = np.dstack([grey(40), np.full((H, W), 3, np.uint8)])  # alpha 3 must not leak in
    write_image(folder / "1.png", gray)
    write_image(folder / "2.png", gray)
    write_image(folder / "3.png", deep)
    write_image(folder / "4.png", bgra)
    with caplog.at_level(logging.INFO, logger="omc.runtime.sources"):
        frames = read_all(open_source(folder))
    assert all(f.dtype == np.uint8 and f.shape == (H, W, 3) for _, f in frames)
    assert (frames[0][1] == 77).all() and (frames[1][1] == 77).all()
    assert frames[2][1][0, 0].tolist() == [255, 255, 255]
    assert (frames[2][1][1:] == 100).all()
    assert (frames[3][1] == 40).all()
    # Each conversion is logged once, not once per frame.
    assert caplog.text.count("grayscale images are converted") == 1
    assert caplog.text.count("16-bit images are scaled") == 1
    assert caplog.text.count("alpha channel") == 1


def test_to_bgr8_refuses_other_pixel_types() -> None:
    with pytest.raises(BadInput, match="pixel type float32"):
        to_bgr8(np.zeros((4, 4, 3), np.float32), "x.tif")
    with pytest.raises(BadInput, match="expected a grayscale, BGR or BGRA"):
        to_bgr8(np.zeros((4, 4, 2), np.uint8), "x.tif")


def test_to_bgr8_does_not_modify_its_argument() -> None:
    image = np.full((4, 4), 300, np.uint16)
    before = image.copy()
    to_bgr8(image, "x")
    np.testing.assert_array_equal(image, before)


# --- bad input -----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"source .*nowhere does not exist"):
        open_source(tmp_path / "nowhere")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(BadInput, match="contains no images"):
        open_source(tmp_path / "empty")


def test_single_image_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = write_image(tmp_path / "one.png", grey(1))
    with pytest.raises(BadInput, match="single image; pass the folder"):
        open_source(path)


def test_unreadable_image(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    write_image(folder / "1.png", grey(1))
    (folder / "2.png").write_bytes(b"\x89PNG broken")
    source = open_source(folder)
    with pytest.raises(BadInput, match=r"cannot read image .*2\.png \(frame 2\)"):
        read_all(source)


def test_size_change_mid_stream(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    write_image(folder / "1.png", grey(1))
    write_image(folder / "2.png", grey(2))
    write_image(folder / "3.png", grey(3, size=(80, 48)))
    seen = []
    with pytest.raises(BadInput, match=r"frame 3 of .* is 80x48 but the stream started at 64x48"):
        for index, _ in open_source(folder):
            seen.append(index)
    assert seen == [1, 2]  # frames before the change were delivered
