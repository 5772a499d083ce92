"""Teacher scores computed once: a SQLite cache keyed by the teacher's fingerprint and the pair's texts.

A frozen teacher scores each (query, passage) pair once; epochs, restarts and later runs with the same
teacher read the stored logit. The fingerprint hashes the teacher's weights, config, max_len and prefixes
and is part of every key, so a retrained teacher never reuses stale scores, and one cache file shared by
several teachers (``--score_cache``) keeps their scores apart.

Only a file this toolkit created is ever read, written, or set aside: a new cache is built in a temporary file and
renamed into place, holding the ``scores`` table and a ``meta`` table that names it. An existing file that is not such
a cache — a user's document, another SQLite database, a device such as ``/dev/null``, a folder — is refused with one
line and left as it is. A damaged cache in the toolkit's own cache folder (the default path) is set aside as
``<name>.corrupt-<time>`` and rebuilt; one at a path the user chose is refused, never renamed.

Why SQLite and not a dict on disk: several processes (DDP ranks, later runs) read one file while the main
process writes it, and a kill mid-write must not tear it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError

_SQLITE_MAGIC = b"SQLite format 3\x00"
_MARKER = ("tool", "crossdistill-teacher-scores")
_SCHEMA = {"scores": ["k", "logit"], "meta": ["key", "value"]}


def teacher_fingerprint(teacher_dir: str | Path) -> str:
    """sha256 over the teacher folder's weight, config, tokenizer and settings files."""
    h = hashlib.sha256()
    folder = Path(teacher_dir)
    for name in sorted(p.name for p in folder.iterdir() if p.is_file()):
        if name.endswith((".safetensors", ".bin", ".json")) and name not in ("events.jsonl", "metrics.json", "done.json",
                                                                             "training_args.json", ".done.previous.json"):
            h.update(name.encode())
            with open(folder / name, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()[:24]


def _key(fingerprint: str, query: str, passage: str) -> bytes:
    return hashlib.sha1(fingerprint.encode() + b"\x00" + query.encode() + b"\x00" + passage.encode()).digest()


class ScoreCache:
    """``get(pairs) -> (logits with NaN for misses)``, ``put(pairs, logits)``, for the teacher ``fingerprint``.

    ``owned``: the path lies in the toolkit's own cache folder (the default), so a damaged file there is ours to set
    aside and rebuild; elsewhere only a file that proves to be a cache of this toolkit is opened."""

    def __init__(self, path: str | Path, fingerprint: str, log=print, owned: bool = False):
        self.path = Path(path)
        self.fingerprint = fingerprint
        if self.path.is_dir():
            raise UsageError(f"--score_cache {self.path} is a folder; pass a file path (it is created if missing)")
        if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
            raise UsageError(f"--score_cache {self.path} is not a regular file (a device or a pipe); pass a file path "
                             "(it is created if missing)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not a database, truncated, another schema ...
            if not owned:
                raise UsageError(f"--score_cache {self.path} is not a teacher-score cache this toolkit wrote ({exc}); "
                                 "it is left as it is: pass another path, or delete it yourself") from None
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            log(f"teacher score cache {self.path} was unreadable ({exc}); moved it to {aside.name} and rebuilding")
            self._create()
            self._open()

    def _create(self) -> None:
        """A new, empty cache, built in a temporary file and renamed into place (never a half-made file at the path)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        with db:
            db.execute("CREATE TABLE scores (k BLOB PRIMARY KEY, logit REAL NOT NULL)")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("INSERT INTO meta VALUES (?, ?)", _MARKER)
        db.close()
        if self.path.exists():  # another process created it meanwhile: theirs wins
            tmp.unlink()
        else:
            os.replace(tmp, self.path)

    def _open(self) -> None:
        with open(self.path, "rb") as f:
            if f.read(16) != _SQLITE_MAGIC:
                raise sqlite3.DatabaseError("not an SQLite file")
        self.db = sqlite3.connect(self.path, timeout=60)
        try:
            tables = {name: [c[1] for c in self.db.execute(f"PRAGMA table_info({name})")]
                      for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            legacy = tables == {"scores": _SCHEMA["scores"]}  # what earlier versions created (no meta table)
            marked = tables == _SCHEMA and self.db.execute("SELECT value FROM meta WHERE key = ?",
                                                           (_MARKER[0],)).fetchone() == (_MARKER[1],)
            if not (legacy or marked):
                raise sqlite3.DatabaseError(f"an SQLite database with other tables: {', '.join(sorted(tables)) or 'none'}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("SELECT count(*) FROM scores").fetchone()
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError:
            self.db.close()
            raise

    def get(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        out = np.full(len(pairs), np.nan, dtype=np.float32)
        keys = [_key(self.fingerprint, q, p) for q, p in pairs]
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        uniq = list(where)
        for s in range(0, len(uniq), 500):
            chunk = uniq[s:s + 500]
            rows = self.db.execute(f"SELECT k, logit FROM scores WHERE k IN ({','.join('?' * len(chunk))})", chunk)
            for k, v in rows:
                out[where[k]] = v
        return out

    def put(self, pairs: list[tuple[str, str]], logits: np.ndarray) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)",
                                [(_key(self.fingerprint, q, p), float(v)) for (q, p), v in zip(pairs, logits)])

    def close(self) -> None:
        self.db.close()


def default_cache_path(fingerprint: str) -> Path:
    """Where a teacher's scores live unless ``--score_cache`` says otherwise: the toolkit's own cache folder."""
    from crossdistill.models.resolve import cache_dir

    return cache_dir() / "teacher_scores" / f"{fingerprint}.sqlite"


def cached_teacher_logits(teacher_dir: str | Path, pairs: list[tuple[str, str]], cache_path: str | Path | None,
                          batch_size: int = 64, device=None, log=print, on_progress=None,
                          fingerprint: str | None = None) -> tuple[np.ndarray, dict]:
    """Logits of ``pairs`` from the teacher at ``teacher_dir``; only pairs missing from the cache are scored.

    ``cache_path`` None: the teacher's file in the toolkit's cache folder. ``fingerprint``: the teacher's, when the
    caller has hashed it already (a run hashes its teacher once). The teacher is loaded only when something is
    missing. Returns (logits, stats).
    """
    fingerprint = fingerprint or teacher_fingerprint(teacher_dir)
    owned = cache_path is None or Path(cache_path).resolve() == default_cache_path(fingerprint).resolve()
    cache = ScoreCache(cache_path or default_cache_path(fingerprint), fingerprint, log=log, owned=owned)
    logits = cache.get(pairs)
    missing = sorted({pairs[i] for i in np.flatnonzero(np.isnan(logits))})
    unique = len(set(pairs))
    t0 = time.time()
    if missing:
        from crossdistill.models.teacher import CrossEncoderTeacher

        teacher = CrossEncoderTeacher.load(teacher_dir)
        if device is not None:
            teacher.model.to(device)
        log(f"teacher scoring {len(missing)} new pairs ({unique - len(missing)} of {unique} distinct pairs cached)")
        new = teacher.score(missing, batch_size=batch_size, activation="logit", device=device, show_progress=True,
                            on_progress=on_progress)
        cache.put(missing, new)
        fresh = dict(zip(missing, new))
        gaps = np.flatnonzero(np.isnan(logits))
        logits[gaps] = [fresh[pairs[i]] for i in gaps]  # no second read of the cache
        del teacher
    cache.close()
    return logits, {"distinct_pairs": unique, "scored_now": len(missing), "from_cache": unique - len(missing),
                    "seconds": round(time.time() - t0, 2)}
