"""A real RTSP server on 127.0.0.1 for tests: GStreamer's, run by the system interpreter.

`RtspServer(port)` starts tests/rtsp_server.py under /usr/bin/python3 (whose `gi` has
GstRtspServer; `make live-deps`, part of `make test`, installs the Debian packages) and waits for
it to listen. `kill()` stops it at once (SIGKILL, as a camera that loses power), `start()` brings
it back on the same port. It serves generated H.264 video (GStreamer's moving ball) at `url`.
Everything it starts is stopped by `close()` (also on garbage collection of the test's fixture).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
# How long the server may take to start listening (s); it takes about 0.3 s here.
START_TIMEOUT_S = 20.0


def rtsp_available() -> str | None:
    """None when the RTSP server can run here, else why not (for the test's failure message)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if probe.returncode != 0:
        return "GStreamer's RTSP server is not installed for the system Python (run `make live-deps`)"
    if shutil.which("gst-inspect-1.0") is None and not Path("/usr/lib/x86_64-linux-gnu/gstreamer-1.0").exists():
        return "GStreamer plugins are missing (run `make live-deps`)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RtspServer:
    """An RTSP server serving `size` (W x H) video at `fps` on rtsp://127.0.0.1:PORT/MOUNT."""

    def __init__(self, port: int | None = None, mount: str = "/cam", size: tuple[int, int] = (320, 192), fps: int = 25) -> None:
        self.port = port or free_port()
        self.mount = mount
        self.size = size
        self.fps = fps
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "RtspServer":
        if self.running:
            return self
        command = [
            SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--mount", self.mount,
            "--size", f"{self.size[0]}x{self.size[1]}", "--fps", str(self.fps), "--seconds", "600",
        ]  # fmt: skip
        # Its own session: a Ctrl-C meant for pytest does not reach it, kill() reaches all of it.
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "ready" once it listens
        if line.strip() != "ready" or time.monotonic() > deadline:
            err = self._process.stderr.read() if self._process.stderr else ""
            self.kill()
            raise RuntimeError(f"the RTSP server did not start: {line.strip()} {err.strip()}")
        return self

    def kill(self) -> None:
        """Stop it at once, without a goodbye to its clients."""
        if self._process is None:
            return
        if self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process.wait(timeout=10)
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
        self._process = None

    def close(self) -> None:
        self.kill()

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.kill()
