"""The two evaluation structures: a triplet CSV as a ranking task over its own passages (:class:`TripletPool`), and
queries with a corpus and judgements (:class:`RetrievalSet`), built from a source or from prepared rows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from crossdistill.data.records import group_rows
from crossdistill.data.versions import COLUMNS, read_triplets


# --------------------------------------------------------------------------- triplets as a ranking task
@dataclass
class TripletPool:
    """A triplet CSV as a ranking task (the student's val pool, the evaluation's test pool): its distinct queries,
    its distinct passages (the pool; optionally widened by a whole corpus) and the triplets as indices into them.

    The triplets are the one source of each query's positives: :meth:`relevant` (indices) and :attr:`qrels`
    (ids ``q{i}``/``d{j}``, the shape ranx and :func:`crossdistill.evaluate.metrics.ranking_metrics` read) derive from them."""

    df: pd.DataFrame
    queries: list[str]
    passages: list[str]
    triplets: list[tuple[int, int, int]]  # (query index, positive index, negative index), one per CSV row

    @classmethod
    def from_df(cls, df: pd.DataFrame, extra_passages: list[str] | None = None) -> "TripletPool":
        records = group_rows(df[list(COLUMNS)])
        passages = list(dict.fromkeys([p for r in records for p in r.pos] + [n for r in records for n in r.neg] +
                                      list(extra_passages or [])))
        pi = {p: i for i, p in enumerate(passages)}
        triplets = [(q, pi[r.pos[i]], pi[r.neg[j]]) for q, r in enumerate(records) for i, j in r.rows]
        return cls(df, [r.query for r in records], passages, triplets)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "TripletPool":
        return cls.from_df(read_triplets(path))

    def query_ids(self) -> list[str]:
        return [f"q{i}" for i in range(len(self.queries))]

    def passage_ids(self) -> list[str]:
        return [f"d{j}" for j in range(len(self.passages))]

    def relevant(self) -> list[set[int]]:
        """Per query (in order), the indices of its relevant passages."""
        out: list[set[int]] = [set() for _ in self.queries]
        for q, p, _ in self.triplets:
            out[q].add(p)
        return out

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {f"q{q}": {f"d{p}": 1 for p in sorted(ps)} for q, ps in enumerate(self.relevant()) if ps}


# --------------------------------------------------------------------------- retrieval sets
@dataclass
class RetrievalSet:
    """A corpus, queries, and each query's positive passage ids (``qrels``).

    ``groups`` maps a passage id to a group (e.g. its article) used by the false-negative guard;
    ``query_groups`` maps a query id to the group it is split by (its article; default its own id).
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, list[str]]
    groups: dict[str, str] = field(default_factory=dict)
    query_groups: dict[str, str] = field(default_factory=dict)

    def subset(self, query_ids) -> "RetrievalSet":
        ids = [q for q in query_ids if q in self.qrels]
        return RetrievalSet(self.corpus, {q: self.queries[q] for q in ids}, {q: self.qrels[q] for q in ids},
                            self.groups, {q: self.query_groups.get(q, q) for q in ids})


def _stable_id(prefix: str, text: str) -> str:
    import hashlib

    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def retrieval_set_from_rows(df: pd.DataFrame, corpus: dict[str, str] | None = None, bodies: dict[str, str] | None = None
                            ) -> tuple[RetrievalSet, dict[tuple[str, str], list[str]], dict]:
    """Labelled rows (``anchor, positive[, negative]``: pairs or triplets) as a retrieval set: one query per distinct
    anchor holding all its positives, and the given negatives per (query id, positive id), so they can be kept.

    Query ids come from the anchor's text (``q`` + a hash), so the same queries split the same way whether they come as
    pairs or triplets, in any order. With ``corpus`` ({id: text}) the passages are its ids, and a positive or negative
    the corpus lacks joins it (counted in the returned stats); without one the passages are the rows' own texts.
    ``bodies`` ({id: text without title}): a row's passage that is a titled corpus passage's body alone is that passage
    (counted as ``matched_by_body``), never a second copy of it.
    """
    given_corpus = corpus or {}
    by_text: dict[str, str] = {}
    for pid, text in given_corpus.items():  # a text under several ids is one passage (never a negative of itself)
        by_text.setdefault(text, pid)
    corpus = {pid: text for text, pid in by_text.items()}
    stats = {"corpus_passages": len(corpus), "passages_added_to_corpus": 0,
             "corpus_duplicate_texts": len(given_corpus) - len(corpus), "matched_by_body": 0}
    by_body = {}
    for pid, body in (bodies or {}).items():
        if pid in given_corpus:
            by_body.setdefault(body, by_text.get(given_corpus[pid], pid))

    def passage_id(text: str) -> str:
        if text not in by_text and text in by_body:
            stats["matched_by_body"] += 1
            return by_body[text]
        if text not in by_text:
            pid = _stable_id("d" if not stats["corpus_passages"] else "added-", text)
            salt = 0
            while pid in corpus:  # an id the corpus already holds (e.g. a version's own corpus.jsonl given back as
                salt += 1  # --corpus): never taken, the passage gets the next free one
                pid = _stable_id("d" if not stats["corpus_passages"] else "added-", f"{salt}\x00{text}")
            by_text[text] = pid
            corpus[pid] = text
            stats["passages_added_to_corpus"] += bool(stats["corpus_passages"])
        return by_text[text]

    queries: dict[str, str] = {}
    qrels: dict[str, list[str]] = {}
    given: dict[tuple[str, str], list[str]] = {}
    has_negative = "negative" in df.columns
    for row in df.itertuples(index=False):
        q = _stable_id("q", row.anchor)
        queries[q] = row.anchor
        p = passage_id(row.positive)
        if p not in qrels.setdefault(q, []):
            qrels[q].append(p)
        if has_negative:
            given.setdefault((q, p), []).append(passage_id(row.negative))
    # a passage that is some row's positive for this query is never its negative
    for (q, p), negs in given.items():
        given[(q, p)] = [n for n in dict.fromkeys(negs) if n not in qrels[q]]
    stats.update(queries=len(queries), positives=sum(map(len, qrels.values())))
    return RetrievalSet(corpus, queries, qrels), given, stats
