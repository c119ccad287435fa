"""MOTChallenge results: row format, crash-safe writer, reader round trip and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omc.errors import BadInput
from omc.apps.results import MotResultsWriter, format_frame, read_mot_txt
from omc.files import partial_path


def test_format_frame_hand_case() -> None:
    # xyxy (10, 20, 40, 80) -> top-left (10, 20), w = 40 - 10 = 30, h = 80 - 20 = 60.
    text = format_frame(3, np.array([7]), np.array([[10.0, 20.0, 40.0, 80.0]]), np.array([0.9]))
    assert text == "3,7,10.00,20.00,30.00,60.00,0.9000,-1,-1,-1\n"


def test_format_frame_empty_and_mismatched() -> None:
    assert format_frame(1, np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)) == ""
    with pytest.raises(ValueError, match="one length"):
        format_frame(1, np.array([1, 2]), np.zeros((1, 4)), np.zeros(2))


def _frames() -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for frame in (1, 2, 3):
        n = 0 if frame == 2 else 3  # an empty frame in the middle
        corner = rng.uniform(0, 500, (n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(5, 100, (n, 2))], axis=1).astype(np.float32)
        out.append((frame, np.arange(1, n + 1, dtype=np.int64) + frame, boxes, rng.uniform(0.3, 1.0, n).astype(np.float32)))
    return out


def test_writer_reader_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "res.txt"  # the parent folder is created
    with MotResultsWriter(path) as writer:
        for frame, ids, boxes, scores in _frames():
            writer.write_frame(frame, ids, boxes, scores)
    assert (writer.frames_written, writer.rows_written) == (3, 6)
    assert path.is_file() and not partial_path(path).exists()
    table = read_mot_txt(path)
    expected = [f for f in _frames() if len(f[1])]
    np.testing.assert_array_equal(table.frames, np.repeat([f[0] for f in expected], 3))
    np.testing.assert_array_equal(table.ids, np.concatenate([f[1] for f in expected]))
    boxes = np.concatenate([f[2] for f in expected]).astype(np.float64)
    tlwh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    np.testing.assert_allclose(table.boxes_tlwh, tlwh, atol=0.01)  # 2 decimals (corner and size rounded apart)
    np.testing.assert_allclose(table.scores, np.concatenate([f[3] for f in expected]), atol=5e-5)
    assert (table.classes == -1).all() and (table.visibility == -1).all()


def test_rows_are_on_disk_after_each_frame(tmp_path: Path) -> None:
    path = tmp_path / "res.txt"
    writer = MotResultsWriter(path)
    writer.write_frame(1, np.array([4]), np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([1.0]))
    assert partial_path(path).read_text() == "1,4,0.00,0.00,10.00,10.00,1.0000,-1,-1,-1\n"
    assert not path.exists()  # the target appears only when finalised
    writer.close()
    assert path.exists()


def test_interrupted_run_keeps_whole_frames(tmp_path: Path) -> None:
    path = tmp_path / "res.txt"
    with pytest.raises(KeyboardInterrupt):
        with MotResultsWriter(path) as writer:
            for frame, ids, boxes, scores in _frames()[:2]:
                writer.write_frame(frame, ids, boxes, scores)
            # Half a frame that never got flushed and counted, as when Ctrl-C lands inside a write.
            assert writer._file is not None
            writer._file.write("3,9,1.00,2.0")
            raise KeyboardInterrupt
    assert not partial_path(path).exists()
    text = path.read_text()
    assert text.endswith("\n") and "3,9" not in text
    table = read_mot_txt(path)
    assert set(table.frames.tolist()) == {1}  # frame 2 had no boxes


def test_interrupted_before_any_frame_leaves_earlier_file(tmp_path: Path) -> None:
    path = tmp_path / "res.txt"
    path.write_text("earlier results\n")
    with pytest.raises(RuntimeError):
        with MotResultsWriter(path):
            raise RuntimeError("engine failed to load")
    assert path.read_text() == "earlier results\n"
    assert not partial_path(path).exists()


def test_closed_writer_refuses_writes(tmp_path: Path) -> None:
    writer = MotResultsWriter(tmp_path / "res.txt")
    assert writer.close() == tmp_path / "res.txt"
    assert writer.close() == tmp_path / "res.txt"
    with pytest.raises(ValueError, match="closed"):
        writer.write_frame(1, np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))


def test_reader_ground_truth_columns_and_separators(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text("1,1,10,20,30,40,1,1,0.8\n\n1 2 50 60 5 5 0 7 0.1\n")
    table = read_mot_txt(path)
    assert len(table) == 2
    np.testing.assert_array_equal(table.classes, [1, 7])
    np.testing.assert_array_equal(table.scores, [1.0, 0.0])
    np.testing.assert_allclose(table.visibility, [0.8, 0.1])
    np.testing.assert_allclose(table.boxes_tlwh[1], [50, 60, 5, 5])


def test_reader_six_columns_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("2,3,1,1,4,4\n")
    table = read_mot_txt(path)
    assert table.scores.tolist() == [1.0] and table.classes.tolist() == [-1]
    path.write_text("")
    empty = read_mot_txt(path)
    assert len(empty) == 0 and empty.boxes_tlwh.shape == (0, 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,1,0,0,5,5,1\n1,2,0,0,5\n", "not a MOTChallenge text file"),
        ("1,1,0,0,5\n", "has 5 columns"),
        ("1,1,zero,0,5,5\n", "not a MOTChallenge text file"),
        ("0,1,0,0,5,5\n", "frame numbers start at 1"),
        ("1,1,0,0,-5,5\n", "negative width or height"),
        ("1,1,nan,0,5,5\n", "non-finite"),
    ],
)
def test_reader_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        read_mot_txt(path)


def test_reader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        read_mot_txt(tmp_path / "none.txt")
