"""Which files this toolkit wrote: each output folder's manifest (``.crossdistill.json``), its kind, the user's
files beside ours (never replaced or deleted), inputs that overlap an output, and folders replaced atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from crossdistill.core import legacy
from crossdistill.core.errors import UsageError
from crossdistill.core.events import read_events
from crossdistill.core.files import write_json

# files the monitor keeps in a run's folder; they never make a folder "non-empty" and survive --overwrite
MONITOR_FILES = frozenset({"monitor.lock", "monitor.jsonl", "monitor_child.json", "train.log"})
# written into every output folder this toolkit creates, and kept: which script wrote it, for what kind of output
OWNER_FILE = ".crossdistill.json"
KINDS = ("prepared_data", "teacher", "student", "evaluation")
RUN_LOCK = ".run.lock"  # held (flock) by the training process writing the folder
# a training run's own state, set aside (not deleted) when a fresh run takes the folder over
RUN_STATE = frozenset({"events.jsonl", "checkpoints", ".staging"})
PREVIOUS = ".previous"  # an overwritten run's done.json, events and checkpoints, until the new run publishes
PREPARED_FILES, EVALUATION_FILES = legacy.FILES_BY_KIND["prepared_data"], legacy.FILES_BY_KIND["evaluation"]


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def folder_kind(path: str | os.PathLike) -> str | None:
    """What this toolkit wrote into ``path`` — ``prepared_data``, ``teacher``, ``student`` or ``evaluation`` — or None
    when nothing proves it wrote the folder. The one rule of ownership: every script asks it before it replaces or
    resumes anything, and a folder is cleared only by the script of its own kind.

    Proof, in order: the owner file every output folder now holds (:data:`OWNER_FILE`, kept for good); for folders of
    earlier versions, the training marker or ``done.json`` naming the stage, or — prepared data and evaluations —
    ``prepare_config.json`` / ``bi_encoder_evaluation_results.json`` with *nothing but* the files that script writes
    (a ``report.md`` beside a thesis proves nothing)."""
    path = Path(path)
    if not path.is_dir():
        return None
    owner = _json(path / OWNER_FILE)
    if isinstance(owner, dict) and owner.get("tool") == "crossdistill" and owner.get("kind") in KINDS:
        return owner["kind"]
    stage = legacy.run_stage(path, _json, read_events)  # a training folder of an earlier version
    if stage:
        return stage
    names = {p.name for p in path.iterdir()} - MONITOR_FILES - {RUN_LOCK}
    prepared = _json(path / "prepare_config.json")
    if isinstance(prepared, dict) and "source_type" in prepared and names <= PREPARED_FILES:
        return "prepared_data"
    results = _json(path / "bi_encoder_evaluation_results.json")
    if isinstance(results, dict) and "retrieval" in results and names <= EVALUATION_FILES:
        return "evaluation"
    return None


def mark_owner(folder: Path, kind: str, files=None) -> None:
    """Write the owner file: ``folder`` is a ``kind`` output of this toolkit, and ``files`` (its manifest: the top-level
    names this toolkit wrote there) are the only entries it will ever replace or remove. ``files`` None: every entry
    the folder holds now (a folder the toolkit has just built itself), or, for a folder that already has a manifest,
    that manifest kept as it is."""
    folder = Path(folder)
    if files is None:
        present = {p.name for p in folder.iterdir() if p.name not in (OWNER_FILE, RUN_LOCK)}
        files = (owned_files(folder) & present) if folder_kind(folder) else present
        owner = _json(folder / OWNER_FILE)
        if isinstance(owner, dict) and isinstance(owner.get("files"), list):
            files = set(owner["files"])
    write_json(folder / OWNER_FILE, {"tool": "crossdistill", "kind": kind, "files": sorted(set(files))})


def owned_files(folder: Path) -> set[str]:
    """The top-level names of ``folder`` this toolkit wrote: its owner file's manifest, or for a folder of an earlier
    version (an owner file without one, or none) the names its kind writes (:data:`crossdistill.core.legacy.FILES_BY_KIND`). The run's own state
    (events, checkpoints, staging, the previous result) and the monitor's files are always the toolkit's."""
    folder = Path(folder)
    owner = _json(folder / OWNER_FILE)
    listed = owner.get("files") if isinstance(owner, dict) else None
    if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
        names = set(listed)
    else:
        names = set(legacy.FILES_BY_KIND.get(folder_kind(folder) or "", ()))
    return names | set(RUN_STATE) | {PREVIOUS, legacy.PREVIOUS_DONE, legacy.MARKER, RUN_LOCK, OWNER_FILE, "runs", "done.json"}


def users_files(folder: Path) -> list[Path]:
    """What the user keeps in ``folder``: every entry this toolkit did not write (:func:`owned_files`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    mine = owned_files(folder) | MONITOR_FILES
    return sorted(p for p in folder.iterdir() if p.name not in mine and not p.name.startswith(".tmp-"))


def content(path: Path) -> list[Path]:
    """What a folder holds besides the monitor's files, the markers and the run lock."""
    return [p for p in path.iterdir() if p.name not in MONITOR_FILES and p.name not in (legacy.MARKER, RUN_LOCK, OWNER_FILE)]


def refuse_overlap(output: str | os.PathLike, flag: str, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output folder that is, holds or lies inside one of the run's inputs (``{flag: path}``): a student is
    never published over its own teacher, an evaluation never replaces the model it evaluates."""
    out = Path(output).expanduser().resolve()
    for name, value in inputs.items():
        if not value or not Path(value).expanduser().exists():
            continue
        src = Path(value).expanduser().resolve()
        if out == src or src in out.parents or out in src.parents:
            where = "is" if out == src else ("lies inside" if src in out.parents else "holds")
            raise UsageError(f"{flag} {output} {where} {name} {value}; writing there would replace an input of this "
                             f"run: choose another {flag}")


def check_output_dir(path: str | os.PathLike, overwrite: bool, kind: str) -> Path:
    """Check that ``path`` may receive a new ``kind`` result; deletes nothing.

    A file, a non-empty folder without ``overwrite``, and — with ``overwrite`` — a non-empty folder that is not a
    ``kind`` folder this toolkit wrote (:func:`folder_kind`: a user's files, or another script's output) are refused.
    The caller replaces the old result only when the new one is complete.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UsageError(f"output path {path} is a dangling symbolic link; remove it or choose another path")
    if path.exists() and not path.is_dir():
        raise UsageError(f"output path {path} exists and is a file; choose a folder path")
    for ancestor in path.parents:
        if ancestor.exists() and not ancestor.is_dir():
            raise UsageError(f"output path {path} lies under {ancestor}, which is a file; choose a folder path")
    if path.is_dir() and content(path):
        if not overwrite:
            raise UsageError(f"output folder {path} already exists and is not empty; pass --overwrite or choose another --output_dir")
        found = folder_kind(path)
        if found is None:
            raise UsageError(f"output folder {path} holds files this toolkit did not write, so --overwrite will not clear it; "
                             "choose another --output_dir (or empty the folder yourself)")
        if found != kind:
            raise UsageError(f"output folder {path} holds a {found.replace('_', ' ')} folder written by this toolkit, not "
                             f"a {kind.replace('_', ' ')} one, so --overwrite will not replace it; choose another output folder")
    parent = path.parent if not path.exists() else path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into {parent} (permission denied); choose an output path you can write to")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces what this toolkit wrote in ``path`` in one rename.

    The user's files in an existing ``path`` (:func:`users_files`: whatever its manifest does not name) are moved into
    the new folder just before the rename, so they stay; one that has the name of a new output is refused first. On
    any exception the temporary folder is removed and ``path`` is left as it was (the user's files back in place).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(tmp, 0o755)
    carried: list[str] = []
    try:
        yield tmp
        if path.exists():
            keep = users_files(path)
            clash = sorted(p.name for p in keep if (tmp / p.name).exists() or (tmp / p.name).is_symlink())
            if clash:
                raise UsageError(f"{path} holds {', '.join(clash)}, which this toolkit did not write, under the name of "
                                 "one of its outputs; move it away and run again")
            for p in keep:
                os.replace(p, tmp / p.name)
                carried.append(p.name)
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(path, old)
            os.replace(tmp, path)
            carried = []
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        for name in carried:  # the user's files go back where they were
            with contextlib.suppress(OSError):
                os.replace(tmp / name, path / name)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, a read-only folder: one line, nothing left behind
            raise UsageError(f"could not write {path} ({exc.strerror or str(exc).splitlines()[0][:160]}); free disk "
                             "space or fix permissions and run again (nothing was changed)") from None
        raise
