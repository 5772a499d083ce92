"""Teacher fusion: soft labels that combine the teachers' logits with other rankers' scores.

``--teacher_fusion "bm25=0.5"`` gives each candidate the score z(teacher) + 0.5 · z(BM25), where z
standardises a score over the query's own candidate list (mean 0, standard deviation 1), so rankers on
different scales add up (``--fusion_norm run`` instead divides each source by one scale for the whole run —
its standard deviation within a list, pooled over all the lists — so a source that barely separates a list's
candidates adds little there, where the per-list z-score would blow its noise up to the full scale).

Sources: ``bm25`` (lexical, bm25s over the training passages), ``student`` (the starting student's cosine — the
zero-shot model's own view) and ``dense`` (the cosine of another bi-encoder, ``--fusion_model``, a
:class:`~crossdistill.teachers.dense.DenseKind`: e.g. a student trained on the labels alone, the strongest ranker a
first round gives — hybrid lexical + dense fusion is ahead of either alone). The student then learns an order that
holds the signals it lacks on its own.
"""

from __future__ import annotations

import numpy as np

from crossdistill.core.errors import UsageError

SOURCES = ("bm25", "student", "dense")


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
        if not np.isfinite(w) or w < 0 or w > 1000:
            raise UsageError(f"--teacher_fusion weight of {name} must be between 0 and 1000 (got {weight!r}); e.g. bm25=0.5")
        out[name] = w
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise one list of scores; a constant list becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


NORMS = ("list", "run")


def run_standardised(lists: list[np.ndarray]) -> list[np.ndarray]:
    """Each list centred on its own mean and divided by one scale for all of them: the within-list standard deviation
    pooled over the lists, sqrt(Σ_i Σ_j (x_ij − mean_i)² / Σ_i n_i). A list whose scores barely differ stays nearly flat
    (it is not stretched to unit spread as :func:`zscore` would); all lists constant: zeros."""
    centred = [np.asarray(x, dtype=np.float64) - np.mean(x) for x in lists]
    n = sum(len(c) for c in centred)
    sd = np.sqrt(sum(float((c ** 2).sum()) for c in centred) / n) if n else 0.0
    return [c / sd if sd > 1e-12 else np.zeros_like(c) for c in centred]


def fuse(teacher: list[np.ndarray], others: dict[str, list[np.ndarray]], weights: dict[str, float],
         norm: str = "list") -> list[np.ndarray]:
    """Per list: s(teacher) + Σ_s w_s · s(others[s]), where s is :func:`zscore` per list (``norm="list"``) or
    :func:`run_standardised` over all the lists given (``norm="run"``). Lists are the per-query candidate score arrays."""
    if norm not in NORMS:
        raise ValueError(f"fusion norm must be one of {NORMS}, got {norm!r}")
    scaled = (lambda lists: [zscore(x) for x in lists]) if norm == "list" else run_standardised
    out = scaled(teacher)
    for name, w in weights.items():
        out = [f + w * o for f, o in zip(out, scaled(others[name]))]
    return [f.astype(np.float32) for f in out]


def bm25_candidate_scores(queries: list[str], candidates: list[list[str]], pool: list[str] | None = None) -> list[np.ndarray]:
    """BM25 score of each query's candidates (:class:`~crossdistill.teachers.lexical.BM25Kind`), over an index of
    ``pool`` (the collection the candidates are drawn from, whose document frequencies give the IDF; every candidate is
    added to it if missing) or, without one, of all distinct candidate passages."""
    from crossdistill.teachers.lexical import BM25Kind

    pairs = [(q, p) for q, c in zip(queries, candidates) for p in c]
    scores, _ = BM25Kind(pool).score(pairs)
    bounds = np.cumsum([0] + [len(c) for c in candidates])
    return [scores[bounds[i]:bounds[i + 1]] for i in range(len(candidates))]


def build_soft_labels(logits: list[np.ndarray], queries: list[str], candidates: list[list[str]], kind: str,
                      weights: dict[str, float], *, bm25_pool: list[str] | None = None,
                      student_cos: list[np.ndarray] | None = None,
                      dense_cos: list[np.ndarray] | None = None, norm: str = "list") -> list[np.ndarray]:
    """The soft labels of candidate lists — the one builder the training lists and the teacher guard share, so the
    guard judges exactly what the student will learn from.

    Args:
        logits: per list (K_i,) the teacher's logits of ``(queries[i], candidates[i][j])``.
        kind: ``"logit"`` (the logits as they are) or ``"prob"`` (sigmoid probabilities, the original's); with
            ``weights`` only ``"logit"`` (fusion standardises each source per list: probabilities would be refused
            earlier by the command line).
        weights: fusion weights per source (``parse_fusion``); empty = the teacher alone.
        bm25_pool: the collection BM25's IDF is computed over: the prepared version's corpus when it has one (for the
            training lists and the guard alike), else the pool the lists are drawn from.
        student_cos: per list (K_i,) the starting student's cosines, needed when ``weights`` has ``student``.
        dense_cos: per list (K_i,) the ``--fusion_model``'s cosines, needed when ``weights`` has ``dense``.
        norm: how each source is put on a common scale before the weighted sum (:func:`fuse`): ``"list"`` (z-scores
            per list) or ``"run"`` (one scale per source over all ``logits``' lists).

    Returns:
        per list a float32 (K_i,) array.
    """
    if weights:
        if kind != "logit":
            raise ValueError("fusion combines teacher logits; soft labels 'prob' cannot be fused")
        others = {}
        if "bm25" in weights:
            others["bm25"] = bm25_candidate_scores(queries, candidates, bm25_pool)
        if "student" in weights:
            if student_cos is None:
                raise ValueError("fusion with 'student' needs the starting student's cosines")
            others["student"] = student_cos
        if "dense" in weights:
            if dense_cos is None:
                raise ValueError("fusion with 'dense' needs the fusion model's cosines")
            others["dense"] = dense_cos
        return fuse(logits, others, weights, norm)
    if kind == "logit":
        return [np.asarray(t, dtype=np.float32).copy() for t in logits]
    import torch

    return [torch.sigmoid(torch.from_numpy(np.asarray(t, dtype=np.float32).copy())).numpy() for t in logits]
