"""The student's validation and the teacher guard: the val pool (val queries ranked against the val CSV's passages
or the whole BEIR corpus), MRR@10/nDCG@10 of the student over it (numpy, no JIT start-up), and the guard that
refuses to distil from a teacher (fused or not) that reranks the student's val top-k worse than the student ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from crossdistill.core.errors import UsageError
from crossdistill.data import sources
from crossdistill.data import versions as data
from crossdistill.data.eval_sets import TripletPool
from crossdistill.distill.fusion import build_soft_labels
from crossdistill.evaluate.metrics import matrix_ranking_metrics
from crossdistill.models.student import BiEncoderStudent
from crossdistill.teach.scores import Teachers, list_logits


@torch.no_grad()
def student_similarities(student: BiEncoderStudent, queries: list[str], passages: list[str], batch_size: int,
                         on_progress=None, chunk: int = 2048) -> np.ndarray:
    """(Q, P) cosine similarities; each text encoded once, in length-sorted batches (sentence-transformers),
    ``chunk`` passages at a time with ``on_progress(done, total)`` after each (a heartbeat for the monitor)."""
    was_training = student.training
    student.eval()
    kw = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    q = student.st.encode([student.query_prefix + t for t in queries], **kw)
    parts = []
    for s in range(0, len(passages), chunk):
        parts.append(student.st.encode([student.passage_prefix + t for t in passages[s:s + chunk]], **kw))
        if on_progress is not None:
            on_progress(min(s + chunk, len(passages)), len(passages))
    student.train(was_training)
    return q @ np.concatenate(parts).T if parts else np.zeros((len(queries), 0), dtype=np.float32)


def evaluate_student(student: BiEncoderStudent, pool: TripletPool, batch_size: int, events=None) -> tuple[dict, np.ndarray]:
    """Mean normalised positive/negative score and margin over val triplets; MRR@10, nDCG@10, Recall@10 over the pool."""
    on_progress = None if events is None else (lambda done, total: events.log("phase", phase="validation", done=done, total=total))
    cos = student_similarities(student, pool.queries, pool.passages, batch_size, on_progress)
    norm = (cos + 1) / 2
    t = np.array(pool.triplets)
    pos, neg = norm[t[:, 0], t[:, 1]], norm[t[:, 0], t[:, 2]]
    rank = matrix_ranking_metrics(cos, pool.relevant())
    metrics = {"val_mean_positive": float(pos.mean()), "val_mean_negative": float(neg.mean()),
               "val_margin": float((pos - neg).mean()), "val_mrr@10": rank["mrr@10"], "val_ndcg@10": rank["ndcg@10"],
               "val_recall@10": rank["recall@10"]}
    return metrics, cos


def val_pool_passages(data_root: str, data_version: str, val_pool: str) -> tuple[list[str] | None, dict]:
    """The passages the val queries are ranked against beyond the val CSV's own, and what they are:
    ``(passages or None, {"kind": "corpus" | "csv", "source": ...})``.

    ``corpus`` (and ``auto`` when the version has one): the prepared version's ``corpus.jsonl`` (written by
    prepare_data.py for a BEIR source or a ``--corpus``), or for a version prepared before that file existed the BEIR
    folder its ``prepare_config.json`` names — refused when that folder is gone, never silently replaced by the small
    CSV pool. ``csv`` (and ``auto`` without a corpus): None, the val CSV's passages only.

    A small pool of the val CSV's own passages is easy; ranking over the full corpus is what the student is
    tested on, so best-epoch choices and the guard read the same kind of number as the test."""
    if val_pool == "csv":
        return None, {"kind": "csv"}
    folder = Path(data_root) / data_version
    own = folder / data.CORPUS_FILE
    if own.is_file():
        return sources.read_corpus_texts(own), {"kind": "corpus", "source": str(own.resolve())}
    try:
        prepared = json.loads((folder / "prepare_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        prepared = {}
    prepared = prepared if isinstance(prepared, dict) else {}
    source = prepared.get("source")
    if prepared.get("source_type") == "beir" and source:
        if (Path(str(source)) / "corpus.jsonl").is_file():
            return sources.load_beir_corpus(str(source)), {"kind": "corpus", "source": str(Path(str(source)).resolve())}
        raise UsageError(f"data version {data_version} was prepared from the BEIR folder {source}, which is not found from "
                         f"{Path.cwd()}; --val_pool {val_pool} ranks the val queries against its corpus: run from the folder "
                         "you prepared in, re-run prepare_data.py (it now keeps the corpus with the data), or pass --val_pool csv")
    if val_pool == "corpus":
        raise UsageError(f"--val_pool corpus needs a corpus with the data: prepare {data_version} from a BEIR folder or with "
                         "prepare_data.py --corpus FILE; or use --val_pool csv")
    return None, {"kind": "csv"}


def teacher_guard(teachers: Teachers, pool: TripletPool, student_cos: np.ndarray, cache_path: Path | None, *, guard_k: int,
                  batch_size: int, fusion: dict[str, float], soft_labels: str, log=print, device=None,
                  dense=None, fusion_norm: str = "list") -> dict:
    """MRR@10 on the val pool of the starting student vs the teacher reranking the student's top ``guard_k``.

    The reranker is what the student will learn from: the teachers' combined logits
    (:func:`~crossdistill.teacher_scores.list_logits`) and the soft labels built from them by the same
    :func:`~crossdistill.fusion.build_soft_labels` as the training lists' (fused with ``fusion``'s sources, BM25's
    IDF over the val pool, which holds the version's corpus when it has one; ``dense(queries, lists)``: the fusion
    model's cosines, when the fusion has a ``dense`` source; ``fusion_norm``: ``--fusion_norm``, its run-wide scales
    taken over these lists)."""
    k = min(guard_k, len(pool.passages))
    top = np.argsort(-student_cos, axis=1, kind="stable")[:, :k]
    logits, _ = list_logits(teachers, pool.queries, [[pool.passages[j] for j in row] for row in top], cache_path,
                            batch_size, device=device, log=log)
    lists = [[pool.passages[j] for j in row] for row in top]
    labels = build_soft_labels(logits, pool.queries, lists, soft_labels, fusion, bm25_pool=pool.passages,
                               student_cos=list(np.take_along_axis(student_cos, top, 1)),
                               dense_cos=dense(pool.queries, lists) if dense is not None else None, norm=fusion_norm)
    relevant = pool.relevant()
    in_top = [{c for c, j in enumerate(top[i]) if j in relevant[i]} for i in range(len(pool.queries))]
    s = matrix_ranking_metrics(np.take_along_axis(student_cos, top, 1), in_top)["mrr@10"]
    t = matrix_ranking_metrics(np.stack(labels), in_top)["mrr@10"]
    return {"student_mrr@10": s, "teacher_rerank_mrr@10": t, "guard_k": k, "fused": sorted(fusion)}
