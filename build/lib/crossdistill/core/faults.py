"""Fault injection for tests of recovery (out-of-memory, NaN loss, crash, stall, slow steps).

Active only when ``CROSSDISTILL_ALLOW_FAULTS=1``; faults are read from ``CROSSDISTILL_FAULTS`` (JSON):

    {"oom_at_steps": [3], "oom_min_texts": 8,   # raise torch's OOM error while a forward holds > 8 texts
     "fatal_oom_at_steps": [3],                 # raise it outside the in-process retry (the process dies of it)
     "nan_at_steps": [4], "crash_at_steps": [6], "stall_at_steps": [5], "kill_at_steps": [2, 5],
     "kill_in_checkpoint_at_steps": [4],        # SIGKILL half-way through writing that step's checkpoint
     "sleep_per_step": 0.2,
     "once_dir": "/tmp/x"}                      # each fault fires once (marker files here), else every time

Never active in normal runs: :func:`install` (called first thing by the training scripts) puts the injectors at
the training hooks (:mod:`crossdistill.core.hooks`) only when the variable is set; otherwise nothing is installed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch

from crossdistill.core import hooks


def _faults() -> dict:
    if os.environ.get("CROSSDISTILL_ALLOW_FAULTS") != "1":
        return {}
    return json.loads(os.environ.get("CROSSDISTILL_FAULTS", "{}"))


def _fire(kind: str, step: int) -> bool:
    f = _faults()
    if step not in f.get(f"{kind}_at_steps", []):
        return False
    once = f.get("once_dir")
    if once:
        marker = Path(once) / f"{kind}-{step}"
        if marker.exists():
            return False
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return True


def _oom(step: int, texts_in_forward: int) -> None:
    f = _faults()
    if f and texts_in_forward > f.get("oom_min_texts", 0) and step in f.get("oom_at_steps", []):
        raise torch.OutOfMemoryError(f"CUDA out of memory (injected at step {step}, {texts_in_forward} texts)")


def _nan(step: int, loss: torch.Tensor) -> torch.Tensor:
    return loss * float("nan") if _fire("nan", step) else loss


def _crash_or_stall(step: int) -> None:
    f = _faults()
    if not f:
        return
    if f.get("sleep_per_step"):
        time.sleep(float(f["sleep_per_step"]))
    if _fire("kill", step):
        os.kill(os.getpid(), signal.SIGKILL)
    if _fire("crash", step):
        raise RuntimeError(f"injected crash at step {step}")
    if _fire("fatal_oom", step):
        raise torch.OutOfMemoryError(f"CUDA out of memory (injected, fatal, at step {step})")
    if _fire("stall", step):
        time.sleep(3600)


def _kill_in_checkpoint(step: int) -> None:
    if _fire("kill_in_checkpoint", step):
        os.kill(os.getpid(), signal.SIGKILL)


def install() -> bool:
    """Install the fault injectors at the training hooks when ``CROSSDISTILL_ALLOW_FAULTS=1``; True if it did."""
    if not _faults():
        return False
    for point, fn in (("step", _crash_or_stall), ("forward", _oom), ("loss", _nan), ("checkpoint", _kill_in_checkpoint)):
        hooks.install(point, fn)
    return True
