"""`omc track`: end to end on toy engines, flags to TrackerConfig, interruption, bad input.

In-process tests run `omc.cli.main` with a scripted stand-in tracker inside the real stream runtime
(the engines are stubbed) so the written rows are known exactly; the subprocess tests run `python -m
omc track` with the real tracker on the toy engines of tests/toy_engines.py for exit codes, one-line
errors, Ctrl-C and the files left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from omc.apps.results import read_mot_txt
from omc.cli import main
from omc.config import TrackerConfig
from omc.contract import EngineMeta
from omc.files import partial_path
from omc.runtime import backends, streams
from omc.runtime.engines import NetworkOutputs

REPO_ROOT = Path(__file__).resolve().parents[2]
W, H = 96, 64


def write_frames(folder: Path, count: int, size: tuple[int, int] = (W, H)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        image = np.full((size[1], size[0], 3), 40 + 10 * i, np.uint8)
        cv2.rectangle(image, (10 + 3 * i, 10), (30 + 3 * i, 50), (200, 200, 200), -1)
        assert cv2.imwrite(str(folder / f"{i:06d}.png"), image)
    return folder


# --- in-process, with a scripted tracker ---------------------------------------------------------


@dataclass(frozen=True)
class FakeTrack:
    track_id: int
    box: np.ndarray
    score: float
    restored: bool


class ScriptedTracker:
    """Frame n (1-based) of a stream: id 1 at x = 2n (detected); from frame 2 on also id 2 (restored).

    Stands in for `Tracker` inside the stream runtime: `with_engines` records how it was made.
    """

    created: list[dict[str, Any]] = []
    interrupt_at: int | None = None  # raise KeyboardInterrupt at this frame (Ctrl-C in the loop)

    def __init__(self) -> None:
        self.frames = 0

    @classmethod
    def with_engines(cls, engines: Any, meta: EngineMeta, config: TrackerConfig, frame_rate: float) -> "ScriptedTracker":
        cls.created.append({"config": config, "frame_rate": frame_rate})
        return cls()

    def recheck_tracklets(self) -> None:
        return None

    def skip_frames(self, count: int) -> None:
        self.frames += count

    def update_from_network(self, outputs: NetworkOutputs, transform: Any) -> list[FakeTrack]:
        self.frames += 1
        n = self.frames
        if n == self.interrupt_at:
            raise KeyboardInterrupt
        tracks = [FakeTrack(1, np.array([2.0 * n, 4.0, 2.0 * n + 20.0, 44.0], np.float32), 0.75, False)]
        if n >= 2:
            tracks.append(FakeTrack(2, np.array([50.0, 10.0, 70.0, 50.5], np.float32), 0.5, True))
        return tracks


class StubPair:
    """Engines that return nothing: the scripted tracker makes the tracks."""

    opened: list[dict[str, Any]] = []

    def run(self, images: np.ndarray, tracklets: list[Any]) -> list[NetworkOutputs]:
        assert images.dtype == np.uint8 and images.shape[1:] == (64, 96, 3)
        return [NetworkOutputs({}, None) for _ in range(len(images))]

    def close(self) -> None:
        pass


def expected_rows(frames: int) -> str:
    rows = []
    for n in range(1, frames + 1):
        rows.append(f"{n},1,{2.0 * n:.2f},4.00,20.00,40.00,0.7500,-1,-1,-1")
        if n >= 2:
            rows.append(f"{n},2,50.00,10.00,20.00,40.50,0.5000,-1,-1,-1")
    return "\n".join(rows) + "\n"


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedTracker]:
    def open_stub(engine_dir: Path, backend: str, device: str, **options: Any) -> tuple[StubPair, EngineMeta]:
        StubPair.opened.append({"engine_dir": Path(engine_dir), "backend": backend, "device": device})
        return StubPair(), EngineMeta(input_hw=(64, 96))

    monkeypatch.setattr(streams, "Tracker", ScriptedTracker)
    monkeypatch.setattr(backends, "open_engine_pair", open_stub)
    monkeypatch.setattr(ScriptedTracker, "created", [])
    monkeypatch.setattr(ScriptedTracker, "interrupt_at", None)
    monkeypatch.setattr(StubPair, "opened", [])
    return ScriptedTracker


@pytest.fixture
def engines(tmp_path: Path) -> Path:
    folder = tmp_path / "engines"
    folder.mkdir()
    (folder / "export.json").write_text("{}")  # only its presence is checked before the tracker loads
    return folder


def test_track_writes_results_and_summary(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = write_frames(tmp_path / "frames", 4)
    out = tmp_path / "runs" / "res.txt"
    assert main(["track", str(frames), "--engines", str(engines), "--out", str(out)]) == 0
    assert out.read_text() == expected_rows(4)
    assert not partial_path(out).exists()
    err = capsys.readouterr().err
    assert "4 frames, 2 tracks, 3 restored boxes" in err and str(out) in err
    created, opened = scripted.created[0], StubPair.opened[0]
    assert created["config"] == TrackerConfig()
    assert (opened["backend"], opened["device"], created["frame_rate"]) == ("ort", "auto", 30.0)


def test_tracker_flags_become_the_config(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path) -> None:
    seq = tmp_path / "MOT-X"
    write_frames(seq / "img1", 2)
    (seq / "seqinfo.ini").write_text("[Sequence]\nname=MOT-X\nframeRate=14\n")
    argv = [
        "track", str(seq), "--engines", str(engines), "--out", str(tmp_path / "r.txt"),
        "--conf-thres", "0.3", "--track-buffer", "60", "--no-recheck", "--device", "cuda",
    ]
    assert main(argv) == 0
    created = scripted.created[0]
    assert created["config"] == TrackerConfig(conf_thres=0.3, track_buffer=60, recheck=False)
    assert (StubPair.opened[0]["device"], created["frame_rate"]) == ("cuda", 14.0)  # rate from seqinfo.ini
    assert main(argv + ["--frame-rate", "25", "--recheck"]) == 0
    assert scripted.created[1]["frame_rate"] == 25.0 and scripted.created[1]["config"].recheck is True


def test_max_frames(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path) -> None:
    frames = write_frames(tmp_path / "frames", 5)
    out = tmp_path / "r.txt"
    assert main(["track", str(frames), "--engines", str(engines), "--out", str(out), "--max-frames", "2"]) == 0
    assert out.read_text() == expected_rows(2)


def test_save_video(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path) -> None:
    frames = write_frames(tmp_path / "frames", 3)
    video = tmp_path / "runs" / "demo.mp4"
    argv = ["track", str(frames), "--engines", str(engines), "--out", str(tmp_path / "r.txt"), "--save-video", str(video), "--frame-rate", "10"]
    assert main(argv) == 0
    capture = cv2.VideoCapture(str(video))
    decoded = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        decoded.append(image)
    assert capture.get(cv2.CAP_PROP_FPS) == 10.0
    capture.release()
    assert len(decoded) == 3 and decoded[0].shape == (H, W, 3)
    assert not (tmp_path / "runs" / "demo.partial.mp4").exists()


def test_ctrl_c_keeps_frames_done(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = write_frames(tmp_path / "frames", 6)
    scripted.interrupt_at = 4  # Ctrl-C while the 4th frame is tracked
    out, video = tmp_path / "r.txt", tmp_path / "v.mp4"
    status = main(["track", str(frames), "--engines", str(engines), "--out", str(out), "--save-video", str(video)])
    assert status == 130
    assert out.read_text() == expected_rows(3)
    assert not partial_path(out).exists()
    capture = cv2.VideoCapture(str(video))  # the video is finalised too and playable
    assert capture.isOpened() and capture.read()[0]
    capture.release()
    err = capsys.readouterr().err
    assert "stopped; frames kept per stream: frames 3" in err and err.rstrip().endswith("interrupted")


def test_size_change_mid_stream_keeps_earlier_frames(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = write_frames(tmp_path / "frames", 2)
    cv2.imwrite(str(frames / "000003.png"), np.zeros((H, W + 8, 3), np.uint8))
    out = tmp_path / "r.txt"
    assert main(["track", str(frames), "--engines", str(engines), "--out", str(out)]) == 2
    assert out.read_text() == expected_rows(2)
    err = capsys.readouterr().err
    assert f"error: frame 3 of {frames} is {W + 8}x{H} but the stream started at {W}x{H}" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--conf-thres", "1.5"], "--conf-thres must lie in [0, 1], got 1.5"),
        (["--frame-rate", "0"], "--frame-rate must be a positive number of frames per second, got 0.0"),
        (["--frame-rate", "inf"], "--frame-rate must be a positive number of frames per second, got inf"),
        (["--frame-rate", "nan"], "--frame-rate must be a positive number of frames per second, got nan"),
        (["--max-frames", "0"], "--max-frames must be at least 1, got 0"),
    ],
)
def test_bad_option_values(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    frames = write_frames(tmp_path / "frames", 1)
    out = tmp_path / "r.txt"
    assert main(["track", str(frames), "--engines", str(engines), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not out.exists() and not partial_path(out).exists()
    assert scripted.created == []


def test_out_is_a_folder(tmp_path: Path, scripted: type[ScriptedTracker], engines: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = write_frames(tmp_path / "frames", 1)
    assert main(["track", str(frames), "--engines", str(engines), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_help_lists_every_tracker_field_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["track", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, value in TrackerConfig().to_dict().items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert f"(default: {value})" in text
    assert "--no-recheck" in text


# --- subprocess, real tracker on toy engines -----------------------------------------------------


def run_omc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omc", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr




def test_cli_missing_engines_dir(tmp_path: Path) -> None:
    frames = write_frames(tmp_path / "frames", 1)
    out = tmp_path / "r.txt"
    result = run_omc("track", str(frames), "--engines", str(tmp_path / "nope"), "--out", str(out))
    assert_one_line_error(result, "has no export.json")
    assert list(tmp_path.iterdir()) == [frames]


def test_cli_broken_engines_dir(tmp_path: Path, toy_engines: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("export.json", "recheck.onnx"):
        (broken / name).write_bytes((toy_engines / name).read_bytes())
    (broken / "detector.onnx").write_bytes(b"not an onnx model")
    frames = write_frames(tmp_path / "frames", 1)
    out = tmp_path / "r.txt"
    result = run_omc("track", str(frames), "--engines", str(broken), "--out", str(out))
    assert_one_line_error(result, "detector.onnx")
    assert not out.exists() and not partial_path(out).exists()


def test_cli_missing_source(tmp_path: Path, toy_engines: Path) -> None:
    out = tmp_path / "r.txt"
    result = run_omc("track", str(tmp_path / "none.mp4"), "--engines", str(toy_engines), "--out", str(out))
    assert_one_line_error(result, "does not exist")
    assert not out.exists()


def test_cli_end_to_end_on_toy_engines(tmp_path: Path, toy_engines: Path) -> None:
    frames = write_frames(tmp_path / "frames", 6)
    out, video = tmp_path / "runs" / "res.txt", tmp_path / "runs" / "demo.mp4"
    result = run_omc("track", str(frames), "--engines", str(toy_engines), "--out", str(out), "--save-video", str(video))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.stderr.strip().splitlines()[-2]
    assert summary.startswith("frames: 6 frames, ") and summary.endswith(f"-> {out}, {video}")
    table = read_mot_txt(out)
    assert len(table) > 0 and set(table.frames.tolist()) <= set(range(1, 7))
    assert (table.boxes_tlwh[:, 2:] > 0).all()
    assert sorted(os.listdir(out.parent)) == ["demo.mp4", "res.txt"]  # no .partial left
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 6 and (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)
    capture.release()

    baseline = tmp_path / "runs" / "baseline.txt"
    result = run_omc("track", str(frames), "--engines", str(toy_engines), "--out", str(baseline), "--no-recheck")
    assert result.returncode == 0, result.stderr
    assert ", 0 restored boxes ->" in result.stderr  # the baseline never runs the re-check
    assert len(read_mot_txt(baseline)) > 0


def write_long_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (W, H))
    for i in range(frames):
        image = np.full((H, W, 3), 90, np.uint8)
        cv2.rectangle(image, (10 + i % 40, 10), (30 + i % 40, 50), (220, 220, 220), -1)
        writer.write(image)
    writer.release()
    return path


def test_cli_sigint_keeps_a_valid_results_file(tmp_path: Path, toy_engines: Path) -> None:
    total = 4000
    video = write_long_video(tmp_path / "long.mp4", total)
    out = tmp_path / "r.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "omc", "track", str(video), "--engines", str(toy_engines), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        # A test run started in the background by a non-interactive shell inherits SIGINT ignored,
        # and Python then installs no Ctrl-C handler: give the child the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until a few frames are on disk, then press Ctrl-C.
        while time.monotonic() < deadline and process.poll() is None:
            partial = partial_path(out)
            if partial.exists() and partial.read_text().count("\n") >= 5:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().endswith("interrupted")
    assert "stopped; frames kept per stream: long " in err
    assert not partial_path(out).exists()
    text = out.read_text()
    assert text.endswith("\n")
    table = read_mot_txt(out)
    assert 0 < table.frames.max() < total


def test_cli_end_to_end_on_a_real_export(tmp_path: Path) -> None:
    """`omc track` on a video with the engines `omc export` wrote (the tests' small random network;
    a low threshold gives it tracks), with the re-check on."""
    from small_export import small_export  # tests/ is on sys.path through its conftest.py

    from omc.benchmarks.clip import generated_clip

    frames = generated_clip((320, 192), 8, seed=0)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (320, 192))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out, video = tmp_path / "runs" / "res.txt", tmp_path / "runs" / "demo.mp4"
    result = run_omc("track", str(clip), "--engines", str(small_export()), "--out", str(out), "--save-video", str(video),
                     "--conf-thres", "0.05")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.stderr.strip().splitlines()[-2]
    assert summary.startswith("clip: 8 frames, ") and summary.endswith(f"-> {out}, {video}")
    table = read_mot_txt(out)
    assert len(table) > 0 and set(table.frames.tolist()) <= set(range(2, 9))  # confirmed from frame 2 on
    assert (table.boxes_tlwh[:, 2:] > 0).all() and np.isfinite(table.boxes_tlwh).all()
    assert sorted(os.listdir(out.parent)) == ["demo.mp4", "res.txt"]
