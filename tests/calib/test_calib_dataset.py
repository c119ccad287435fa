"""Calibration sets: even sampling, exact letterboxing, round trip, tracklets, errors."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from calib_exports import FRAME_SIZE, numbered_frames, tiny_calibration
from omc.calib.dataset import (
    CalibrationSet,
    TrackletSamples,
    build_calibration_set,
    even_positions,
    split_positions,
)
from omc.config import CalibConfig
from omc.contract import EngineMeta
from omc.errors import BadInput
from omc.runtime.letterbox import letterbox

# Source frame number -> blue value of a numbered frame; flat frames letterbox to flat content.
CONFIG = CalibConfig(frames=5, holdout_frames=2, recheck_frames=2, tracker_warmup_frames=2)




def _source_number(letterboxed: np.ndarray) -> int:
    """Blue value at the centre of a letterboxed numbered frame: its source frame number."""
    height, width = letterboxed.shape[:2]
    return int(letterboxed[height // 2, width // 2, 0])


# --- sampling ------------------------------------------------------------------------------------


def test_even_positions_take_the_middle_of_equal_shares() -> None:
    # total 10, count 4: shares of 2.5 frames, middles at 1.25, 3.75, 6.25, 8.75 -> floor 1, 3, 6, 8.
    assert even_positions(10, 4).tolist() == [1, 3, 6, 8]
    assert even_positions(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert even_positions(7, 1).tolist() == [3]
    assert even_positions(3, 0).tolist() == []
    with pytest.raises(ValueError):
        even_positions(3, 4)


@pytest.mark.parametrize("total,frames,holdout", [(120, 10, 4), (1000, 64, 8), (37, 12, 3), (16, 16, 0)])
def test_split_positions_are_disjoint_sorted_and_evenly_spread(total: int, frames: int, holdout: int) -> None:
    calibration, held = split_positions(total, frames, holdout)
    assert len(calibration) == frames and len(held) == holdout
    assert not set(calibration.tolist()) & set(held.tolist())
    assert np.all(np.diff(calibration) > 0) and np.all(np.diff(held) >= 0)
    assert calibration.min() >= 0 and max(calibration.max(), held.max(initial=0)) < total
    # Evenly spread: every gap between consecutive calibration positions is at most twice the mean.
    gaps = np.diff(np.concatenate([[-1], calibration, [total]]))
    assert gaps.max() <= 2 * total / frames + 1


def test_split_positions_shrink_both_when_the_sources_are_short() -> None:
    calibration, held = split_positions(5, 10, 4)
    # 5 of the 14 wanted: 4 * 5 // 14 = 1 held out, 4 calibration frames, all 5 used once.
    assert len(held) == 1 and len(calibration) == 4
    assert sorted(calibration.tolist() + held.tolist()) == [0, 1, 2, 3, 4]


# --- building ------------------------------------------------------------------------------------


def test_frames_are_sampled_evenly_and_letterboxed_as_the_runtime_does(tmp_path: Path, toy_engines: Path) -> None:
    source = numbered_frames(tmp_path / "seq", 30)
    path = build_calibration_set([source], CONFIG.frames, toy_engines, tmp_path / "calib.npz", CONFIG)
    calibration = CalibrationSet.load(path)
    meta = EngineMeta.load(toy_engines)
    assert calibration.input_hw == meta.input_hw
    expected_calib, expected_held = split_positions(30, CONFIG.frames, CONFIG.holdout_frames)
    assert calibration.calib_origin[:, 1].tolist() == (expected_calib + 1).tolist()
    assert calibration.holdout_origin[:, 1].tolist() == (expected_held + 1).tolist()
    assert [_source_number(image) for image in calibration.images] == (expected_calib + 1).tolist()
    # Byte for byte what omc.runtime.letterbox makes of the source frame.
    frame = cv2.imread(str(source / f"{expected_calib[2] + 1:06d}.png"))
    np.testing.assert_array_equal(calibration.images[2], letterbox(frame, meta.input_hw)[0][0])
    assert calibration.images.dtype == np.uint8
    assert calibration.provenance["export_json_sha256"]
    assert calibration.provenance["input_hw"] == list(meta.input_hw)
    assert calibration.provenance["sources"][0]["frames"] == 30


def test_several_sources_share_the_samples_by_length(tmp_path: Path, toy_engines: Path) -> None:
    first = numbered_frames(tmp_path / "a", 10)
    second = numbered_frames(tmp_path / "b", 30, size=(200, 300))  # portrait: other padding
    config = replace(CONFIG, frames=8, holdout_frames=0)
    calibration = CalibrationSet.load(build_calibration_set([first, second], 8, toy_engines, tmp_path / "c.npz", config))
    positions = even_positions(40, 8)  # over the 40 frames of both, in order
    expected = [(0, p + 1) if p < 10 else (1, p - 9) for p in positions]
    assert [tuple(row) for row in calibration.calib_origin.tolist()] == expected
    assert [_source_number(image) for image in calibration.images] == [frame for _, frame in expected]


def test_video_and_motchallenge_sources(tmp_path: Path, toy_engines: Path) -> None:
    sequence = tmp_path / "MOT-01"
    numbered_frames(sequence / "img1", 12)
    (sequence / "seqinfo.ini").write_text("[Sequence]\nname=MOT-01\nimDir=img1\nframeRate=25\nseqLength=12\n")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 30, FRAME_SIZE)
    for index in range(12):
        writer.write(np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 20 * index, np.uint8))
    writer.release()
    config = replace(CONFIG, frames=6, holdout_frames=0, recheck_frames=0)
    calibration = CalibrationSet.load(build_calibration_set([sequence, video], 6, toy_engines, tmp_path / "c.npz", config))
    assert calibration.calib_origin[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert [s["kind"] for s in calibration.provenance["sources"]] == ["MotSequenceSource", "VideoSource"]


def test_recheck_samples_hold_the_tracklets_the_float_tracker_sent(tmp_path: Path, toy_engines: Path) -> None:
    # The toy detector reports the same confident boxes every frame: tracks are confirmed on the
    # second frame and sent to the re-check on the third (warm-up 2 + the sample's frame).
    from toy_engines import TOY_SCORES

    source = numbered_frames(tmp_path / "seq", 30)
    calibration = CalibrationSet.load(build_calibration_set([source], 5, toy_engines, tmp_path / "c.npz", CONFIG))
    assert len(calibration.recheck) == CONFIG.recheck_frames
    assert len(calibration.holdout_recheck) == len(calibration.holdout_images)
    assert not calibration.recheck.fallback.any() and not calibration.holdout_recheck.fallback.any()
    confident = sum(score > 0.5 for score in TOY_SCORES)
    for samples in (calibration.recheck, calibration.holdout_recheck):
        for sample in range(len(samples)):
            tracklets = samples.tracklets(sample)
            assert 1 <= len(tracklets) <= confident
            np.testing.assert_allclose(np.linalg.norm(tracklets, axis=1), 1.0, atol=1e-5)
    # The samples sit on calibration frames chosen evenly among them.
    assert calibration.recheck.frame.tolist() == even_positions(CONFIG.frames, CONFIG.recheck_frames).tolist()


def test_random_weights_fall_back_to_top_candidates_and_say_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="omc.calib.dataset"):
        calibration = CalibrationSet.load(tiny_calibration())
    samples = calibration.recheck
    assert samples.fallback.all()  # random weights: the tracker confirms no track
    assert all(len(samples.tracklets(s)) == CalibConfig().fallback_tracklets for s in range(len(samples)))
    np.testing.assert_allclose(np.linalg.norm(samples.rows, axis=1), 1.0, atol=1e-5)


def test_round_trip_keeps_every_array_and_the_provenance(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((5, 8)).astype(np.float32)
    original = CalibrationSet(
        images=rng.integers(0, 256, (3, 32, 64, 3), dtype=np.uint8),
        holdout_images=rng.integers(0, 256, (1, 32, 64, 3), dtype=np.uint8),
        calib_origin=np.array([[0, 1], [0, 5], [1, 2]], np.int64),
        holdout_origin=np.array([[0, 3]], np.int64),
        recheck=TrackletSamples.from_lists([0, 2], [rows[:2], rows[2:5]], [False, True], dim=8),
        holdout_recheck=TrackletSamples.from_lists([0], [rows[:1]], [False], dim=8),
        provenance={"sources": [{"path": "a.mp4"}], "input_hw": [32, 64]},
    )
    loaded = CalibrationSet.load(original.save(tmp_path / "set.npz"))
    for name in ("images", "holdout_images", "calib_origin", "holdout_origin"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
    np.testing.assert_array_equal(loaded.recheck.tracklets(1), rows[2:5])
    assert loaded.recheck.fallback.tolist() == [False, True]
    assert loaded.provenance == original.provenance
    assert loaded.input_hw == (32, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["set.npz"]  # no temporary left behind


# --- errors --------------------------------------------------------------------------------------


def test_a_folder_without_frames_is_one_bad_input(tmp_path: Path, toy_engines: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="contains no images"):
        build_calibration_set([tmp_path / "empty"], 4, toy_engines, tmp_path / "c.npz", CONFIG)
    assert not (tmp_path / "c.npz").exists()


def test_missing_or_int8_engines_are_refused(tmp_path: Path, toy_engines: Path) -> None:
    source = numbered_frames(tmp_path / "seq", 4)
    with pytest.raises(BadInput, match="export the float engines first"):
        build_calibration_set([source], 4, tmp_path / "nowhere", tmp_path / "c.npz", CONFIG)
    meta = EngineMeta.load(toy_engines)
    int8 = tmp_path / "int8"
    int8.mkdir()
    (int8 / "export.json").write_text(replace(meta, precision="int8").to_json())
    with pytest.raises(BadInput, match="INT8 engines"):
        build_calibration_set([source], 4, int8, tmp_path / "c.npz", CONFIG)
    with pytest.raises(BadInput, match="CalibConfig.frames must be at least 1"):
        build_calibration_set([source], 0, toy_engines, tmp_path / "c.npz", CONFIG)
    with pytest.raises(BadInput, match="does not exist"):
        build_calibration_set([tmp_path / "missing.mp4"], 4, toy_engines, tmp_path / "c.npz", CONFIG)


def test_loading_something_else_is_one_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        CalibrationSet.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a calibration set"):
        CalibrationSet.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(BadInput, match="format 1"):
        CalibrationSet.load(tmp_path / "other.npz")

