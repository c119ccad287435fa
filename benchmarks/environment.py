"""What a benchmark ran on: CPU model, vector-instruction flags, cores, GPU, library versions.

Recorded beside every result so numbers from different machines are never compared blind.
Nothing here imports a heavy library: versions come from installed package metadata, the CPU
from /proc/cpuinfo (Linux) or `platform`, the GPU from `nvidia-smi` when it is on PATH.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from omc import __version__
from omc.machine import cpuinfo_fields, cpuinfo_text


log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")
# CPU flags that decide which kernels ONNX Runtime and PyTorch can use (name in the report ->
# names in /proc/cpuinfo; AMX counts when any of its three flags is present).
CPU_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512f": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_tile", "amx_bf16", "amx_int8"),
}
# Distributions whose versions matter to the numbers (pip names).
LIBRARIES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "torch",
    "opencv-python-headless",
    "opencv-python",
    "lap",
    "tensorrt",
    "tensorrt-rtx-cu13",
    "tensorrt-rtx-cu12",
    "cuda-bindings",
    "threadpoolctl",
    "matplotlib",
)
NVIDIA_SMI_TIMEOUT_S = 10.0


def physical_cores(cpuinfo_text: str) -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None when it does not list them."""
    cores: set[tuple[str, str]] = set()
    physical = core = None
    for line in cpuinfo_text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if physical is not None and core is not None:
                cores.add((physical, core))
            physical = core = None
    return len(cores) or None


def cpu_flags(flag_words: set[str]) -> dict[str, bool]:
    """The report's CPU flags (CPU_FLAGS) from the set of /proc/cpuinfo flag words."""
    return {name: any(word in flag_words for word in words) for name, words in CPU_FLAGS.items()}


def cpu_description() -> dict[str, Any]:
    """CPU model, flags and core counts of this machine."""
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    info: dict[str, Any] = {
        "model": platform.processor() or platform.machine(),
        "architecture": platform.machine(),
        "logical_cores": logical,
        "usable_cores": usable,
        "physical_cores": None,
        "flags": {name: False for name in CPU_FLAGS},
    }
    text = cpuinfo_text()
    if not text:
        return info
    fields = cpuinfo_fields(text)
    info["model"] = fields.get("model name", info["model"])
    info["physical_cores"] = physical_cores(text)
    info["flags"] = cpu_flags(set(fields.get("flags", "").split()))
    return info


def memory_gib() -> float | None:
    """Total RAM in GiB (Linux), None elsewhere."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_description() -> list[dict[str, str]]:
    """One entry (name, driver, memory) per NVIDIA GPU that nvidia-smi lists; [] without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution in `names` that is installed."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def collect_environment(command: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything that describes where and how a benchmark ran.

    command: the command line that produced the result (recorded as it was typed).
    extra: run facts to add (threads, input size, engine precision, BLAS limits, ...).
    """
    environment: dict[str, Any] = {
        "cpu": cpu_description(),
        "memory_gib": memory_gib(),
        "gpus": gpu_description(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "omc": __version__,
        "libraries": library_versions(),
        "command": command,
    }
    environment.update(dict(extra or {}))
    return environment
