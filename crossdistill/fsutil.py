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


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; on success it is made world-readable and
    renamed over ``path`` (readers never see half a file), on any error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read 1 MiB at a time (the one digest of files: checkpoints, exports, data versions, scores)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (:func:`atomic_file`), flushed to disk before the rename."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


# files the monitor keeps in a run's folder; they never make a folder "non-empty" and survive --overwrite
MONITOR_FILES = frozenset({"monitor.lock", "monitor.jsonl", "monitor_child.json", "train.log"})
# written into every output folder this toolkit creates, and kept: which script wrote it, for what kind of output
OWNER_FILE = ".crossdistill.json"
KINDS = ("prepared_data", "teacher", "student", "evaluation")
MARKER = ".crossdistill-run"  # what earlier versions wrote while a run trained (its "stage" = the kind)
RUN_LOCK = ".run.lock"  # held (flock) by the training process writing the folder
_HELD_LOCKS: list = []
# a training run's own state, set aside (not deleted) when a fresh run takes the folder over
RUN_STATE = frozenset({"events.jsonl", "checkpoints", ".staging"})
PREVIOUS = ".previous"  # an overwritten run's done.json, events and checkpoints, until the new run publishes
PREVIOUS_DONE = ".done.previous.json"  # what earlier versions set aside instead
# what each script writes into its folder, for folders written before OWNER_FILE existed
PREPARED_FILES = frozenset({"train.csv", "val.csv", "test.csv", "prepare_config.json", "corpus.jsonl"})
EVALUATION_FILES = frozenset({"bi_encoder_evaluation_results.json", "bi_encoder_evaluation_analysis.png",
                              "bi_encoder_retrieval_comparison.png", "report.md"})


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
    for f in (path / MARKER, path / "done.json"):
        info = _json(f)
        if isinstance(info, dict) and info.get("stage") in ("teacher", "student"):
            return info["stage"]
    if (path / "checkpoints" / "latest.json").is_file():  # a run of an earlier version: its start event names it
        for event in read_events(path / "events.jsonl")[:50]:
            if isinstance(event, dict) and event.get("event") == "start" and event.get("stage") in ("teacher", "student"):
                return event["stage"]
    names = {p.name for p in path.iterdir()} - MONITOR_FILES - {RUN_LOCK}
    prepared = _json(path / "prepare_config.json")
    if isinstance(prepared, dict) and "source_type" in prepared and names <= PREPARED_FILES:
        return "prepared_data"
    results = _json(path / "bi_encoder_evaluation_results.json")
    if isinstance(results, dict) and "retrieval" in results and names <= EVALUATION_FILES:
        return "evaluation"
    return None


def is_ours(path: str | os.PathLike, kind: str) -> bool:
    """True if ``path`` is a ``kind`` folder this toolkit wrote (:func:`folder_kind`)."""
    return folder_kind(path) == kind


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


# the names each kind writes, for folders of earlier versions whose owner file lists no files
_LEGACY_FILES = {"prepared_data": PREPARED_FILES, "evaluation": EVALUATION_FILES,
                 "teacher": frozenset({"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "vocab.txt", "teacher_config.json", "lora_config.json",
                                       "adapter", "training_args.json", "metrics.json", "README.md", "done.json",
                                       "sentencepiece.bpe.model"}),
                 "student": frozenset({"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "vocab.txt", "modules.json", "sentence_bert_config.json",
                                       "config_sentence_transformers.json", "1_Pooling", "2_Normalize", "onnx",
                                       "export.json", "training_args.json", "metrics.json", "README.md", "done.json",
                                       "distillation_config.json", "sentencepiece.bpe.model", "adapter"})}


def owned_files(folder: Path) -> set[str]:
    """The top-level names of ``folder`` this toolkit wrote: its owner file's manifest, or for a folder of an earlier
    version (an owner file without one, or none) the names its kind writes (:data:`_LEGACY_FILES`). The run's own state
    (events, checkpoints, staging, the previous result) and the monitor's files are always the toolkit's."""
    folder = Path(folder)
    owner = _json(folder / OWNER_FILE)
    listed = owner.get("files") if isinstance(owner, dict) else None
    if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
        names = set(listed)
    else:
        names = set(_LEGACY_FILES.get(folder_kind(folder) or "", ()))
    return names | set(RUN_STATE) | {PREVIOUS, PREVIOUS_DONE, MARKER, RUN_LOCK, OWNER_FILE, "runs", "done.json"}


def users_files(folder: Path) -> list[Path]:
    """What the user keeps in ``folder``: every entry this toolkit did not write (:func:`owned_files`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    mine = owned_files(folder) | MONITOR_FILES
    return sorted(p for p in folder.iterdir() if p.name not in mine and not p.name.startswith(".tmp-"))


def content(path: Path) -> list[Path]:
    """What a folder holds besides the monitor's files, the markers and the run lock."""
    return [p for p in path.iterdir() if p.name not in MONITOR_FILES and p.name not in (MARKER, RUN_LOCK, OWNER_FILE)]


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
    claim = _Claim(Path(path), stage, fresh and main)
    wait()
    try:
        yield claim
    except BaseException:
        if not claim.committed:
            release_output_dir(claim.path, claim.created)
        raise


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
