"""Teacher scores computed once: a SQLite cache keyed by the teacher's fingerprint and the pair's texts.

A frozen teacher scores each (query, passage) pair once; epochs, restarts and later runs with the same
teacher read the stored logit. The fingerprint hashes the teacher's weights, config, max_len and prefixes
and is part of every key, so a retrained teacher never reuses stale scores, and one cache file shared by
several teachers (``--score_cache``) keeps their scores apart. A cache that SQLite cannot read (garbage, a
truncated file) is set aside as ``<name>.corrupt-<time>`` and rebuilt; a path that is a folder is refused.

Why SQLite and not a dict on disk: several processes (DDP ranks, later runs) read one file while the main
process writes it, and a kill mid-write must not tear it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import numpy as np


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
    """``get(pairs) -> (logits with NaN for misses)``, ``put(pairs, logits)``, for the teacher ``fingerprint``."""

    def __init__(self, path: str | Path, fingerprint: str, log=print):
        from .errors import UsageError

        self.path = Path(path)
        self.fingerprint = fingerprint
        if self.path.is_dir():
            raise UsageError(f"--score_cache {self.path} is a folder; pass a file path (it is created if missing)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # not a database, truncated, ...: set it aside and start over
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            log(f"teacher score cache {self.path} was unreadable ({exc}); moved it to {aside.name} and rebuilding")
            self._open()

    def _open(self) -> None:
        self.db = sqlite3.connect(self.path, timeout=60)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS scores (k BLOB PRIMARY KEY, logit REAL NOT NULL)")
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


def cached_teacher_logits(teacher_dir: str | Path, pairs: list[tuple[str, str]], cache_path: str | Path,
                          batch_size: int = 64, device=None, log=print, on_progress=None) -> tuple[np.ndarray, dict]:
    """Logits of ``pairs`` from the teacher at ``teacher_dir``; only pairs missing from the cache are scored.

    The teacher is loaded only when something is missing. Returns (logits, stats).
    """
    cache = ScoreCache(cache_path, teacher_fingerprint(teacher_dir), log=log)
    logits = cache.get(pairs)
    missing = sorted({pairs[i] for i in np.flatnonzero(np.isnan(logits))})
    unique = len(set(pairs))
    t0 = time.time()
    if missing:
        from .teacher import CrossEncoderTeacher

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
