"""A teacher's work computed once: SQLite caches of its scores (a cross-encoder's logit per pair) and of its embeddings
(a bi-encoder's vector per text), each keyed by the model's fingerprint and the texts.

A frozen teacher scores each (query, passage) pair, or encodes each text, once; epochs, restarts, the guard, the
evaluation's reranking, the bench and later runs with the same teacher read the stored value. The fingerprint hashes
the model's weights and config together with everything that changes its output (max length, prefixes, precision) and
is part of every key, so a retrained teacher never reuses stale values, and one file shared by several teachers
(``--score_cache``) keeps them apart.

Only a file this toolkit created is ever read, written, or set aside: a new cache is built in a temporary file and
renamed into place, holding its table and a ``meta`` table that names it. An existing file that is not such a cache —
a user's document, another SQLite database, a device such as ``/dev/null``, a folder — is refused with one line and
left as it is. A damaged cache in the toolkit's own cache folder (the default path) is set aside as
``<name>.corrupt-<time>`` and rebuilt; one at a path the user chose is refused, never renamed.

Why SQLite and not a dict on disk: several processes (DDP ranks, later runs) read one file while the main process
writes it, and a kill mid-write must not tear it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np

from crossdistill.core import legacy
from crossdistill.core.errors import UsageError

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SKIPPED = ("events.jsonl", "metrics.json", "done.json", "training_args.json", legacy.PREVIOUS_DONE)


def folder_fingerprint(folder: str | Path, *settings) -> str:
    """sha256 over a model folder's weight, config and tokenizer files (the run's own logs left out), then over
    ``settings`` (whatever else changes the model's output: max length, prefixes, precision), when given."""
    h = hashlib.sha256()
    folder = Path(folder)
    for name in sorted(p.name for p in folder.iterdir() if p.is_file()):
        if name.endswith((".safetensors", ".bin", ".json")) and name not in _SKIPPED:
            h.update(name.encode())
            with open(folder / name, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    for value in settings:
        h.update(b"\x00" + repr(value).encode())
    return h.hexdigest()[:24]


def teacher_fingerprint(teacher_dir: str | Path) -> str:
    """A cross-encoder teacher's fingerprint: its folder's files (its max_len and prefixes are among them)."""
    return folder_fingerprint(teacher_dir)


class SqliteCache:
    """One SQLite file of ``key -> value`` for the model ``fingerprint``: ``get(keys)`` / ``put(keys, values)``.

    ``owned``: the path lies in the toolkit's own cache folder (the default), so a damaged file there is ours to set
    aside and rebuild; elsewhere only a file that proves to be a cache of this toolkit (its marker) is opened.
    A subclass names its table, value type, marker, what it is called in messages and the flag that sets its path."""

    table, column, sql_type = "", "", ""
    marker: tuple[str, str] = ("tool", "")
    what, flag = "cache", "--cache"
    legacy_tables: tuple[dict, ...] = ()  # schemas of earlier versions, opened as they are

    def __init__(self, path: str | Path, fingerprint: str, log=print, owned: bool = False):
        self.path = Path(path)
        self.fingerprint = fingerprint
        if self.path.is_dir():
            raise UsageError(f"{self.flag} {self.path} is a folder; pass a file path (it is created if missing)")
        if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
            raise UsageError(f"{self.flag} {self.path} is not a regular file (a device or a pipe); pass a file path "
                             "(it is created if missing)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not a database, truncated, another schema ...
            if not owned:
                raise UsageError(f"{self.flag} {self.path} is not a {self.what} this toolkit wrote ({exc}); it is left as "
                                 "it is: pass another path, or delete it yourself") from None
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            log(f"{self.what} {self.path} was unreadable ({exc}); moved it to {aside.name} and rebuilding")
            self._create()
            self._open()

    @property
    def schema(self) -> dict:
        return {self.table: ["k", self.column], "meta": ["key", "value"]}

    def _create(self) -> None:
        """A new, empty cache, built in a temporary file and renamed into place (never a half-made file at the path)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        with db:
            db.execute(f"CREATE TABLE {self.table} (k BLOB PRIMARY KEY, {self.column} {self.sql_type} NOT NULL)")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("INSERT INTO meta VALUES (?, ?)", self.marker)
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
            marked = tables == self.schema and self.db.execute("SELECT value FROM meta WHERE key = ?",
                                                               (self.marker[0],)).fetchone() == (self.marker[1],)
            if not (marked or tables in self.legacy_tables):
                raise sqlite3.DatabaseError(f"an SQLite database with other tables: {', '.join(sorted(tables)) or 'none'}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"SELECT count(*) FROM {self.table}").fetchone()
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError:
            self.db.close()
            raise

    def _key(self, item) -> bytes:
        raise NotImplementedError

    def _get(self, items: list) -> tuple[dict[bytes, list[int]], dict[bytes, object]]:
        where: dict[bytes, list[int]] = {}
        for i, item in enumerate(items):
            where.setdefault(self._key(item), []).append(i)
        uniq, found = list(where), {}
        for s in range(0, len(uniq), 500):
            chunk = uniq[s:s + 500]
            found.update(self.db.execute(f"SELECT k, {self.column} FROM {self.table} WHERE k IN "
                                         f"({','.join('?' * len(chunk))})", chunk))
        return where, found

    def _put(self, items: list, values: list) -> None:
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?)",
                                [(self._key(item), v) for item, v in zip(items, values)])

    def close(self) -> None:
        self.db.close()


class ScoreCache(SqliteCache):
    """A cross-encoder's logits: ``get(pairs) -> (logits with NaN for misses)``, ``put(pairs, logits)``."""

    table, column, sql_type = "scores", "logit", "REAL"
    marker = ("tool", "crossdistill-teacher-scores")
    what, flag = "teacher-score cache", "--score_cache"
    legacy_tables = legacy.SCORE_CACHE_TABLES  # what earlier versions created (no meta table)

    def _key(self, pair) -> bytes:
        q, p = pair
        return hashlib.sha1(self.fingerprint.encode() + b"\x00" + q.encode() + b"\x00" + p.encode()).digest()

    def get(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        out = np.full(len(pairs), np.nan, dtype=np.float32)
        where, found = self._get(pairs)
        for k, v in found.items():
            out[where[k]] = v
        return out

    def put(self, pairs: list[tuple[str, str]], logits: np.ndarray) -> None:
        self._put(pairs, [float(v) for v in logits])


class EmbeddingCache(SqliteCache):
    """A bi-encoder's normalised embeddings of (already prefixed) texts: ``get(texts) -> {row: vector}`` of those
    found, ``put(texts, matrix)``."""

    table, column, sql_type = "embeddings", "vector", "BLOB"
    marker = ("tool", "crossdistill-embeddings")
    what, flag = "embedding cache", "--embedding_cache"

    def _key(self, text) -> bytes:
        return hashlib.sha1(self.fingerprint.encode() + b"\x00" + text.encode()).digest()

    def get(self, texts: list[str]) -> dict[int, np.ndarray]:
        where, found = self._get(texts)
        return {i: np.frombuffer(v, dtype=np.float32) for k, v in found.items() for i in where[k]}

    def put(self, texts: list[str], vectors: np.ndarray) -> None:
        self._put(texts, [np.ascontiguousarray(v, dtype=np.float32).tobytes() for v in vectors])


def default_cache_path(fingerprint: str, kind: str = "teacher_scores") -> Path:
    """Where a model's cached scores (``teacher_scores``) or embeddings (``embeddings``) live unless a flag says
    otherwise: the toolkit's own cache folder."""
    from crossdistill.models.resolve import cache_dir

    return cache_dir() / kind / f"{fingerprint}.sqlite"


def open_cache(cls, path: str | Path | None, fingerprint: str, log=print):
    """``cls`` (:class:`ScoreCache` or :class:`EmbeddingCache`) at ``path``, or at the model's own file in the
    toolkit's cache folder (owned: a damaged file there is set aside and rebuilt)."""
    kind = "teacher_scores" if cls is ScoreCache else "embeddings"
    default = default_cache_path(fingerprint, kind)
    owned = path is None or Path(path).resolve() == default.resolve()
    return cls(path or default, fingerprint, log=log, owned=owned)
