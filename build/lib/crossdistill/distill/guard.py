"""The teacher guard: refuse to distil from a teacher (fused or not) that reranks the starting student's val top-k
worse than the student ranks it — it would make the student worse."""

from __future__ import annotations

import numpy as np

from crossdistill.data.eval_sets import TripletPool
from crossdistill.evaluate.metrics import matrix_ranking_metrics
from crossdistill.teachers.ensemble import Teachers
from crossdistill.teachers.fusion import build_soft_labels


def teacher_guard(teachers: Teachers, pool: TripletPool, student_cos: np.ndarray, *, guard_k: int, batch_size: int,
                  fusion: dict[str, float], soft_labels: str, log=print, device=None, dense=None,
                  fusion_norm: str = "list") -> dict:
    """MRR@10 on the val pool of the starting student vs the teacher reranking the student's top ``guard_k``.

    The reranker is what the student will learn from: the teachers' combined logits
    (:meth:`~crossdistill.teachers.ensemble.Teachers.logits`) and the soft labels built from them by the same
    :func:`~crossdistill.teachers.fusion.build_soft_labels` as the training lists' (fused with ``fusion``'s sources,
    BM25's IDF over the val pool, which holds the version's corpus when it has one; ``dense(queries, lists)``: the
    fusion model's cosines, when the fusion has a ``dense`` source; ``fusion_norm``: ``--fusion_norm``, its run-wide
    scales taken over these lists)."""
    k = min(guard_k, len(pool.passages))
    top = np.argsort(-student_cos, axis=1, kind="stable")[:, :k]
    lists = [[pool.passages[j] for j in row] for row in top]
    logits, _ = teachers.logits(pool.queries, lists, batch_size=batch_size, device=device, log=log)
    labels = build_soft_labels(logits, pool.queries, lists, soft_labels, fusion, bm25_pool=pool.passages,
                               student_cos=list(np.take_along_axis(student_cos, top, 1)),
                               dense_cos=dense(pool.queries, lists) if dense is not None else None, norm=fusion_norm)
    teachers.release()
    relevant = pool.relevant()
    in_top = [{c for c, j in enumerate(top[i]) if j in relevant[i]} for i in range(len(pool.queries))]
    s = matrix_ranking_metrics(np.take_along_axis(student_cos, top, 1), in_top)["mrr@10"]
    t = matrix_ranking_metrics(np.stack(labels), in_top)["mrr@10"]
    return {"student_mrr@10": s, "teacher_rerank_mrr@10": t, "guard_k": k, "fused": sorted(fusion)}
