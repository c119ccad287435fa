"""Output paths that would destroy an input or a special file: refused before any work.

Each case runs the real command in this process (`omc.cli.main`) and checks what
fault_checks says: exit 2, one line, no traceback, inputs byte-identical, nothing left behind.
Special files are made inside the test's temporary folder (FIFO, socket, mknod device node).
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from fault_checks import assert_refused, run_main, snapshot
from toy_engines import write_toy_engines

from omc import contract

W, H = 96, 64


@pytest.fixture
def work() -> Iterator[Path]:
    """A short temporary folder (UNIX socket paths are limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="omc-", dir="/tmp") as folder:
        yield Path(folder)


@pytest.fixture
def engines(work: Path) -> Path:
    write_toy_engines(work / "engines")
    return work / "engines"


@pytest.fixture
def clip(work: Path) -> Path:
    path = work / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (W, H))
    for i in range(3):
        writer.write(np.full((H, W, 3), 60 + 40 * i, np.uint8))
    writer.release()
    return path


def track(capsys: pytest.CaptureFixture[str], source: Path, engines: Path, *extra: str) -> tuple[int, str]:
    status, _, err = run_main(["track", str(source), "--engines", str(engines), *extra], capsys)
    return status, err


def mknod_char_device(path: Path) -> Path:
    """A character device node with /dev/null's numbers, inside the test folder (never a real /dev entry)."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted for this user; the FIFO and socket cases cover special files")
    return path


def test_out_naming_the_source_video_is_refused(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(work)
    status, err = track(capsys, clip, engines, "--out", str(clip))
    assert_refused(status, err, f"--out {clip} is an input of this run (SOURCE {clip})")
    assert snapshot(work) == before


def test_out_and_save_video_naming_one_file_are_refused(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(work)
    same = work / "same.mp4"
    status, err = track(capsys, clip, engines, "--out", str(same), "--save-video", str(same))
    assert_refused(status, err, f"--save-video {same} and --out {same} are the same file")
    assert snapshot(work) == before


def test_out_naming_a_file_of_the_engines_folder_is_refused(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(work)
    for name in (contract.EXPORT_JSON, contract.DETECTOR_ONNX):
        status, err = track(capsys, clip, engines, "--out", str(engines / name))
        assert_refused(status, err, f"--out {engines / name} is an input of this run (--engines")
    assert snapshot(work) == before


def test_out_through_a_link_to_an_input_is_refused(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "link.txt").symlink_to(engines / contract.EXPORT_JSON)
    os.link(clip, work / "hard.txt")
    before = snapshot(work)
    for alias in ("link.txt", "hard.txt"):
        status, err = track(capsys, clip, engines, "--out", str(work / alias))
        assert_refused(status, err, "is an input of this run")
    assert snapshot(work) == before


def test_out_naming_the_videos_temporary_file_is_refused(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(work)
    status, err = track(capsys, clip, engines, "--out", str(work / "demo.partial.mp4"), "--save-video", str(work / "demo.mp4"))
    assert_refused(status, err, "the temporary file of --save-video")
    assert snapshot(work) == before


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "folder"])
def test_out_naming_a_special_file_is_refused(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    target = work / "special"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(target))
        server.close()
    elif kind == "device":
        mknod_char_device(target)
    else:
        target.mkdir()
    before = snapshot(work)
    for flag in ("--out", "--save-video"):
        extra = [flag, str(target)] if flag == "--out" else ["--out", str(work / "r.txt"), flag, str(target)]
        status, err = track(capsys, clip, engines, *extra)
        assert_refused(status, err, f"{flag} {target}")
        assert "not a regular file" in err or "is a folder" in err
    assert snapshot(work) == before


def test_save_video_into_a_folder_that_cannot_be_created(work: Path, engines: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "file").write_text("x")
    before = snapshot(work)
    status, err = track(capsys, clip, engines, "--out", str(work / "r.txt"), "--save-video", str(work / "file" / "v" / "demo.mp4"))
    assert_refused(status, err, "its folder cannot be created", f"{work / 'file'} is a file")
    assert snapshot(work) == before


def test_eval_json_naming_the_ground_truth_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, results = work / "gt.txt", work / "seq.txt"
    gt.write_text("1,1,10,10,20,40,1,1,1\n")
    results.write_text("1,3,10,10,20,40,0.9,-1,-1,-1\n")
    before = snapshot(work)
    for target in (gt, results):
        status, _, err = run_main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(target)], capsys)
        assert_refused(status, err, f"--json {target} is an input of this run")
    assert snapshot(work) == before


def test_export_over_its_own_checkpoint_or_into_special_files_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "export"
    out.mkdir()
    checkpoint = work / "weights.pt"
    checkpoint.write_bytes(b"not read: the refusal comes first")
    os.link(checkpoint, out / contract.DETECTOR_ONNX)
    os.mkfifo(out / contract.EXPORT_JSON)
    before = snapshot(work)
    status, _, err = run_main(["export", "--weights", str(checkpoint), "--out", str(out)], capsys)
    assert_refused(status, err, f"--out {out / contract.DETECTOR_ONNX} is an input of this run (--weights {checkpoint})")
    (out / contract.DETECTOR_ONNX).unlink()
    before = snapshot(work)
    status, _, err = run_main(["export", "--random-weights", "--variant", "s", "--out", str(out)], capsys)
    assert_refused(status, err, f"--out {out / contract.EXPORT_JSON} is a FIFO")
    assert snapshot(work) == before
