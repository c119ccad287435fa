"""The machine's ceiling: a large float32 matrix product timed in the same run as the engines.

A network that is compute-bound cannot run faster than the best dense GEMM the same cores reach
with the same thread count, so achieved GFLOP/s per backend are reported against it. The product
C = A B of two N x N float32 matrices (2 N^3 operations) is timed with each library that runs
the engines here: ONNX Runtime (a one-node MatMul graph, ORT_ENABLE_ALL, the run's intra-op
threads), NumPy (its BLAS, limited to the run's threads with threadpoolctl when installed) and
PyTorch (when installed, torch.set_num_threads). The ceiling is the fastest of them: median
time of `repeats` runs after one untimed run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Input names of the one-node MatMul graph.
_A, _B, _C = "a", "b", "c"


@dataclass(frozen=True)
class CeilingResult:
    """Best GEMM rate of the machine: gflops (the fastest library), per-library rates, N, threads."""

    gflops: float
    size: int
    threads: int
    library: str
    by_library: dict[str, float] = field(default_factory=dict)
    precision: str = "float32"
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gflops": self.gflops,
            "size": self.size,
            "threads": self.threads,
            "library": self.library,
            "by_library": dict(self.by_library),
            "precision": self.precision,
            "device": self.device,
            "method": f"{self.precision} {self.size}x{self.size} @ {self.size}x{self.size}, median of runs, fastest library",
        }


def _median_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # untimed: first-call allocations, thread pool start-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _onnxruntime_matmul(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", [_A, _B], [_C])],
        "sgemm",
        [helper.make_tensor_value_info(_A, TensorProto.FLOAT, [n, n]), helper.make_tensor_value_info(_B, TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info(_C, TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by every ONNX Runtime this project supports
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {_A: a, _B: b})


@contextlib.contextmanager
def blas_threads(threads: int) -> Iterator[bool]:
    """Limit NumPy's BLAS to `threads` inside the block (threadpoolctl); yields whether it could."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield True


def _numpy_matmul(a: np.ndarray, b: np.ndarray) -> Callable[[], Any]:
    return lambda: np.matmul(a, b)


def _torch_matmul(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], Any]:
    import torch

    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def run() -> Any:
        with torch.no_grad():
            return torch.mm(ta, tb)

    return run


def measure_ceiling(size: int, threads: int, repeats: int, seed: int = 0) -> CeilingResult:
    """GFLOP/s of an N x N float32 matrix product with each available library; the best wins.

    size: N.  threads: the benchmark's thread count.  repeats: timed runs per library.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    operations = 2.0 * size**3
    rates: dict[str, float] = {}
    rates["onnxruntime"] = operations / _median_seconds(_onnxruntime_matmul(a, b, threads), repeats) / 1e9
    with blas_threads(threads) as limited:
        if not limited:
            log.info("threadpoolctl is not installed: NumPy's sgemm uses its BLAS's default thread count")
        rates["numpy"] = operations / _median_seconds(_numpy_matmul(a, b), repeats) / 1e9
    try:
        import torch  # noqa: F401  (optional: the export extra)
    except ImportError:
        pass
    else:
        rates["torch"] = operations / _median_seconds(_torch_matmul(a, b, threads), repeats) / 1e9
    library = max(rates, key=lambda name: rates[name])
    for name, rate in rates.items():
        log.info("ceiling: %s sgemm %dx%d on %d thread(s): %.1f GFLOP/s", name, size, size, threads, rate)
    return CeilingResult(rates[library], size, threads, library, rates)


def measure_gpu_ceiling(size: int, repeats: int, seed: int = 0, device: int = 0) -> CeilingResult:
    """GFLOP/s of an N x N float16 matrix product on CUDA device `device` through PyTorch (tensor
    cores): the ceiling of the GPU backends, which run the network in float16. Each timed run
    waits for the device. Needs torch with CUDA."""
    import torch

    generator = torch.Generator(device=f"cuda:{device}").manual_seed(seed)
    a, b = (torch.randn((size, size), generator=generator, device=f"cuda:{device}", dtype=torch.float16) for _ in range(2))

    def run() -> Any:
        result = torch.mm(a, b)
        torch.cuda.synchronize(device)
        return result

    rate = 2.0 * size**3 / _median_seconds(run, repeats) / 1e9
    name = torch.cuda.get_device_name(device)
    log.info("GPU ceiling: torch fp16 GEMM %dx%d on %s: %.0f GFLOP/s", size, size, name, rate)
    return CeilingResult(rate, size, 0, "torch-cuda", {"torch-cuda": rate}, precision="float16", device=name)
