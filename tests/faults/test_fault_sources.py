"""Damaged sources and Ctrl-C: one line, the right exit status, inputs untouched, results valid.

Generated cases (Hypothesis): every cut of a JPEG is seen as truncated, any trailer after its
end-of-image marker is not, random bytes never crash the check. Hand-made cases through `omc
track`: a truncated JPEG mid-folder, a seqinfo.ini whose imDir leaves the sequence, and SIGINT
during start-up (a real process).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fault_checks import FAULT_SETTINGS, assert_refused, run_main, snapshot
from hypothesis import given
from hypothesis import strategies as st
from paths import REPO_ROOT

from omc.apps.results import read_mot_txt
from omc.files import partial_path
from omc.runtime.jpeg import is_jpeg, jpeg_is_complete

W, H = 96, 64


def frame(i: int) -> np.ndarray:
    image = np.full((H, W, 3), 40 + 10 * i, np.uint8)
    cv2.rectangle(image, (10 + 3 * i, 10), (30 + 3 * i, 50), (200, 200, 200), -1)
    return image


def jpeg_bytes(image: np.ndarray, *params: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    assert ok
    return encoded.tobytes()


# --- the JPEG check -------------------------------------------------------------------------------

_JPEG_PARAMS = st.sampled_from([(), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 1),
                                (cv2.IMWRITE_JPEG_OPTIMIZE, 1), (cv2.IMWRITE_JPEG_QUALITY, 30)])  # fmt: skip


@FAULT_SETTINGS
@given(params=_JPEG_PARAMS, seed=st.integers(0, 2**16), data=st.data())
def test_every_cut_of_a_jpeg_is_truncated_and_any_trailer_is_fine(params: tuple[int, ...], seed: int, data: st.DataObject) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    encoded = jpeg_bytes(image, *params)
    assert is_jpeg(encoded) and jpeg_is_complete(encoded)
    cut = data.draw(st.integers(2, len(encoded) - 1), label="cut")
    assert not jpeg_is_complete(encoded[:cut])
    assert jpeg_is_complete(encoded + data.draw(st.binary(max_size=64), label="trailer"))


@FAULT_SETTINGS
@given(body=st.binary(max_size=512))
def test_any_bytes_after_a_start_marker_give_an_answer(body: bytes) -> None:
    assert jpeg_is_complete(b"\xff\xd8" + body) in (True, False)


def test_a_truncated_jpeg_mid_folder_stops_the_run_keeping_earlier_frames(tmp_path: Path, toy_engines: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 5):
        data = jpeg_bytes(frame(i))
        (folder / f"{i:06d}.jpg").write_bytes(data[: len(data) * 2 // 3] if i == 3 else data)
    out = tmp_path / "runs" / "r.txt"
    before = snapshot(folder)
    status, _, err = run_main(["track", str(folder), "--engines", str(toy_engines), "--out", str(out)], capsys)
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == f"error: image {folder / '000003.jpg'} (frame 3) is truncated: its JPEG data ends before the end-of-image marker"
    assert "Premature end of JPEG" not in err  # refused before libjpeg decodes it
    assert set(read_mot_txt(out).frames.tolist()) <= {1, 2}  # the frames before it, in a valid file
    assert not partial_path(out).exists()
    assert snapshot(folder) == before


def test_seqinfo_image_dir_outside_the_sequence_is_refused(tmp_path: Path, toy_engines: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cv2.imwrite(str(elsewhere / "000001.png"), frame(1))
    sequence = tmp_path / "data" / "MOT17-02"
    (sequence / "img1").mkdir(parents=True)
    (sequence / "seqinfo.ini").write_text("[Sequence]\nname=MOT17-02\nimDir=../../elsewhere\nframeRate=30\n")
    before = snapshot(tmp_path)
    status, _, err = run_main(["track", str(sequence), "--engines", str(toy_engines), "--out", str(tmp_path / "r.txt")], capsys)
    assert_refused(status, err, f"{sequence / 'seqinfo.ini'}: imDir '../../elsewhere' must name a folder inside the sequence folder")
    assert snapshot(tmp_path) == before


# --- Ctrl-C during start-up ---------------------------------------------------------------------


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path, toy_engines: Path) -> None:
    """SIGINT at several moments of a real `omc track` start-up (imports, opening the source, the
    ONNX Runtime import and session): never a traceback, never 'onnxruntime is not installed'."""
    video = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (W, H))
    for i in range(600):
        writer.write(frame(i % 20))
    writer.release()
    for delay_s in (0.3, 0.8, 1.5):
        out = tmp_path / f"r{delay_s}.txt"
        process = subprocess.Popen(
            [sys.executable, "-m", "omc", "track", str(video), "--engines", str(toy_engines), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
            # A test run started in the background inherits SIGINT ignored: restore the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            time.sleep(delay_s)
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130, (delay_s, err)
        assert "Traceback" not in err and "not installed" not in err, (delay_s, err)
        assert err.strip().splitlines()[-1] == "interrupted", (delay_s, err)
        assert not partial_path(out).exists()
