"""Retrieval over a corpus: BM25 runs, bi-encoder runs, and reranking a run with the teacher."""

from __future__ import annotations

from crossdistill.evaluate.metrics import top_k_run


def bm25_run(corpus: dict[str, str], queries: dict[str, str], k: int = 100) -> dict[str, dict[str, float]]:
    """Top-``k`` BM25 (bm25s over :func:`crossdistill.data.mining.analyze` tokens) for each query."""
    from crossdistill.data.mining import BM25Miner

    doc_ids = list(corpus)
    miner = BM25Miner([corpus[d] for d in doc_ids])
    qids = list(queries)
    return top_k_run(qids, doc_ids, miner.scores([queries[q] for q in qids]), k)


def rerank(teachers, run: dict[str, dict[str, float]], *, queries: dict[str, str], corpus: dict[str, str], k: int,
           batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Re-score each query's top-``k`` of ``run`` with the :class:`~crossdistill.teachers.ensemble.Teachers`
    (their combined logits; each pair scored once, through their caches)."""
    import torch

    tops = {q: sorted(docs, key=docs.get, reverse=True)[:k] for q, docs in run.items()}
    qids = list(tops)
    device = torch.device("cuda") if torch.cuda.is_available() else None
    logits, _ = teachers.logits([queries[q] for q in qids], [[corpus[d] for d in tops[q]] for q in qids],
                                batch_size=batch_size, device=device)
    return {q: {d: float(s) for d, s in zip(tops[q], lo)} for q, lo in zip(qids, logits)}


def qrels_dict(qrels: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    return {q: {d: 1 for d in docs} for q, docs in qrels.items()}
