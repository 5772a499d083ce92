"""Ranking metrics through ranx (MRR, nDCG, Recall, MAP) and pair metrics through scikit-learn."""

from __future__ import annotations

import numpy as np

DEFAULT_METRICS = ("mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100", "map")


def _every_query(qrels: dict, run: dict) -> dict:
    """``run`` with an empty-handed entry for each query of ``qrels`` it lacks (ranx needs every query)."""
    return {q: (run.get(q) or {"__none__": 0.0}) for q in qrels}


_ID_WIDTH = 64


def _fixed_width_ids(qrels: dict, *runs: dict) -> tuple[dict, ...]:
    """``qrels`` and ``runs`` with every document id right-padded with spaces to one width (a multiple of 64).

    ranx compiles its numba kernels for the NumPy string type of the run's longest document id (``<U{n}``), and
    numba's on-disk cache holds one compiled copy per ``n``: every new id length (``d99`` → ``d100``: another pool
    size, another dataset) cost a fresh compile of 50-80 s on 2 cores. Padded, every evaluation uses the same
    type and, after the first, the cache. Padding keeps each id distinct, the documents' order in each ranking (ties
    are broken by it) and the lexicographic order (a space sorts before every printable character); if two ids
    differed only by trailing spaces, the ids are returned unchanged.
    """
    ids = {d for table in (qrels, *runs) for docs in table.values() for d in docs}
    width = _ID_WIDTH * max(1, -(-max(map(len, ids), default=1) // _ID_WIDTH))
    pad = {d: d.ljust(width) for d in ids}
    if len(set(pad.values())) < len(ids):
        return (qrels, *runs)
    return tuple({q: {pad[d]: v for d, v in docs.items()} for q, docs in table.items()} for table in (qrels, *runs))


def _break_ties(run: dict) -> dict:
    """``run`` with each query's scores replaced by strictly decreasing values in the order (score descending, then
    document id ascending). ranx orders a query's documents with numba's ``np.argsort`` (an unstable quicksort), so
    documents with equal scores come out in an order nobody chose; ranked here first, every metric breaks ties by
    document id — the rule :func:`matrix_ranking_metrics` follows with column order — and is reproducible."""
    out = {}
    for q, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        out[q] = {d: float(len(ranked) - i) for i, (d, _) in enumerate(ranked)}
    return out


def ranking_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                    metrics=DEFAULT_METRICS) -> dict[str, float]:
    """Mean metrics of ``run`` (query -> {doc: score}) against ``qrels`` (query -> {doc: relevance}).

    Queries of ``qrels`` absent from ``run`` count as zero, as in trec_eval's -c. Documents with equal scores are
    ranked by document id (:func:`_break_ties`).
    """
    import warnings

    from ranx import Qrels, Run, evaluate

    qrels, run = _fixed_width_ids(qrels, _break_ties(_every_query(qrels, run)))
    with warnings.catch_warnings():  # ranx's numba kernels warn about their own uint64 -> int64 casts: nothing to act on
        warnings.simplefilter("ignore")
        res = evaluate(Qrels(qrels), Run(run), list(metrics), make_comparable=True)
    if isinstance(res, float):
        res = {metrics[0]: res}
    return {k: float(v) for k, v in res.items()}


def per_query_metric(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metric: str = "ndcg@10") -> dict[str, float]:
    """``metric`` of each query of ``qrels`` (ties by document id, absent queries 0), for paired comparisons."""
    import warnings

    from ranx import Qrels, Run, evaluate

    queries = list(qrels)
    q, r = _fixed_width_ids(qrels, _break_ties(_every_query(qrels, run)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = evaluate(Qrels(q), Run(r), metric, return_mean=False, make_comparable=True)
    by_query = dict(zip(sorted(q), values)) if len(values) == len(queries) else {}
    return {x: float(by_query[x]) for x in queries}


def top_k_run(query_ids: list[str], doc_ids: list[str], scores: np.ndarray, k: int) -> dict[str, dict[str, float]]:
    """Turn a (n_queries, n_docs) score matrix into a ranx-style run holding each query's top ``k``."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}


def indexed_run(query_ids: list[str], doc_ids: list[str], idx: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """A ranx-style run from a search's (n_queries, k) document indices and their scores (``dense_search``'s output)."""
    return {q: {doc_ids[j]: float(s) for j, s in zip(idx[r], scores[r])} for r, q in enumerate(query_ids)}


def paired_comparison(qrels: dict[str, dict[str, int]], baseline: dict[str, dict[str, float]],
                      system: dict[str, dict[str, float]], metric: str = "ndcg@10",
                      stat_test: str = "student") -> dict:
    """Per-query paired significance of ``system`` against ``baseline`` on one metric (ranx ``compare``).

    Returns {"metric", "stat_test", "p_value", "wins", "ties", "losses"} (wins/ties/losses: queries where the
    system scores above, equal to, below the baseline). ``stat_test``: "student" (paired t-test), "fisher"
    (randomisation) or "tukey", as ranx names them.
    """
    from ranx import Qrels, Run, compare

    qrels, baseline, system = _fixed_width_ids(qrels, _break_ties(_every_query(qrels, baseline)),
                                               _break_ties(_every_query(qrels, system)))
    runs = [Run(baseline, name="baseline"), Run(system, name="system")]
    report = compare(Qrels(qrels), runs, [metric], stat_test=stat_test, make_comparable=True).to_dict()
    wtl = report["system"]["win_tie_loss"]["baseline"][metric]
    return {"metric": metric, "stat_test": stat_test, "p_value": float(report["system"]["comparisons"]["baseline"][metric]),
            "wins": int(wtl["W"]), "ties": int(wtl["T"]), "losses": int(wtl["L"])}


def matrix_ranking_metrics(scores: np.ndarray, relevant: list[set[int]], k: int = 10) -> dict[str, float]:
    """MRR@k, nDCG@k (binary relevance) and Recall@k of a dense (n_queries, n_docs) score matrix, in numpy.

    The same definitions as ranx, ties broken by column order — what :func:`ranking_metrics` gives for document ids
    that sort like the columns (a property test checks both on random matrices with ties); used inside training
    loops, where ranx's first-call JIT compilation (20-60 s per process on a small machine) would cost more than the
    metric. Published numbers go through :func:`ranking_metrics` (ranx).
    """
    name_k, k = k, min(k, scores.shape[1])  # the keys keep the k asked for (fewer documents: all are ranked)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    mrr, ndcg, recall = [], [], []
    for i, rel in enumerate(relevant):
        hits = np.array([j in rel for j in top[i]], dtype=bool)
        first = np.flatnonzero(hits)
        mrr.append(1.0 / (first[0] + 1) if len(first) else 0.0)
        ideal = discounts[:min(len(rel), k)].sum()
        ndcg.append(float(discounts[hits].sum() / ideal) if ideal > 0 else 0.0)
        recall.append(hits.sum() / len(rel) if rel else 0.0)
    return {f"mrr@{name_k}": float(np.mean(mrr)), f"ndcg@{name_k}": float(np.mean(ndcg)),
            f"recall@{name_k}": float(np.mean(recall))}
