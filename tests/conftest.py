"""pytest configuration. Helpers shared by tests live in importable modules beside this file
(`paths`, `toy_engines`, ...), not here: several folders have a conftest.py, so `from conftest
import ...` would depend on collection order."""

import os
from pathlib import Path

import pytest

# One OpenMP thread for PyTorch (and OpenBLAS) in the test process and in the `omc` commands it
# starts, unless OMP_NUM_THREADS says otherwise. The suite's networks are small, and on a 2-core
# machine that other jobs share every parallel region of a 2-thread forward waits for the other
# thread to be scheduled: at load average 3 on 2 cores the network unit tests took 62 s with two
# threads and 15 s with one (the small export's network: 1.4-2.4 s per forward against 67 ms).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def toy_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy engines (tests/toy_engines.py, default meta), written once per run; read-only: a
    test that edits engines edits a copy."""
    from toy_engines import write_toy_engines

    folder = tmp_path_factory.mktemp("toy") / "engines"
    write_toy_engines(folder)
    return folder
