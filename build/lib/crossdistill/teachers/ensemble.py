"""The run's teachers as one object: :class:`Teachers` loads each member once and scores candidate lists through its
cache; the student's soft labels, the guard, ``teacher_scores.py``, the evaluation's and the bench's reranking all ask
it. Its members are :mod:`~crossdistill.teachers.kinds` (cross-encoders and bi-encoders, mixed as the user names them).

**Several teachers** (``--teacher_path A --teacher_path B``, weights ``--teacher_weights 2,1``): each teacher's logits
over a query's candidates are standardised per query (z-scores, so teachers on different scales add up), averaged with
the weights, and put back on the teachers' own scale (the weighted mean of their per-query means and standard
deviations), so one teacher, or several identical ones, give exactly that teacher's logits and the temperature of the
soft labels keeps its meaning::

    combined = Σ w̃_i m_i + (Σ w̃_i s_i) · Σ w̃_i (t_i - m_i) / s_i,     w̃ = w / Σ w

(Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation",
average an ensemble of cross-encoders the same way, without the standardisation.)
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.teachers.kinds import TeacherKind


def split_paths(value: str | None) -> list[str]:
    """``--teacher_path`` given once, several times or as a comma list: the teachers, in order."""
    return [p.strip() for p in str(value or "").split(",") if p.strip()]


def parse_weights(spec: str | None, n: int) -> list[float]:
    """``--teacher_weights "2,1"`` for ``n`` teachers (default: equal)."""
    if spec is None or not str(spec).strip():
        return [1.0] * n
    if n == 1:
        raise UsageError(f"--teacher_weights {spec} with one teacher changes nothing (weights set several teachers against "
                         "each other); leave it out, or weigh the teacher against the labels with --soft_weight")
    parts = [p.strip() for p in str(spec).split(",")]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"--teacher_weights takes one number per teacher, comma-separated (e.g. 2,1); got {spec!r}") from None
    if len(weights) != n:
        raise UsageError(f"--teacher_weights gives {len(weights)} weights for {n} teacher(s); give one per --teacher_path")
    if any(not math.isfinite(w) or w < 0 or w > 1e6 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"--teacher_weights must be finite, between 0 and 1e6, and not all 0; got {spec!r}")
    return weights


def combine(per_teacher: list[list[np.ndarray]], weights) -> list[np.ndarray]:
    """Per list, the teachers' logits standardised, averaged with ``weights`` and put back on their mean scale (see the
    module docstring). One teacher: its logits as they are."""
    if len(per_teacher) == 1:
        return [np.asarray(t, dtype=np.float32) for t in per_teacher[0]]
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    out = []
    for lists in zip(*per_teacher):
        x = np.stack([np.asarray(t, dtype=np.float64) for t in lists])      # (teachers, K)
        mean, sd = x.mean(axis=1), x.std(axis=1)
        z = np.where(sd[:, None] > 1e-12, (x - mean[:, None]) / np.where(sd > 1e-12, sd, 1.0)[:, None], 0.0)
        out.append((w @ mean + (w @ sd) * (w @ z)).astype(np.float32))
    return out


class Teachers:
    """The run's teachers: their kinds (what the user named, in order), their weights, one fingerprint."""

    def __init__(self, members: list[TeacherKind], weights: list[float]):
        self.members, self.weights = tuple(members), tuple(weights)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def paths(self) -> list[str]:
        """The members' local folders (inputs that an output folder must never overlap)."""
        return [m.path for m in self.members if m.path]

    @property
    def fingerprint(self) -> str:
        """One teacher's own fingerprint; several: a hash of theirs and their weights."""
        if len(self.members) == 1:
            return self.members[0].fingerprint
        return hashlib.sha256(json.dumps([[m.fingerprint for m in self.members], self.weights]).encode()).hexdigest()[:24]

    @property
    def dense(self) -> bool:
        """Every member is a bi-encoder: any (query, passage) pair costs a dot product (:meth:`matrix`)."""
        return all(hasattr(m, "matrix") for m in self.members)

    def describe(self) -> str:
        several = len(self.members) > 1
        return " + ".join(m.describe() + (f", weight {w:g}" if several else "") for m, w in zip(self.members, self.weights))

    def logits(self, queries: list[str], lists: list[list[str]], *, batch_size: int = 64, device=None, log=print,
               on_progress=None) -> tuple[list[np.ndarray], dict]:
        """Per list, the (combined) teachers' logits of ``(queries[i], lists[i][j])``; each member scores each pair
        once (its cache)."""
        pairs = [(q, p) for q, ps in zip(queries, lists) for p in ps]
        bounds = np.cumsum([0] + [len(ps) for ps in lists])
        per_teacher, stats = [], []
        for member in self.members:
            logits, st = member.score(pairs, batch_size=batch_size, device=device, log=log, on_progress=on_progress)
            per_teacher.append([logits[bounds[i]:bounds[i + 1]] for i in range(len(lists))])
            stats.append({"teacher": member.name, **st})
        combined = combine(per_teacher, self.weights)
        if len(stats) == 1:
            return combined, stats[0]
        return combined, {"teachers": stats, "weights": list(self.weights), "distinct_pairs": stats[0]["distinct_pairs"]}

    def matrix(self, queries: list[str], passages: list[str], batch_size: int = 64, log=print) -> np.ndarray:
        """(Q, P) combined logits of every query with every passage; bi-encoder members only (:attr:`dense`)."""
        if not self.dense:
            raise UsageError("in-batch distillation needs every teacher to be a bi-encoder (a cross-encoder would score "
                             "every query with every passage of each batch); pass bi-encoder teachers, or leave "
                             "--in_batch_kl_weight at 0")
        rows = [m.matrix(queries, passages, batch_size=batch_size, log=log) for m in self.members]
        return np.stack(combine([list(r) for r in rows], self.weights)) if len(rows) > 1 else rows[0]

    def encode(self, queries: list[str], passages: list[str], batch_size: int = 64, log=print) -> None:
        """Every bi-encoder member encodes ``queries`` and ``passages`` now (kept for :meth:`matrix`, cached)."""
        for m in self.members:
            if hasattr(m, "encode"):
                m.encode(queries, "query", batch_size=batch_size, log=log)
                m.encode(passages, "passage", batch_size=batch_size, log=log)

    def release(self) -> None:
        for m in self.members:
            m.release()


def open_teachers(teacher_path: str, teacher_weights: str | None = None, *, score_cache: str | None = None,
                  max_len: int | None = None, precision: str = "auto", device: str = "cpu") -> Teachers:
    """Every teacher named by ``--teacher_path`` checked, classified (:func:`~crossdistill.teachers.kinds.open_kind`)
    and fingerprinted; nothing is loaded."""
    from crossdistill.teachers.kinds import open_kind

    names = split_paths(teacher_path)
    if not names:
        raise UsageError("--teacher_path is empty; pass a cross-encoder folder or hub id")
    if len(set(names)) != len(names):
        raise UsageError(f"--teacher_path names the same teacher twice ({teacher_path}); give each teacher once and weigh "
                         "it with --teacher_weights")
    weights = parse_weights(teacher_weights, len(names))
    members = [open_kind(n, max_len=max_len, precision=precision, device=device) for n in names]
    for m in members:
        if hasattr(m, "cache_path") and m.kind == "cross-encoder":
            m.cache_path = score_cache
    return Teachers(members, weights)
