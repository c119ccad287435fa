"""The machine a measurement ran on: the CPU's model name and instruction-set flags, the load.

`omc bench` and `omc int8-report` record these beside their figures, because speed and INT8
drift depend on the CPU (AVX2, AVX-512 VNNI, AMX) and on what else the machine was running.
Linux reads /proc/cpuinfo; elsewhere the fields are empty and the load average NaN.
"""

from __future__ import annotations

import os
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_text() -> str:
    """/proc/cpuinfo ('' where it cannot be read)."""
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo text as key -> value ("model name", "flags", ...)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flag_words() -> set[str]:
    """The flag words of the first CPU (e.g. "avx2", "avx512_vnni", "amx_int8"); empty off Linux."""
    return set(cpuinfo_fields(cpuinfo_text()).get("flags", "").split())


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (NaN where the platform has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3
