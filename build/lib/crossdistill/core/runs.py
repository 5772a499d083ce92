"""Run folders: one run per folder (a lock), an output claimed only when ours (the previous result set aside until
the new one publishes), staging, and publishing with ``done.json`` last."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from crossdistill.core.errors import UsageError
from crossdistill.core.files import write_json
from crossdistill.core.legacy import MARKER, PREVIOUS_DONE
from crossdistill.core.ownership import (
    MONITOR_FILES,
    OWNER_FILE,
    PREVIOUS,
    RUN_LOCK,
    RUN_STATE,
    folder_kind,
    mark_owner,
    owned_files,
    users_files,
)

_HELD_LOCKS: list = []


def take_lock(lock_file: Path, busy: Callable[[str], str]):
    """Hold an exclusive, non-blocking flock on ``lock_file`` (created if missing; it then holds our pid) and return the
    open file (closing it releases the lock); if another process holds it: a UsageError with ``busy(its pid)``."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_file, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "pid unknown"
        fh.close()
        raise UsageError(busy(holder)) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def lock_run(path: Path) -> None:
    """Hold an exclusive lock on ``path`` until the run ends (:func:`releases_run_lock`) or the process dies (two runs
    writing one folder would destroy each other's checkpoints); a second run is refused with the holder's pid."""
    fh = take_lock(path / RUN_LOCK, lambda holder: f"another run ({holder}) is writing to {path}; wait for it to end or "
                                                   "choose another --output_dir")
    _HELD_LOCKS.append((fh, path / RUN_LOCK))


def releases_run_lock(train: Callable) -> Callable:
    """Decorate a stage's training function: the run lock it takes is released when it returns or raises, so a
    later run in the same Python process (a notebook, a resume after a refused flag) may take the folder."""
    @functools.wraps(train)
    def run(*args, **kwargs):
        held_before = len(_HELD_LOCKS)  # only the locks this run took are released
        try:
            return train(*args, **kwargs)
        finally:
            while len(_HELD_LOCKS) > held_before:
                fh, lock_file = _HELD_LOCKS.pop()
                lock_file.unlink(missing_ok=True)  # a refused run leaves the folder as it found it
                fh.close()  # closing the file releases its flock
    return run


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def claim_output_dir(path: Path, stage: str) -> bool:
    """Take ``path`` over for a fresh ``stage`` run, once every input is validated (:func:`check_output_dir` already
    refused folders that are not a ``stage`` folder of ours): create it, write the owner file, and set the previous
    run's ``done.json``, events and checkpoints aside in ``.previous/`` (a new run is not done; nothing is deleted:
    :func:`release_output_dir` puts them back if the run fails before it trains, :func:`publish` drops them once the
    new result is in place). A previous run's published files stay until :func:`publish` replaces them. If
    ``.previous/`` already exists, an earlier claim set the finished result aside and what is in the folder now is that
    failed new run's state, which is cleared. Returns True if the folder was created now."""
    created = not path.exists() or {p.name for p in path.iterdir()} <= {RUN_LOCK}
    path.mkdir(parents=True, exist_ok=True)
    previous = path / PREVIOUS
    if previous.is_dir():
        for name in RUN_STATE:
            _remove(path / name)
    else:
        staging = previous.with_name(PREVIOUS + ".tmp")
        _remove(staging)
        staging.mkdir()
        for name in (*sorted(RUN_STATE - {".staging"}), "done.json", PREVIOUS_DONE):
            if (path / name).exists() or (path / name).is_symlink():
                os.replace(path / name, staging / name)
        os.replace(staging, previous)
        _remove(path / ".staging")
    mark_owner(path, stage)
    return created


def release_output_dir(path: Path, created: bool) -> None:
    """Undo :func:`claim_output_dir` for a run that failed before it trained (e.g. refused by the teacher guard):
    remove what it wrote, give an overwritten result its ``done.json``, events and checkpoints back exactly as they
    were, and remove the folder if the claim created it (the monitor's own files aside)."""
    for name in RUN_STATE:
        _remove(path / name)
    previous = path / PREVIOUS
    if previous.is_dir():
        for item in previous.iterdir():
            os.replace(item, path / (item.name if item.name != PREVIOUS_DONE else "done.json"))
        previous.rmdir()
    if (path / PREVIOUS_DONE).is_file():
        os.replace(path / PREVIOUS_DONE, path / "done.json")
    if created:
        _remove(path / OWNER_FILE)
        _remove(path / MARKER)
        if {p.name for p in path.iterdir()} <= {RUN_LOCK}:
            shutil.rmtree(path)


class _Claim:
    def __init__(self, path: Path, stage: str, active: bool):
        self.path, self.active = path, active
        self.created = claim_output_dir(path, stage) if active else False
        self.committed = not active

    def commit(self) -> None:
        """The run is accepted: from here on a failure leaves a run to resume, not the previous result."""
        self.committed = True


@contextlib.contextmanager
def claimed_output(path: Path, stage: str, fresh: bool, main: bool = True, wait: Callable[[], None] = lambda: None):
    """Claim ``path`` for a fresh ``stage`` run (main process only; ``wait`` then lets the others through) for the
    body, which calls ``claim.commit()`` once the run is accepted. Any failure before that — a refused teacher, a bad
    input found late, an interrupt — releases the folder: the previous result comes back exactly as it was
    (:func:`release_output_dir`). A resumed run (``fresh`` False) claims nothing."""
    from crossdistill.core.events import clear_current

    claim = _Claim(Path(path), stage, fresh and main)
    wait()
    try:
        yield claim
    except BaseException:
        if not claim.committed:
            release_output_dir(claim.path, claim.created)
        raise
    finally:
        clear_current()  # the run's progress events end with it (core.events.report_progress)


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh ``<out_dir>/.staging`` to write a result into before :func:`publish`. If writing fails (disk full,
    permissions) the half-written folder is removed and the error becomes one clear message: the run's
    checkpoints are untouched, so ``--resume`` publishes once there is room."""
    staging = out_dir / ".staging"
    _remove(staging)  # a leftover folder, or a link planted in its place (removed, never followed)
    staging.mkdir(parents=True)
    try:
        yield staging
    except (OSError, RuntimeError) as exc:  # safetensors reports a full disk as a RuntimeError subclass
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(f"could not write the result into {out_dir} ({str(exc).splitlines()[0][:200]}); free disk space "
                         "or fix permissions, then run again with --resume (the last checkpoint is kept)") from None


def publish(staging: Path, out_dir: Path, done: dict) -> None:
    """Move everything from ``staging`` into ``out_dir`` (replacing same-named entries), remove what a previous
    run published and this one did not, then write ``done.json`` last.

    ``done.json`` is the only completion marker: a crash before it leaves a run that is not done.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    new = {item.name for item in staging.iterdir()}
    owned = owned_files(out_dir)
    mine = {p.name for p in users_files(out_dir)} & new
    if mine:  # a file of the user's has the name of one of this run's outputs: refused before anything moves
        raise UsageError(f"{out_dir} holds {', '.join(sorted(mine))}, which this toolkit did not write, under the name of "
                         "one of its outputs; move it away and run again with --resume")
    kind = folder_kind(out_dir)
    for item in staging.iterdir():
        target = out_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
    for old in out_dir.iterdir():  # stale files of an overwritten run (e.g. its adapter/ when this one has none); the
        # user's files (not in the manifest) stay, whenever they were added
        if old.name in owned and old.name not in new and old.name not in RUN_STATE and old.name not in MONITOR_FILES and \
                old.name not in (MARKER, RUN_LOCK, OWNER_FILE, PREVIOUS, "runs"):  # runs/: TensorBoard curves
            _remove(old)
    present = {p.name for p in out_dir.iterdir()}
    if kind:
        mark_owner(out_dir, kind, new | {"done.json", "runs"} | (set(RUN_STATE) & present))
    write_json(out_dir / "done.json", done)
    for name in (MARKER, RUN_LOCK, PREVIOUS_DONE):
        _remove(out_dir / name)
    _remove(out_dir / PREVIOUS)  # the overwritten result is replaced now
