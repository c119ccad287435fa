"""A live RTSP stream that dies and comes back, beside a file stream, through the stream runtime.

The server is GStreamer's RTSP server on 127.0.0.1 (tests/rtsp.py; `make test` installs it where
missing, so this runs in CI). It is killed mid-stream (SIGKILL: a camera losing power) and started
again a second later on the same port: the RTSP stream reconnects and goes on, the gap shows in
its health and its outputs, and the file stream beside it is not disturbed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
from rtsp import RtspServer, rtsp_available

from omc.apps.results import read_mot_txt, read_track_records
from omc.apps.track import StreamOutputs, track_streams
from omc.config import StreamConfig
from omc.runtime import StreamRuntime, StreamSpec, Tracker

KILL_AT_FRAME = 15
DOWN_S = 1.0
LIVE_FRAMES = 45
FILE_FRAMES = 300


def write_clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (320, 192))
    for i in range(frames):
        image = np.full((192, 320, 3), 60 + i % 120, np.uint8)
        cv2.rectangle(image, (20 + i % 200, 30), (80 + i % 200, 170), (220, 220, 220), -1)
        writer.write(image)
    writer.release()
    return path


class KillOnce(threading.Thread):
    """Watches the runtime: once the live stream read KILL_AT_FRAME frames, kill the server and
    start it again DOWN_S later (a camera losing power and coming back)."""

    def __init__(self, runtime: StreamRuntime, server: RtspServer) -> None:
        super().__init__(daemon=True)
        self.runtime, self.server = runtime, server
        self.stop = threading.Event()
        self.killed = False

    def run(self) -> None:
        while not self.stop.wait(0.01):
            if self.runtime.health()["cam"].frames_read >= KILL_AT_FRAME:
                self.server.kill()
                self.killed = True
                if not self.stop.wait(DOWN_S):
                    self.server.start()
                return


def test_rtsp_stream_reconnects_and_the_file_stream_is_undisturbed(tmp_path: Path, toy_engines: Path) -> None:
    reason = rtsp_available()
    assert reason is None, f"the live-stream test needs GStreamer's RTSP server: {reason}"
    clip = write_clip(tmp_path / "clip.mp4", FILE_FRAMES)
    out = tmp_path / "out"
    config = StreamConfig(reconnect_initial_s=0.2, reconnect_max_s=0.4, open_timeout_s=5.0, read_timeout_s=2.0)
    with RtspServer(size=(320, 192), fps=25) as server:
        specs = [StreamSpec("cam", server.url, max_frames=LIVE_FRAMES), StreamSpec("clip", clip)]
        outputs = StreamOutputs({s.name: out / f"{s.name}.txt" for s in specs}, records=out / "tracks.jsonl")
        with StreamRuntime.from_engines(toy_engines, specs, config=config) as runtime:
            killer = KillOnce(runtime, server)
            killer.start()
            try:
                summary = track_streams(runtime, outputs)
            finally:
                killer.stop.set()
                killer.join()
            health = runtime.health()
    assert killer.killed

    # The live stream came back and went on to its frame budget; the gap shows in its health.
    # (Latest-frame mode: frames that arrive in a burst, as after a reconnect, replace each other.)
    cam = health["cam"]
    assert cam.state == "finished" and cam.frames_read == LIVE_FRAMES, cam
    # (RTSP delivers the frames buffered since the server started in one burst at each connect.)
    assert cam.frames_tracked + cam.frames_dropped == LIVE_FRAMES and cam.frames_tracked >= 3, cam
    assert cam.reconnects == 1 and cam.last_error is not None
    # ... and in its outputs: one record marked reconnected, with the frames missed while down.
    records = read_track_records(out / "tracks.jsonl")
    cam_records = [r for r in records if r["stream"] == "cam"]
    assert len(cam_records) == cam.frames_tracked
    back = [r for r in cam_records if r["reconnected"]]
    assert len(back) == 1
    assert back[0]["skipped"] >= int(DOWN_S * 25) - 5  # about 25 frames a second while down
    frames = [r["frame"] for r in cam_records]
    assert frames == sorted(frames)
    assert frames[-1] - frames[0] + 1 == len(frames) + sum(r["skipped"] for r in cam_records[1:])
    cam_table = read_mot_txt(out / "cam.txt")
    assert set(cam_table.frames.tolist()) <= set(frames)

    # The file stream beside it: every frame, the same tracks as tracking the file alone.
    assert health["clip"].state == "finished" and health["clip"].frames_tracked == FILE_FRAMES
    clip_records = [r for r in records if r["stream"] == "clip"]
    assert [r["frame"] for r in clip_records] == list(range(1, FILE_FRAMES + 1))
    with Tracker.from_engines(toy_engines, frame_rate=25.0) as tracker:
        capture = cv2.VideoCapture(str(clip))
        alone = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            alone.append(sorted(t.track_id for t in tracker.update(frame)))
        capture.release()
    assert [sorted(t["id"] for t in r["tracks"]) for r in clip_records] == alone
    assert summary.frames == cam.frames_tracked + FILE_FRAMES
