"""Pseudo-queries: unlabelled training queries cut from the training passages, for the teacher to label.

One sentence of a passage becomes a query and the rest of the passage its pseudo-positive — the Inverse Cloze Task
(Lee et al. 2019, "Latent Retrieval for Weakly Supervised Open Domain Question Answering"). Each pseudo-query gets a
list of K passages: that remainder and K - 1 BM25 negatives from the same pool. No candidate is marked positive: the
teacher scores the list and the student learns it through the soft-label term alone, the way GPL (Wang et al. 2022,
"GPL: Generative Pseudo Labeling for Unsupervised Domain Adaptation of Dense Retrieval") teaches a bi-encoder with
in-domain queries no one labelled. With the teacher weighted 0 such a list teaches nothing itself; its passages
still join the batch's in-batch negatives.

Only the training CSV's own passages are cut (never a val or test passage), so the split stays as prepared.
"""

from __future__ import annotations

import random
import re

from crossdistill.data.candidates import CandidateList
from crossdistill.data.mining import BM25Miner, MiningRule, pick_negatives

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
MIN_WORDS, MAX_WORDS = 5, 40  # a sentence shorter says too little to be a query; longer is a paragraph


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!``, ``?`` (and their CJK forms) followed by white space.

    >>> split_sentences("Cells divide. Why? Nobody knows!")
    ['Cells divide.', 'Why?', 'Nobody knows!']
    """
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def cut_query(passage: str, rng: random.Random) -> tuple[str, str] | None:
    """(query, remainder): one sentence of ``passage`` of MIN_WORDS..MAX_WORDS words, chosen by ``rng``, and the
    passage without it; None when the passage has fewer than two sentences or no sentence of that length."""
    sentences = split_sentences(passage)
    fit = [i for i, s in enumerate(sentences) if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
    if len(sentences) < 2 or not fit:
        return None
    i = rng.choice(fit)
    return sentences[i], " ".join(sentences[:i] + sentences[i + 1:])


def pseudo_query_lists(passages: list[str], n: int, K: int, seed: int,
                       known_queries: set[str] = frozenset()) -> tuple[list[CandidateList], dict]:
    """Up to ``n`` pseudo-query lists from ``passages`` (the training pool), each of K passages: the remainder of its
    source passage first, then K - 1 BM25 negatives of the pool (never the source passage). A sentence equal to a
    labelled query (``known_queries``) or to an earlier pseudo-query is skipped. Deterministic for a given seed.

    Returns (lists, stats): stats has ``requested``, ``pseudo_queries`` (made) and ``passages_without_a_query``
    (passages looked at that gave no new query: no sentence to cut, or the one cut is already a query)."""
    pool = sorted(set(passages))
    order = list(range(len(pool)))
    rng = random.Random(seed)
    rng.shuffle(order)
    picked: list[tuple[int, str, str]] = []
    seen = set(known_queries)
    skipped = 0
    for i in order:
        if len(picked) == n:
            break
        cut = cut_query(pool[i], rng)
        if cut is None or cut[0] in seen:
            skipped += 1
            continue
        seen.add(cut[0])
        picked.append((i, *cut))
    lists = []
    if picked:
        scores = BM25Miner(pool).scores([q for _, q, _ in picked])
        rule = MiningRule(num_negatives=K - 1, rank_start=0, rank_end=len(pool))
        for row, (i, query, rest) in enumerate(picked):
            negatives = [pool[j] for j in pick_negatives(scores[row], i, {i}, rule)]
            lists.append(CandidateList(query, [rest, *negatives], [False] * (1 + len(negatives))))
    return lists, {"requested": n, "pseudo_queries": len(lists), "passages_without_a_query": skipped}
