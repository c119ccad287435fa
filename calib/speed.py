"""Float vs INT8 detector latency in ONNX Runtime on this CPU, side by side (`omc int8-report`).

Both sessions use ORT_ENABLE_ALL (export-and-tensorrt-notes.md: 1.25-1.3x over EXTENDED for fp32
and INT8 alike) and the same thread count. Runs alternate float, INT8, float, INT8 ... on the
same frames, so a burst of load from another process hits both; the median of each side is
reported with the spread (interquartile range) and the machine's load average before and after,
so a noisy measurement can be recognised and repeated. The CPU's instruction-set flags that decide
INT8 speed are read from /proc/cpuinfo (AVX2, AVX-512F, AVX-512 VNNI, AVX-512 BF16, AMX).

Optional ONNX Runtime profiling (`profile_dir`) writes one JSON trace per session and sums the
time per operator type, which says where INT8 did or did not help.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.machine import cpu_flag_words, cpuinfo_fields, cpuinfo_text, load_average

# /proc/cpuinfo flags that decide 8-bit and 16-bit kernel speed on x86.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    """Which of CPU_FLAGS the first CPU of /proc/cpuinfo has (all False where the file is absent)."""
    present = cpu_flag_words()
    return {flag: flag in present for flag in CPU_FLAGS}


def cpu_name() -> str:
    return cpuinfo_fields(cpuinfo_text()).get("model name") or platform.processor() or "unknown"


@dataclass(frozen=True)
class SpeedReport:
    """Detector latency, float vs INT8, in ms per frame (batch 1)."""

    float_ms: list[float]
    int8_ms: list[float]
    threads: int
    cpu: str
    flags: dict[str, bool]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def float_median_ms(self) -> float:
        return float(np.median(self.float_ms))

    @property
    def int8_median_ms(self) -> float:
        return float(np.median(self.int8_ms))

    @property
    def speedup(self) -> float:
        """float median / INT8 median."""
        return self.float_median_ms / self.int8_median_ms

    def table(self) -> str:
        def spread(values: list[float]) -> str:
            low, high = np.percentile(values, [25, 75])
            return f"{np.median(values):8.1f} ms  (IQR {low:.1f}-{high:.1f}, {len(values)} runs)"

        flags = " ".join(f"{name}={'yes' if on else 'no'}" for name, on in self.flags.items())
        lines = [
            f"cpu               {self.cpu}, {os.cpu_count()} logical cores, {self.threads or 'all'} ORT threads",
            f"cpu flags         {flags}",
            f"load average      before {self.load_before[0]:.2f}, after {self.load_after[0]:.2f} (1 min)",
            f"detector fp32     {spread(self.float_ms)}",
            f"detector int8     {spread(self.int8_ms)}",
            f"speed-up          {self.speedup:.2f}x (median fp32 / median int8)",
        ]
        for side, profile in self.profiles.items():
            total = sum(profile.values()) or 1.0
            top = sorted(profile.items(), key=lambda item: -item[1])[:8]
            lines.append(f"profile {side:<9} " + ", ".join(f"{op} {ms:.0f} ms ({ms / total:.0%})" for op, ms in top))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_median_ms": self.float_median_ms,
            "int8_median_ms": self.int8_median_ms,
            "speedup": self.speedup,
            "float_ms": self.float_ms,
            "int8_ms": self.int8_ms,
            "threads": self.threads,
            "cpu": self.cpu,
            "cpu_flags": self.flags,
            "load_before": list(self.load_before),
            "load_after": list(self.load_after),
            "profiles_ms_per_op_type": self.profiles,
        }


def _session(path: Path, threads: int, profile_prefix: str | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def operator_times(profile_file: Path) -> dict[str, float]:
    """Milliseconds per operator type summed over an ONNX Runtime profile (kernel events)."""
    events = json.loads(profile_file.read_text())
    totals: dict[str, float] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "op_name" in args and event.get("name", "").endswith("_kernel_time"):
            totals[args["op_name"]] = totals.get(args["op_name"], 0.0) + event.get("dur", 0) / 1e3
    return totals


def compare_detector_speed(
    float_onnx: str | Path,
    int8_onnx: str | Path,
    images: npt.NDArray[np.uint8],
    repeats: int = 10,
    warmup: int = 2,
    threads: int = 0,
    profile_dir: str | Path | None = None,
) -> SpeedReport:
    """Time both detector graphs alternately on `images` (uint8 [M, H, W, 3], cycled).

    repeats: timed runs per graph (after `warmup` untimed ones each). threads: ONNX Runtime
    intra-op threads (0: all cores). profile_dir: also profile one run per image of each graph
    there (separate sessions, so the timed runs carry no profiling overhead).
    """
    load_before = load_average()
    sessions = {"fp32": _session(Path(float_onnx), threads, None), "int8": _session(Path(int8_onnx), threads, None)}
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for run in range(warmup + repeats):
        feeds = {contract.IMAGES: images[run % len(images)][None]}
        for side, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            elapsed = (time.perf_counter() - start) * 1e3
            if run >= warmup:
                times[side].append(elapsed)
    load_after = load_average()
    profiles: dict[str, dict[str, float]] = {}
    if profile_dir is not None:
        folder = Path(profile_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for side, path in (("fp32", float_onnx), ("int8", int8_onnx)):
            session = _session(Path(path), threads, str(folder / f"detector_{side}"))
            for index in range(min(len(images), max(repeats // 2, 1))):
                session.run(None, {contract.IMAGES: images[index][None]})
            profiles[side] = operator_times(Path(session.end_profiling()))
    return SpeedReport(times["fp32"], times["int8"], threads, cpu_name(), cpu_flags(), load_before, load_after, profiles)
