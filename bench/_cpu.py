"""What CPU a CPU benchmark ran on: int8 speed-ups depend on its instruction set (VNNI, AMX), so every result says."""

from __future__ import annotations

import os
import platform
from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_description(threads: int) -> dict:
    """``{"machine": ..., "cpu_model": ..., "cpu_flags": {flag: present}}`` for this machine run with ``threads``."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {threads} threads", "cpu_model": model,
            "cpu_flags": {f: f in flags for f in INT8_FLAGS}}
