"""Inputs of the cluster tests: small file streams, and a live source that keeps what it read.

`TeeLiveSource(url, folder)` is a callable stream source (omc.runtime.stream_reader.SourceSpec)
that opens a live URL and writes every frame it hands on as a lossless PNG (000001.png, ...)
plus the source's frame rate into `folder`, so a test can track exactly those frames again in
one process and compare. It is sent to a Ray worker by value (`ray.cloudpickle`), so the worker
need not import this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from omc.runtime.sources import FrameSource, LiveSource

RATE_FILE = "frame_rate.txt"


class TeeLiveSource:
    """Opens `url` (a live source) and keeps a copy of every frame read in `folder`."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.__name__ = url

    def __call__(self) -> FrameSource:
        return _TeeSource(LiveSource(self.url, 10.0, 5.0), self.folder)


class _TeeSource(FrameSource):
    is_live = True

    def __init__(self, inner: FrameSource, folder: Path) -> None:
        super().__init__(inner.path, inner.name, inner.frame_rate, None)
        self._inner = inner
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RATE_FILE).write_text(f"{inner.frame_rate!r}\n")
        self._written = len(list(folder.glob("*.png")))

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in self._inner:
            self._written += 1
            cv2.imwrite(str(self._folder / f"{self._written:06d}.png"), frame)
            yield index, frame

    def close(self) -> None:
        self._inner.close()


def write_video(path: Path, frames: int, shift: int, size: tuple[int, int] = (320, 192)) -> Path:
    """A small mp4 of the benchmark's generated clip (cycled, starting `shift` frames in)."""
    from omc.benchmarks.clip import generated_clip

    clip = generated_clip(size, seed=0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, size)
    for index in range(frames):
        writer.write(clip[(index + shift) % len(clip)])
    writer.release()
    return path
