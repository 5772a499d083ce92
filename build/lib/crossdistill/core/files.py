"""Files written whole or not at all: atomic files and JSON, content digests."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

DISK_ERRORS = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (the disk quota is used up)",
               errno.EROFS: "write to a folder that is not read-only", errno.EACCES: "fix the folder's permissions",
               errno.EPERM: "fix the folder's permissions", errno.ENAMETOOLONG: "choose shorter names"}


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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:  # a full disk, a read-only folder: one line
            from crossdistill.core.errors import UsageError

            raise UsageError(f"could not write {path} ({exc.strerror}); {DISK_ERRORS[exc.errno]} and run again "
                             f"(the file was not changed)") from None
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


def read_json_object(path: str | os.PathLike, fix: str, fields: dict[str, type | tuple] | None = None) -> dict:
    """A JSON object read from ``path``, or a UsageError naming the file and ``fix`` (what to do about it) when it is
    not valid JSON, not an object, or one of ``fields`` (name -> expected type) present with another type: damaged
    files a model folder carries (``config_sentence_transformers.json``, ``teacher_config.json`` with ``max_len:
    "abc"``) are refused in one line, not met later as a traceback."""
    from crossdistill.core.errors import UsageError

    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not valid JSON ({str(exc).splitlines()[0][:120]}); {fix}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds a JSON {type(value).__name__}, not an object; {fix}")
    for name, kind in (fields or {}).items():
        v = value.get(name)
        bad_int = kind is int and (isinstance(v, bool) or (isinstance(v, int) and v <= 0))
        if v is not None and (not isinstance(v, kind) or bad_int):
            want = {int: "a positive whole number", str: "a string", dict: "an object"}.get(kind, str(kind))
            raise UsageError(f"{path}: {name} is {v!r}, not {want}; {fix}")
    return value
