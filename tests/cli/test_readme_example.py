"""The embedding example in README.md runs as written (on small contract engines and a made-up clip)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import REPO_ROOT
from toy_engines import write_toy_engines


def readme_example(marker: str = "embed") -> str:
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker}:start -->\s*```python\n(.*?)```\s*<!-- {marker}:end -->", text, re.S)
    assert block, f"README.md lost its example between the {marker} markers"
    return block.group(1)


def test_readme_example_runs(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 12
    engines = re.search(r'from_engines\("([^"]+)"', code).group(1)
    video = re.search(r'VideoCapture\("([^"]+)"', code).group(1)
    write_toy_engines(tmp_path / engines)
    writer = cv2.VideoWriter(str(tmp_path / video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(90, 160, (240, 320, 3), dtype=np.uint8))
    writer.release()
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert rows, "the example printed no tracks"
    # track_id, x1, y1, score, restored
    assert all(len(row) == 5 and int(row[0]) >= 1 and row[4] in ("True", "False") for row in rows)


def write_clip(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (320, 240))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(90, 160, (240, 320, 3), dtype=np.uint8))
    writer.release()


def test_readme_streams_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The many-streams example: a real RTSP server for its live URL, made-up clips for its files."""
    from rtsp import RtspServer, rtsp_available

    assert rtsp_available() is None, rtsp_available()
    code = readme_example("streams")
    assert len(code.strip().splitlines()) <= 12
    engines = re.search(r'from_engines\("([^"]+)"', code).group(1)
    url = re.search(r'"(rtsp://[^"]+)"', code).group(1)
    files = re.findall(r'"(\w+\.mp4)"', code)
    write_toy_engines(tmp_path / engines)
    for name in files:
        write_clip(tmp_path / name, 30)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with RtspServer() as server, contextlib.redirect_stdout(out):
        exec(compile(code.replace(url, server.url), "README.md", "exec"), {"__name__": "readme_example"})
    rows = [line.split(maxsplit=3) for line in out.getvalue().splitlines()]
    by_stream: dict[str, list[int]] = {}
    for stream, frame, latency, ids in rows:
        by_stream.setdefault(stream, []).append(int(frame))
        assert int(latency) >= 0 and ids.startswith("[")
    assert by_stream["lobby"] == list(range(1, 31)) and by_stream["yard"] == list(range(1, 31))
    door = by_stream["door"]
    assert door == sorted(door) and door[-1] >= 100 and len([f for f in door if f >= 100]) == 1
