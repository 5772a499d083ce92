"""BM25 as a teacher kind: the lexical source of the fusion (``--teacher_fusion bm25=W``), bm25s over a passage
collection whose document frequencies give the IDF (the version's corpus when it has one)."""

from __future__ import annotations

import hashlib

import numpy as np

from crossdistill.teachers.kinds import TeacherKind


class BM25Kind(TeacherKind):
    kind = "bm25"

    def __init__(self, pool: list[str] | None = None):
        self.name, self.pool = "bm25", list(dict.fromkeys(pool or []))
        self.fingerprint = "bm25-" + hashlib.sha256("\x00".join(self.pool).encode()).hexdigest()[:16]

    def score(self, pairs, *, batch_size=256, device=None, log=print, on_progress=None):
        """BM25 of each (query, passage) over an index of the pool and every passage of ``pairs`` (added when
        missing); each distinct query is scored once against the whole index, ``batch_size`` queries at a time."""
        from crossdistill.data.mining import BM25Miner

        pool = list(dict.fromkeys([*self.pool, *(p for _, p in pairs)]))
        where = {p: i for i, p in enumerate(pool)}
        queries = list(dict.fromkeys(q for q, _ in pairs))
        row = {q: i for i, q in enumerate(queries)}
        miner, out = BM25Miner(pool), np.empty(len(pairs), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            by_query.setdefault(q, []).append(i)
        for s in range(0, len(queries), batch_size):  # (batch, pool) at a time: bounded memory
            scores = miner.scores(queries[s:s + batch_size])
            for q in queries[s:s + batch_size]:
                idx = by_query[q]
                out[idx] = scores[row[q] - s, [where[pairs[i][1]] for i in idx]]
        return out, {"distinct_pairs": len(set(pairs)), "pool": len(pool)}
