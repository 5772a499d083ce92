"""Training checkpoints written atomically, and the exact state needed to resume.

Layout under ``<output_dir>/checkpoints/``::

    step-00000120/          one complete checkpoint (written as .tmp-step-..., then renamed)
        trainable.pt        trainable parameters (all weights, or the LoRA adapters)
        optimizer.pt  scheduler.pt  rng.pt
        best.pt             the best model so far (trainable parameters + the epoch it comes from), when the run keeps
                            one: inside the checkpoint, so it always matches the checkpoint's record of the best epoch
                            (copied from the previous checkpoint when it did not change)
        state.json          step, epoch, position in the epoch's data order, micro-batch size, history, the settings
        manifest.json       size and sha256 of each file above, written last: a checkpoint is intact only if
                            every file matches it
    latest.json             {"name": "step-00000120"}, replaced atomically after the folder exists

A kill at any moment leaves either the previous or the new checkpoint as "latest", never a torn one;
:func:`find_latest` verifies every file against the manifest and falls back to the newest intact checkpoint
(a disk that corrupts or truncates a file later is caught the same way).

Nothing is ever unpickled: every ``.pt`` file holds only tensors and plain Python data and is read with
``torch.load(..., weights_only=True)``; RNG states are stored as tensors. A file holding anything else is refused
with one message (:func:`load_tensors`), never loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from crossdistill.core import hooks, legacy
from crossdistill.core.errors import UsageError
from crossdistill.core.files import file_sha256, write_json

FILES = ("trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json")
BEST = "best.pt"
MANIFEST = "manifest.json"


def load_tensors(path: Path):
    """Read a ``.pt`` file written by this module: tensors and plain data only, never arbitrary objects. A file that
    holds anything else (a crafted pickle) or is not a torch file at all is refused with a UsageError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        what = ("it holds objects other than tensors (a pickle that could run code)"
                if "weights only" in str(exc).lower() or isinstance(exc, pickle.UnpicklingError)
                else "it is damaged or not a torch file")
        raise UsageError(f"refusing to unpickle {path}: {what}, so it is not a file this toolkit wrote; delete that "
                         "checkpoint folder (resume falls back to the one before), or start over with --overwrite") from None


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
    """Every RNG state as tensors and numbers (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python_version": version, "python_state": torch.tensor(internal, dtype=torch.int64), "python_gauss": gauss,
             "numpy_kind": kind, "numpy_keys": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_cached": float(cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()), state["python_gauss"]))
    np.random.set_state((state["numpy_kind"], state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_torch(obj, path: Path) -> None:
    with open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as exc:  # torch's writer reports a failed write (a full disk) as a RuntimeError
            raise OSError(f"writing {path.name} failed: {str(exc).splitlines()[0][:160]}") from None
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(root: Path, model, optimizer, scheduler, state: dict, best: dict | None = None,
                    previous: Path | None = None, keep: int = 2) -> Path:
    """Write checkpoint ``step-<state['step']>`` under ``root`` atomically, point latest.json at it, prune old ones.

    ``best``: ``{"trainable": tensors, "info": {...}}`` of a new best model, written as this checkpoint's ``best.pt``;
    None keeps the best model of ``previous`` (the checkpoint this run wrote or resumed from last; copied, and
    verified against its manifest first). A folder that can no longer be written (permissions changed, disk full) is
    one UsageError, the previous checkpoint untouched."""
    try:
        return _save_checkpoint(root, model, optimizer, scheduler, state, best, previous, keep)
    except OSError as exc:
        shutil.rmtree(root / f".tmp-step-{state['step']:08d}", ignore_errors=True)
        raise UsageError(f"cannot write the checkpoint of step {state['step']} into {root} ({exc.strerror or exc}); free "
                         "disk space or fix permissions, then run again with --resume (the last checkpoint is kept)") from None


def _save_checkpoint(root: Path, model, optimizer, scheduler, state: dict, best: dict | None, previous: Path | None,
                     keep: int) -> Path:
    carried = _carried_best(previous) if best is None else None
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['step']:08d}"
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_torch(trainable_state(model), tmp / "trainable.pt")
    hooks.at("checkpoint", state["step"])
    _save_torch(optimizer.state_dict(), tmp / "optimizer.pt")
    _save_torch(scheduler.state_dict(), tmp / "scheduler.pt")
    _save_torch(rng_state(), tmp / "rng.pt")
    if best is not None:
        _save_torch(best, tmp / BEST)
    elif carried is not None:  # a copy, not a link: damage to one file stays in one checkpoint
        shutil.copyfile(carried, tmp / BEST)
    write_json(tmp / "state.json", state)
    files = [f for f in (*FILES, BEST) if (tmp / f).is_file()]
    write_json(tmp / MANIFEST, {f: {"size": (tmp / f).stat().st_size, "sha256": file_sha256(tmp / f)} for f in files})
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"name": name, "step": state["step"]})
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _latest_named(root: Path) -> Path | None:
    try:
        folder = root / json.loads((root / "latest.json").read_text())["name"]
        return folder if folder.is_dir() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _carried_best(previous: Path | None) -> Path | None:
    """The best-model file a new checkpoint carries over from ``previous``, checked against its manifest (a damaged one
    is never copied on); checkpoints of earlier versions kept it beside them in ``checkpoints/best.pt``."""
    if previous is None:
        return None
    if (previous / BEST).is_file():
        problem = _mismatch(previous, BEST)
        if problem:
            raise UsageError(f"the best model of checkpoint {previous} is damaged ({problem}); run again with --resume: "
                             "the run goes back to the newest intact checkpoint")
        return previous / BEST
    return legacy.best_beside(previous)


def _mismatch(folder: Path, name: str) -> str | None:
    try:
        want = json.loads((folder / MANIFEST).read_text()).get(name)
    except (OSError, ValueError, AttributeError):
        return "no readable manifest.json"
    path = folder / name
    if not isinstance(want, dict) or not path.is_file():
        return f"{name} is missing"
    if path.stat().st_size != want.get("size") or file_sha256(path) != want.get("sha256"):
        return f"{name} does not match its manifest (truncated or damaged)"
    return None


def load_best(checkpoint: Path) -> dict:
    """The best model a checkpoint holds (``{"trainable", "info"}``), verified against its manifest: a damaged one is a
    UsageError that says how to go back to an intact checkpoint. Checkpoints of earlier versions kept it beside them in
    ``checkpoints/best.pt``."""
    problem = intact(checkpoint)
    if problem is not None:
        raise UsageError(f"checkpoint {checkpoint} is damaged ({problem}); run again with --resume: the run goes back to "
                         "the newest intact checkpoint and trains from there")
    path = checkpoint / BEST if (checkpoint / BEST).is_file() else legacy.best_beside(checkpoint)
    if path is None:
        raise UsageError(f"checkpoint {checkpoint} holds no best model; run again with --resume, or start over with --overwrite")
    return load_tensors(path)


def intact(folder: Path) -> str | None:
    """None if the checkpoint in ``folder`` is intact, else what is wrong with it.

    Every file must exist and match the size and sha256 that ``manifest.json`` (written last) records.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return "no readable manifest.json (the checkpoint was never finished)"
    if not isinstance(manifest, dict):
        return "manifest.json is not a manifest"
    for f in (*FILES, *([BEST] if BEST in manifest else [])):
        problem = _mismatch(folder, f)
        if problem:
            return problem
    return None


def find_latest(root: Path) -> tuple[Path | None, list[dict]]:
    """The newest intact checkpoint under ``root`` (the one latest.json names first) and the damaged ones
    skipped on the way: ``(folder or None, [{"checkpoint", "reason"}, ...])``."""
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    try:
        named = root / json.loads((root / "latest.json").read_text())["name"]
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        pass
    skipped = []
    for folder in candidates:
        problem = intact(folder)
        if problem is None:
            return folder, skipped
        skipped.append({"checkpoint": folder.name, "reason": problem})
    return None, skipped


def resume_point(out_dir: Path, resume: bool, overwrite: bool, kind: str) -> tuple[Path | None, list[dict]]:
    """Decide, touching nothing, how a ``kind`` run (teacher or student) uses ``out_dir``: ``(checkpoint to resume
    from or None, damaged checkpoints skipped)``. None means a fresh start; the caller claims the folder
    (:func:`crossdistill.core.runs.claim_output_dir`) only after every other input has been validated.

    Refused with a UsageError: a path that is a file; a non-empty folder without ``resume``/``overwrite``; a
    non-empty folder that is not a ``kind`` run of this toolkit (``resume`` or ``overwrite`` alike: only a script's
    own kind of folder is ever cleared or continued); ``resume`` of a finished run (``done.json``) that has no
    checkpoint left.
    """
    from crossdistill.core.errors import UsageError
    from crossdistill.core.ownership import check_output_dir, content, folder_kind

    out_dir = Path(out_dir)
    found_kind = folder_kind(out_dir) if out_dir.is_dir() else None
    if resume and out_dir.is_dir() and content(out_dir) and found_kind != kind:
        what = "not a run of this toolkit" if found_kind is None else f"a {found_kind.replace('_', ' ')} folder, not a {kind} run"
        raise UsageError(f"{out_dir} is {what} (no checkpoint of a {kind} run, no marker), so --resume will not touch it; "
                         "choose another --output_dir")
    found, skipped = find_latest(out_dir / "checkpoints") if resume and out_dir.is_dir() else (None, [])
    if found is not None:
        return found, skipped
    if resume and (out_dir / "done.json").is_file():
        raise UsageError(f"{out_dir} already holds a finished run (done.json); nothing to resume")
    check_output_dir(out_dir, overwrite or resume, kind)
    return None, skipped


def rescale_lr(optimizer, scheduler, old_lr: float, new_lr: float) -> None:
    """Change a resumed run's learning rate from ``old_lr`` to ``new_lr`` (e.g. a supervisor halving it after a
    NaN): every parameter group and the schedule's base rates scale by the same ratio."""
    ratio = new_lr / old_lr
    for g in optimizer.param_groups:
        g["lr"] *= ratio
        g["initial_lr"] = g.get("initial_lr", g["lr"]) * ratio
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps the torch scheduler
    inner.base_lrs = [b * ratio for b in inner.base_lrs]


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore model/optimizer/scheduler/RNG from ``folder``; returns its state.json.

    Only tensors and plain data are read (``weights_only=True``). A checkpoint written for other settings
    (another model, LoRA on/off, other trainable parameters) is refused with a UsageError instead of being
    half-loaded.
    """
    try:
        load_trainable(model, load_tensors(folder / "trainable.pt"))
        optimizer.load_state_dict(load_tensors(folder / "optimizer.pt"))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UsageError(f"checkpoint {folder} does not match this model and settings ({str(exc).splitlines()[0][:160]}); "
                         "resume with the flags it was written with, or start over with --overwrite") from None
    scheduler.load_state_dict(load_tensors(folder / "scheduler.pt"))
    set_rng_state(load_tensors(folder / "rng.pt"))
    return json.loads((folder / "state.json").read_text())
