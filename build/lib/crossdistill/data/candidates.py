"""Per-query candidate lists for distillation: positives, the CSV's negatives, then mined hard negatives.

Each list holds K passages: the query's positives first (at most K - 1, so a negative always fits),
its CSV negatives, then negatives mined from the pool of all distinct passages in the CSV
(``bm25``, ``model`` or ``random``), deduplicated, never one of the query's known positives.

The student still mines here, after prepare_data.py did: K is the student's setting, chosen after a version is
prepared, so a list the version cannot fill to K (prepare's 4 mined + 3 random negatives per positive) is topped up.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossdistill.data import versions as data
from crossdistill.data.mining import MiningRule, make_miner, pick_negatives
from crossdistill.data.records import group_rows

DEFAULT_K = 16  # candidates per query (the student's and teacher_scores.py's --K)
DEFAULT_NEGATIVE_SOURCE = "bm25"  # how lists are filled up to K beyond the CSV's negatives


@dataclass
class CandidateList:
    query: str
    passages: list[str]
    positive: list[bool]  # ground-truth label of each passage


def build_candidates(df, K: int, negative_source: str, seed: int, mining_model: str = "minilm-l6") -> tuple[list[CandidateList], dict]:
    """Candidate lists for every anchor of ``df``; returns (lists, stats).

    stats: queries, K, short_lists (fewer than K passages available), mean_candidates, mined_negatives.
    """
    records = group_rows(df[list(data.COLUMNS)])
    positives = {r.query: r.pos for r in records}
    negatives = {r.query: r.neg for r in records}
    pool = sorted(set(df["positive"]) | set(df["negative"]))
    index = {p: i for i, p in enumerate(pool)}
    queries = list(positives)
    need = {q: K - min(len(positives[q]), K - 1) - len([n for n in negatives[q] if n not in positives[q]]) for q in queries}
    mined: dict[str, list[str]] = {q: [] for q in queries}
    todo = [q for q in queries if need[q] > 0]
    if todo:
        miner = make_miner(negative_source, pool, seed, mining_model)
        scores = miner.scores(todo)
        for qi, q in enumerate(todo):
            forbidden = {index[p] for p in positives[q]} | {index[n] for n in negatives[q]}
            rule = MiningRule(num_negatives=need[q], rank_start=0, rank_end=len(pool))
            mined[q] = [pool[i] for i in pick_negatives(scores[qi], index[positives[q][0]], forbidden, rule)]
    lists, short = [], 0
    for q in queries:
        pos = positives[q][:K - 1]  # at most K - 1 positives: a negative always fits
        negs = [n for n in negatives[q] if n not in positives[q]] + mined[q]
        passages = (pos + negs)[:K]
        if len(passages) < K:
            short += 1
        labels = [True] * len(pos) + [False] * (len(passages) - len(pos))
        lists.append(CandidateList(q, passages, labels))
    stats = {"queries": len(lists), "K": K, "short_lists": short, "negative_source": negative_source,
             "mean_candidates": round(sum(len(c.passages) for c in lists) / max(len(lists), 1), 3),
             "mined_negatives": sum(len(m) for m in mined.values()), "pool_passages": len(pool)}
    return lists, stats
