"""Files and folders: atomic writes, output folders that are never half-written, the JSONL event log."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UsageError


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# files the monitor keeps in a run's folder; they never make a folder "non-empty" and survive --overwrite
MONITOR_FILES = frozenset({"monitor.lock", "monitor.jsonl", "monitor_child.json", "train.log"})
# written into every output folder this toolkit creates or takes over: the proof that it may clear it
MARKER = ".crossdistill-run"
RUN_LOCK = ".run.lock"  # held (flock) by the training process writing the folder
_HELD_LOCKS: list = []
# a training run's own state (cleared when a fresh run takes the folder over)
RUN_STATE = frozenset({"events.jsonl", "checkpoints", ".staging"})
PREVIOUS_DONE = ".done.previous.json"  # an overwritten run's done.json, until the new run publishes


def is_ours(path: Path, signatures: tuple[str, ...] = ()) -> bool:
    """True if ``path`` was provably written by this toolkit: it holds the marker, a ``done.json`` naming a
    stage, a checkpoint index, or one of ``signatures`` (files only this toolkit writes, e.g. prepare_config.json)."""
    if (path / MARKER).is_file() or (path / "checkpoints" / "latest.json").is_file():
        return True
    if any((path / s).is_file() for s in signatures):
        return True
    try:
        return "stage" in json.loads((path / "done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def content(path: Path) -> list[Path]:
    """What a folder holds besides the monitor's files, the marker and the run lock."""
    return [p for p in path.iterdir() if p.name not in MONITOR_FILES and p.name not in (MARKER, RUN_LOCK)]


def lock_run(path: Path) -> None:
    """Hold an exclusive lock on ``path`` until the run ends (:func:`releases_run_lock`) or the process dies (two runs
    writing one folder would destroy each other's checkpoints); a second run is refused with the holder's pid."""
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / RUN_LOCK, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown pid"
        fh.close()
        raise UsageError(f"another run ({holder}) is writing to {path}; wait for it to end or choose another --output_dir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    _HELD_LOCKS.append(fh)


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
                _HELD_LOCKS.pop().close()  # closing the file releases its flock
    return run


def check_output_dir(path: str | os.PathLike, overwrite: bool, signatures: tuple[str, ...] = ()) -> Path:
    """Check that ``path`` may receive a new result; deletes nothing.

    A file, a non-empty folder without ``overwrite``, and — with ``overwrite`` — a non-empty folder that this toolkit
    did not write (:func:`is_ours`) are refused. The caller replaces the old result only when the new one is complete.
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
        if not is_ours(path, signatures):
            raise UsageError(f"output folder {path} holds files this toolkit did not write, so --overwrite will not clear it; "
                             "choose another --output_dir (or empty the folder yourself)")
    parent = path.parent if not path.exists() else path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into {parent} (permission denied); choose an output path you can write to")
    return path


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def claim_output_dir(path: Path, stage: str) -> bool:
    """Take ``path`` over for a fresh run, once the inputs are validated (:func:`check_output_dir` already refused
    folders that are not ours): create it, clear the previous run's state (events, checkpoints), set its
    ``done.json`` aside (a new run is not done; :func:`release_output_dir` puts it back if the run is refused
    before it trains) and write the marker. A previous run's published files stay until :func:`publish` replaces
    them. Returns True if the folder was created now."""
    created = not path.exists() or {p.name for p in path.iterdir()} <= {RUN_LOCK}
    path.mkdir(parents=True, exist_ok=True)
    for name in RUN_STATE:
        _remove(path / name)
    if (path / "done.json").is_file():
        os.replace(path / "done.json", path / PREVIOUS_DONE)
    write_json(path / MARKER, {"tool": "crossdistill", "stage": stage, "claimed": round(time.time(), 3)})
    return created


def release_output_dir(path: Path, created: bool) -> None:
    """Undo :func:`claim_output_dir` for a run refused before it trained (e.g. by the teacher guard): remove what
    it wrote, give an overwritten result its ``done.json`` back, and remove the folder if the claim created it
    (the monitor's own files aside)."""
    for name in RUN_STATE:
        _remove(path / name)
    if (path / PREVIOUS_DONE).is_file():
        os.replace(path / PREVIOUS_DONE, path / "done.json")
    if created:
        _remove(path / MARKER)
        if {p.name for p in path.iterdir()} <= {RUN_LOCK}:
            shutil.rmtree(path)


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh ``<out_dir>/.staging`` to write a result into before :func:`publish`. If writing fails (disk full,
    permissions) the half-written folder is removed and the error becomes one clear message: the run's
    checkpoints are untouched, so ``--resume`` publishes once there is room."""
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
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
    for item in staging.iterdir():
        target = out_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
    for old in out_dir.iterdir():  # stale files of an overwritten run (e.g. its adapter/ when this one has none)
        if old.name not in new and old.name not in RUN_STATE and old.name not in MONITOR_FILES and \
                old.name not in (MARKER, RUN_LOCK, "runs"):  # runs/: TensorBoard curves of --report_to
            _remove(old)
    write_json(out_dir / "done.json", done)
    for name in (MARKER, RUN_LOCK):  # done.json (naming the stage) is the proof of ownership from now on
        (out_dir / name).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    On any exception the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class EventLog:
    """Append-only JSONL log of training events, read by the monitor.

    Each line: ``{"event": ..., "time": unix seconds, ...fields}``; lines are flushed at once.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")


def read_events(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL event log, skipping a torn last line."""
    out = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out
