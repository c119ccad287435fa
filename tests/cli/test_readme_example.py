"""The embedding example in README.md runs as written (on small contract engines and a made-up clip)."""

from __future__ import annotations

import contextlib
import io
import re

import cv2
import numpy as np
import pytest
from paths import REPO_ROOT
from toy_engines import write_toy_engines


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- embed:start -->\s*```python\n(.*?)```\s*<!-- embed:end -->", text, re.S)
    assert block, "README.md lost its embedding example (between the embed markers)"
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
