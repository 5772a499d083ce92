"""Hard-negative mining: rank the corpus for each query, then pick negatives with a false-negative guard.

Miners (all deterministic for a given seed):

- :class:`BM25Miner` — bm25s over :func:`analyze` tokens (words for alphabetic scripts, character
  bigrams inside Hangul/CJK words, so Korean works without a morphological analyser);
- :class:`ModelMiner` — cosine similarity of a bi-encoder's embeddings (each passage encoded once);
- :class:`RandomMiner` — the original behaviour: random passages.

:func:`pick_negatives` applies the guard: never a known positive of the query, never a passage in an
excluded group (e.g. the same article), only ranks inside the window, and optionally nothing that scores
within ``fn_margin`` (relative) of the positive.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import DEFAULT_MAX_LEN

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


_STOP = _stopwords()


def analyze(text: str) -> list[str]:
    """Lower-cased word tokens minus English stopwords; words with Hangul/CJK become character bigrams.

    >>> analyze("The cell divides")
    ['cell', 'divides']
    >>> analyze("서울은 수도")
    ['서울', '울은', '수도']
    """
    tokens = []
    for w in _WORD.findall(text.lower()):
        if _CJK.search(w):
            tokens.extend([w] if len(w) == 1 else [w[i:i + 2] for i in range(len(w) - 1)])
        elif w not in _STOP:
            tokens.append(w)
    return tokens


class BM25Miner:
    """BM25 (bm25s, Lucene variant) over a fixed passage list."""

    def __init__(self, passages: list[str], k1: float = 1.5, b: float = 0.75):
        import bm25s

        self.n = len(passages)
        self.index = bm25s.BM25(k1=k1, b=b)
        self.index.index([analyze(p) or [""] for p in passages], show_progress=False)

    def scores(self, queries: list[str]) -> np.ndarray:
        """(len(queries), n_passages) float32 scores."""
        return np.stack([self.index.get_scores(analyze(q) or [""]) for q in queries]).astype(np.float32)


class ModelMiner:
    """Cosine similarity of a sentence-transformers bi-encoder; passages are encoded once."""

    def __init__(self, passages: list[str], model_name: str = "minilm-l6", batch_size: int = 64,
                 max_len: int = DEFAULT_MAX_LEN, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        from crossdistill.models.resolve import load_or_fail, resolve_model

        self.resolved = resolve_model(model_name)
        self.model = load_or_fail(lambda p: SentenceTransformer(p, device=device), self.resolved, "mining model")
        self.model.max_seq_length = max_len
        self.batch_size = batch_size
        self.emb = self._encode([self.resolved.passage_prefix + p for p in passages])

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=len(texts) > 2000)

    def scores(self, queries: list[str]) -> np.ndarray:
        return self._encode([self.resolved.query_prefix + q for q in queries]) @ self.emb.T


class RandomMiner:
    """Random passages (the original "mining"); scores are a seeded random permutation."""

    def __init__(self, passages: list[str], seed: int = 42):
        self.n = len(passages)
        self.rng = np.random.default_rng(seed)

    def scores(self, queries: list[str]) -> np.ndarray:
        return self.rng.random((len(queries), self.n), dtype=np.float32)


def make_miner(kind: str, passages: list[str], seed: int, model_name: str = "minilm-l6", **kw):
    if kind == "bm25":
        return BM25Miner(passages)
    if kind == "model":
        return ModelMiner(passages, model_name, **kw)
    if kind == "random":
        return RandomMiner(passages, seed)
    raise UsageError(f"unknown negative miner '{kind}'; use bm25, model or random")


@dataclass(frozen=True)
class MiningRule:
    """How negatives are chosen from a ranking (see :func:`pick_negatives`)."""

    num_negatives: int = 3
    rank_start: int = 0
    rank_end: int = 100
    fn_margin: float | None = None   # skip candidates scoring >= (1 - fn_margin) * score(positive)


def pick_negatives(scores: np.ndarray, positive: int, forbidden: set[int], rule: MiningRule) -> list[int]:
    """Indices of up to ``rule.num_negatives`` negatives, hardest first.

    ``scores``: (n_passages,) miner scores for one query; ``positive``: the positive's index (its score is
    the reference for the margin guard); ``forbidden``: indices never returned (all known positives of the
    query, passages of an excluded group). Ties are broken by index, so the result is deterministic.
    """
    order = np.lexsort((np.arange(len(scores)), -scores))  # descending score, then ascending index
    window = order[rule.rank_start:rule.rank_end]
    ceiling = None
    if rule.fn_margin is not None and scores[positive] > 0:
        ceiling = (1.0 - rule.fn_margin) * float(scores[positive])
    out = []
    for i in window:
        i = int(i)
        if i in forbidden or (ceiling is not None and scores[i] >= ceiling):
            continue
        out.append(i)
        if len(out) == rule.num_negatives:
            break
    return out


def random_negatives(n_passages: int, forbidden: set[int], count: int, rng: random.Random,
                     exclude: set[int] = frozenset()) -> list[int]:
    """``count`` distinct random passage indices outside ``forbidden`` and ``exclude`` (at most as many as there are:
    a count beyond the pool is capped, never searched for)."""
    count = min(count, max(0, n_passages - len(set(forbidden) | set(exclude))))
    out: list[int] = []
    budget = 50 * (count + 1)
    while len(out) < count and budget:
        budget -= 1
        i = rng.randrange(n_passages)
        if i not in forbidden and i not in exclude and i not in out:
            out.append(i)
    return out
