"""pytest configuration. Helpers shared by tests live in importable modules beside this file
(`paths`, `toy_engines`, ...), not here: several folders have a conftest.py, so `from conftest
import ...` would depend on collection order."""

import os

# One OpenMP thread for PyTorch (and OpenBLAS) in the test process and in the `omc` commands it
# starts, unless OMP_NUM_THREADS says otherwise. The suite's networks are small, and on a 2-core
# machine that other jobs share every parallel region of a 2-thread forward waits for the other
# thread to be scheduled: at load average 3 on 2 cores the network unit tests took 62 s with two
# threads and 15 s with one (the small export's network: 1.4-2.4 s per forward against 67 ms).
os.environ.setdefault("OMP_NUM_THREADS", "1")
