"""Teacher fusion: soft labels that combine the teacher's logits with other rankers' scores.

``--teacher_fusion "bm25=0.5"`` gives each candidate the score z(teacher) + 0.5 · z(BM25), where z
standardises a score over the query's own candidate list (mean 0, standard deviation 1), so rankers on
different scales add up. Sources: ``bm25`` (lexical, bm25s over the training passages) and ``student`` (the
starting student's cosine — the zero-shot model's own view). The student then learns an order that holds the
lexical signal it lacks on its own.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

SOURCES = ("bm25", "student")


def parse_fusion(spec: str | None) -> dict[str, float]:
    """``"bm25=0.5,student=0.2"`` → {"bm25": 0.5, "student": 0.2}; ``none`` / empty → {}."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return {}
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in SOURCES:
            raise UsageError(f"--teacher_fusion takes source=weight pairs with sources {', '.join(SOURCES)} "
                             f"(e.g. bm25=0.5); got {spec!r}")
        try:
            w = float(weight)
        except ValueError:
            raise UsageError(f"--teacher_fusion weight of {name} must be a number (got {weight!r}); e.g. bm25=0.5") from None
        if not np.isfinite(w) or w < 0:
            raise UsageError(f"--teacher_fusion weight of {name} must be finite and >= 0 (got {weight!r})")
        out[name] = w
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise one list of scores; a constant list becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def fuse(teacher: list[np.ndarray], others: dict[str, list[np.ndarray]], weights: dict[str, float]) -> list[np.ndarray]:
    """Per list: z(teacher) + Σ_s w_s · z(others[s]). Lists are the per-query candidate score arrays."""
    out = []
    for i, t in enumerate(teacher):
        f = zscore(t)
        for name, w in weights.items():
            f = f + w * zscore(others[name][i])
        out.append(f.astype(np.float32))
    return out


def bm25_candidate_scores(queries: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
    """BM25 score of each query's candidates, over an index of all distinct candidate passages."""
    from .mining import BM25Miner

    pool = sorted({p for c in candidates for p in c})
    where = {p: i for i, p in enumerate(pool)}
    miner = BM25Miner(pool)
    out = []
    for s in range(0, len(queries), 256):  # (256, pool) at a time: bounded memory
        scores = miner.scores(queries[s:s + 256])
        out += [scores[r, [where[p] for p in c]] for r, c in enumerate(candidates[s:s + 256])]
    return out
