"""Run the `tritonserver` that the `nvidia-pytriton` wheel bundles on a repository, on 127.0.0.1.

For the end-to-end tests and the Triton benchmark on machines without NVIDIA's container (no
GPU, no Docker). PyTriton 0.7.0 ships Triton 2.51 with the Python backend only, so the engine
models must be written with `--platform python` (ONNX Runtime inside the Python backend); the
frame model (BLS) is the one a GPU server runs. PyTriton pins numpy < 2, so it lives in its own
virtual environment (`make triton-server` makes `.venv-triton`, with ONNX Runtime) and the
server's Python backend runs that environment's interpreter.

Launching the binary directly (rather than through PyTriton's Python API, which serves Python
callables, not a repository) needs what PyTriton's own launcher sets up: a backend folder with
the Python backend and the stub built for the environment's Python version, the wheel's
libraries and the interpreter's libpython on LD_LIBRARY_PATH (otherwise the stub loads the
system's libpython, which may be another build), and the environment's bin/ first on PATH (the
stub's interpreter finds its site-packages from there).

Only gRPC is served (HTTP and metrics off), on a free port of 127.0.0.1; `stop()` ends the
server and the stub processes it started (their own process group).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from omc.errors import OmcError

log = logging.getLogger(__name__)

# Seconds the server gets to unload its models on stop before it is killed.
EXIT_TIMEOUT_S = 5
# Attempts at a free port (another process may take the one we picked before the server binds it).
PORT_ATTEMPTS = 3
# Program run in the server's environment to find PyTriton's server folder and the interpreter's libdir.
_PROBE = (
    "import importlib.util, sys, sysconfig; "
    "spec = importlib.util.find_spec('pytriton'); "
    "print(list(spec.submodule_search_locations)[0]); "
    "print(sysconfig.get_config_var('LIBDIR')); "
    "print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalTritonServer:
    """PyTriton's bundled tritonserver serving `repository` on 127.0.0.1 (gRPC only).

    venv: the virtual environment with nvidia-pytriton (and what the models import: NumPy, ONNX
    Runtime). port: the gRPC port (0: a free one). Use as a context manager, or `start()` / `stop()`. `url` is host:port for
    tritonclient; `startup_s` how long the server took to become ready; `log_path` its log.
    """

    def __init__(self, repository: str | Path, venv: str | Path, ready_timeout_s: float = 120.0, port: int = 0) -> None:
        self.repository = Path(repository).resolve()
        self.venv = Path(venv).resolve()
        self.ready_timeout_s = ready_timeout_s
        self.requested_port = port
        self.port = port
        self.startup_s = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="omc-tritonserver-"))
        self.log_path = self._workdir / "tritonserver.log"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _layout(self) -> tuple[Path, dict[str, str]]:
        """(tritonserver binary, environment), with the backend folder assembled in the work folder."""
        python = self.venv / "bin" / "python"
        if not python.is_file():
            raise OmcError(f"{self.venv} is not a virtual environment with nvidia-pytriton; make it with: make triton-server")
        probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            raise OmcError(f"{self.venv} has no nvidia-pytriton ({probe.stderr.strip().splitlines()[-1:]}); make it with: make triton-server")
        package, libdir, version = probe.stdout.split("\n")[:3]
        dist = Path(package) / "tritonserver"
        backends = self._workdir / "backends"
        shutil.copytree(dist / "backends", backends, dirs_exist_ok=True)
        shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
        libs = Path(package).parent / "nvidia_pytriton.libs"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(self.venv / "bin"), env.get("PATH", "")))
        env.pop("PYTHONPATH", None)  # the stub must see the server environment's packages only
        env.pop("PYTHONHOME", None)
        return dist / "bin" / "tritonserver", env

    def start(self) -> "LocalTritonServer":
        binary, env = self._layout()
        start = time.perf_counter()
        attempts = 1 if self.requested_port else PORT_ATTEMPTS
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            command = [
                str(binary), "--model-repository", str(self.repository), "--backend-directory", str(self._workdir / "backends"),
                "--allow-http", "false", "--allow-metrics", "false", "--grpc-address", "127.0.0.1",
                "--grpc-port", str(self.port), "--exit-timeout-secs", str(EXIT_TIMEOUT_S),
            ]  # fmt: skip
            with open(self.log_path, "wb") as log_file:
                self._process = subprocess.Popen(
                    command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self._workdir, start_new_session=True
                )
            if self._wait_ready(start):
                self.startup_s = time.perf_counter() - start
                log.info("tritonserver on %s ready in %.1f s (log %s)", self.url, self.startup_s, self.log_path)
                return self
            text = self.log_tail()
            self.stop()
            if "address already in use" not in text.lower() or attempt == attempts - 1:
                raise OmcError(f"tritonserver did not become ready on {self.url}; its log ends: {text}")
        raise AssertionError("unreachable")

    def _wait_ready(self, start: float) -> bool:
        """Poll until the server and its models are ready (True) or it exits / times out (False)."""
        from omc.runtime.backends.triton import import_tritonclient

        grpcclient = import_tritonclient()
        client = grpcclient.InferenceServerClient(self.url)
        try:
            while time.perf_counter() - start < self.ready_timeout_s:
                assert self._process is not None
                if self._process.poll() is not None:
                    return False
                try:
                    if client.is_server_ready(client_timeout=1.0):
                        return True
                except Exception:  # not listening yet
                    pass
                time.sleep(0.1)
            return False
        finally:
            client.close()

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL to its process group after EXIT_TIMEOUT_S + 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=EXIT_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            pass
        # The group is the server's own (start_new_session): any Python-backend stub left over.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def close(self) -> None:
        """Stop the server and remove its work folder (logs included)."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

