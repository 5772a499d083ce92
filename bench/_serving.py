"""What the serving benchmarks (``onnx_speed.py``, ``int8_variants.py``, ``int8_gemm_ceiling.py``) share: the CPU they
ran on (int8 speed-ups depend on its instruction set, VNNI or AMX, so every result says), their common flags, and a
throw-away exported copy of the student."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"


def cpu_description(threads: int) -> dict:
    """``{"machine": ..., "cpu_model": ..., "cpu_flags": {flag: present}}`` for this machine run with ``threads``."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {threads} threads", "cpu_model": model,
            "cpu_flags": {f: f in flags for f in INT8_FLAGS}}


def add_serving_args(p: argparse.ArgumentParser, *, passages: int, repeats: int, out: str) -> None:
    """The flags every serving benchmark takes; ``passages``/``repeats``/``out`` are the script's defaults."""
    p.add_argument("--model_path", default="minilm-l6", help="a student folder or alias (copied, never written into)")
    p.add_argument("--beir_dir", default=str(SCIFACT))
    p.add_argument("--passages", type=int, default=passages, help="passages per throughput run")
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=out)


def exported_copy(model_path: str | Path, tmp: str | Path) -> tuple[Path, float]:
    """Copy the student folder into ``tmp`` (its own ONNX files left out), export ONNX and int8 there with
    ``crossdistill.models.export``; return the copy and the export's seconds. The user's folder is only read."""
    from crossdistill.models.export import export_student

    folder = Path(tmp) / "student"
    shutil.copytree(model_path, folder, ignore=shutil.ignore_patterns("onnx", "*.onnx"))
    t0 = time.time()
    export_student(folder, ["onnx", "onnx-int8"], log=lambda *_: None)
    return folder, time.time() - t0
