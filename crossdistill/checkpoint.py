"""Training checkpoints written atomically, and the exact state needed to resume.

Layout under ``<output_dir>/checkpoints/``::

    step-00000120/          one complete checkpoint (written as .tmp-step-..., then renamed)
        trainable.pt        trainable parameters (all weights, or the LoRA adapters)
        optimizer.pt  scheduler.pt  rng.pt
        state.json          step, epoch, position in the epoch's data order, micro-batch size, history
    latest.json             {"name": "step-00000120"}, replaced atomically after the folder exists
    best.pt                 trainable parameters of the best model so far (replaced atomically)

A kill at any moment leaves either the previous or the new checkpoint as "latest", never a torn one:
:func:`load_latest` also verifies the folder's files and falls back to the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from . import faults
from .fsutil import write_json

FILES = ("trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise KeyError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_torch(obj, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(root: Path, model, optimizer, scheduler, state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step-<state['step']>`` under ``root`` atomically, point latest.json at it, prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:08d}"
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_torch(trainable_state(model), tmp / "trainable.pt")
    faults.maybe_kill_in_checkpoint(state["step"])
    _save_torch(optimizer.state_dict(), tmp / "optimizer.pt")
    _save_torch(scheduler.state_dict(), tmp / "scheduler.pt")
    _save_torch(rng_state(), tmp / "rng.pt")
    write_json(tmp / "state.json", state)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"name": name, "step": state["step"]})
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(root: Path, model, info: dict) -> None:
    """Replace ``best.pt`` (trainable parameters + info) atomically."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".best.pt.tmp"
    _save_torch({"trainable": trainable_state(model), "info": info}, tmp)
    os.replace(tmp, root / "best.pt")


def _complete(folder: Path) -> bool:
    if not all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in FILES):
        return False
    try:
        json.loads((folder / "state.json").read_text())
    except (json.JSONDecodeError, OSError):
        return False
    return True


def find_latest(root: Path) -> Path | None:
    """The checkpoint latest.json names if complete, else the newest complete ``step-*`` folder, else None."""
    try:
        named = root / json.loads((root / "latest.json").read_text())["name"]
        if _complete(named):
            return named
    except (OSError, json.JSONDecodeError, KeyError):
        pass
    for folder in sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True):
        if _complete(folder):
            return folder
    return None


def resume_point(out_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (``resume``), after checking ``out_dir`` may be used.

    Without ``resume`` the folder must be new or empty (or ``overwrite``). With ``resume`` and no checkpoint the
    run starts fresh in a cleared folder — unless the folder holds a finished run (``done.json``): that is refused.
    """
    from .errors import UsageError
    from .fsutil import check_output_dir

    found = find_latest(out_dir / "checkpoints") if resume else None
    if resume and found is None and (out_dir / "done.json").is_file():
        raise UsageError(f"{out_dir} already holds a finished run (done.json); nothing to resume")
    if found is None and not resume:
        check_output_dir(out_dir, overwrite)
    elif found is None and out_dir.is_dir():
        check_output_dir(out_dir, True)
    return found


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore model/optimizer/scheduler/RNG from ``folder``; returns its state.json.

    A checkpoint written for other settings (another model, LoRA on/off, other trainable parameters) is
    refused with a UsageError instead of being half-loaded.
    """
    from .errors import UsageError

    try:
        load_trainable(model, torch.load(folder / "trainable.pt", map_location="cpu"))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu"))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UsageError(f"checkpoint {folder} does not match this model and settings ({str(exc).splitlines()[0][:160]}); "
                         "resume with the flags it was written with, or start over with --overwrite") from None
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu"))
    set_rng_state(torch.load(folder / "rng.pt", map_location="cpu", weights_only=False))
    return json.loads((folder / "state.json").read_text())
