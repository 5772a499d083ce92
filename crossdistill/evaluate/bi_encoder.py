"""Stage 3: evaluate a bi-encoder — the original's score statistics, pair metrics, retrieval metrics, baselines.

Scores are normalised cosines ``(cos + 1) / 2``. Retrieval runs over the *test pool* (every distinct
passage of the test CSV, each anchor's positives relevant) and, with ``beir_dir``, over a full corpus.
Dense search encodes the corpus in chunks and keeps a running top-k, so memory stays bounded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.data.eval_sets import TripletPool
from crossdistill.evaluate.metrics import DEFAULT_METRICS, indexed_run, ranking_metrics
from crossdistill.evaluate.retrieval import qrels_dict
from crossdistill.models.sides import Side, sequence_length

TARGET_MAX_NEGATIVE = 0.15
TARGET_MIN_MARGIN = 0.7


# --------------------------------------------------------------------------- models
def load_bi_encoder(path: str, max_len: int | None = None, device: str | None = None, truncate_dim: int | None = None,
                    query_max_len: int | None = None):
    """A SentenceTransformer from a folder/alias/hub id, refusing cross-encoders with a clear message; ``truncate_dim``:
    its embeddings cut to that many dimensions (re-normalised by ``encode``); ``query_max_len``: checked against the
    model's limit like ``max_len`` (it is applied per call, :class:`~crossdistill.models.student.Side`)."""
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.folders import model_folder_kind
    from crossdistill.models.resolve import check_max_len, load_or_fail, resolve_model

    resolved = resolve_model(path)
    folder = Path(resolved.path)
    if folder.is_dir():
        if model_folder_kind(folder) == "cross-encoder":
            raise UsageError(f"{path} is a cross-encoder (sequence classifier), not a bi-encoder; pass the student folder "
                             "written by train_distillation_pipeline.py (a teacher goes to --teacher_path)")
    model = load_or_fail(lambda p: SentenceTransformer(p, device=device), resolved, "bi-encoder")
    from crossdistill.models.student import _transformer

    module = _transformer(model)
    if module is not None:
        check_max_len(max_len, module.model.config, f"bi-encoder {path}")
        check_max_len(query_max_len, module.model.config, f"bi-encoder {path}", "--query_max_len")
    if max_len:
        model.max_seq_length = max_len
    if truncate_dim:
        full = embedding_dim(model)
        if truncate_dim > full:
            raise UsageError(f"--truncate_dim {truncate_dim} is more than the {full} dimensions of {path}'s embeddings; "
                             f"pass at most {full}")
        model.truncate_dim = truncate_dim
    return model, resolved


def embedding_dim(model) -> int:
    return model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else \
        model.get_sentence_embedding_dimension()


def cut(emb: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` dimensions of each row, re-normalised (what ``truncate_dim`` serves)."""
    part = emb[:, :dim]
    return part / np.clip(np.linalg.norm(part, axis=1, keepdims=True), 1e-12, None)


def encode(model, texts: list[str], side: str | Side, batch_size: int, show_progress: bool = False) -> np.ndarray:
    """Normalised embeddings of one side's ``texts``: ``side`` its prefix, or a :class:`Side` (prefix and length);
    sentence-transformers sorts by length so batches carry little padding."""
    side = Side(side) if isinstance(side, str) else side
    with sequence_length(model, side.max_len):
        return model.encode([side.prefix + t for t in texts], batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=show_progress)


class _TopK:
    """A running top-``k`` (indices, scores) per query over chunks of a corpus."""

    def __init__(self, n_queries: int, k: int):
        self.k = k
        self.scores = np.full((n_queries, 0), -np.inf, dtype=np.float32)
        self.ids = np.zeros((n_queries, 0), dtype=np.int64)

    def add(self, scores: np.ndarray, start: int) -> None:
        s = np.concatenate([self.scores, scores], axis=1)
        i = np.concatenate([self.ids, np.arange(start, start + scores.shape[1])[None, :].repeat(len(scores), 0)], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :self.k]
        self.scores, self.ids = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)


def dense_search(model, queries: list[str], corpus: list[str], q_prefix: str | Side, p_prefix: str | Side, k: int,
                 batch_size: int, chunk: int = 4096, show_progress: bool = False, dims=()
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-``k`` (indices, cosines) per query over ``corpus``, encoding ``chunk`` passages at a time.

    Memory: the query embeddings, one chunk of passage embeddings and a (Q, k) running top-k per size.
    Returns also timing: queries/s and passages/s of encoding; with ``dims``, ``by_dim`` {d: (indices, cosines)}: the
    same search with the vectors cut to their first ``d`` dimensions and re-normalised (each text encoded once).
    """
    t0 = time.time()
    q = encode(model, queries, q_prefix, batch_size)
    tq = time.time() - t0
    sizes = [None, *dims]
    tops = {d: _TopK(len(queries), k) for d in sizes}
    cut_q = {d: q if d is None else cut(q, d) for d in sizes}
    tp = 0.0
    for start in range(0, len(corpus), chunk):
        t1 = time.time()
        p = encode(model, corpus[start:start + chunk], p_prefix, batch_size, show_progress)
        tp += time.time() - t1
        for d in sizes:
            tops[d].add(cut_q[d] @ (p if d is None else cut(p, d)).T, start)
    info = {"queries_per_s": len(queries) / max(tq, 1e-9), "passages_per_s": len(corpus) / max(tp, 1e-9)}
    if dims:
        info["by_dim"] = {d: (tops[d].ids, tops[d].scores) for d in dims}
    return tops[None].ids, tops[None].scores, info


# --------------------------------------------------------------------------- pair statistics
def score_statistics(pos: np.ndarray, neg: np.ndarray, anchors: list[str]) -> dict:
    """The original's statistics plus accuracy, ROC AUC, best-threshold F1, per-query margins and targets."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score

    margin = pos - neg
    both = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones_like(pos), np.zeros_like(neg)])
    prec, rec, thr = precision_recall_curve(labels, both)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)[:-1]
    best = int(np.argmax(f1)) if len(f1) else 0
    per_query: dict[str, list[float]] = {}
    for a, m in zip(anchors, margin):
        per_query.setdefault(a, []).append(float(m))
    q_margins = np.array([np.mean(v) for v in per_query.values()])
    return {
        # the original's keys
        "avg_positive_score": float(pos.mean()), "std_positive_score": float(pos.std()),
        "avg_negative_score": float(neg.mean()), "std_negative_score": float(neg.std()),
        "avg_margin": float(margin.mean()), "std_margin": float(margin.std()),
        "uniformity": {"positive_variance": float(pos.var()), "negative_variance": float(neg.var()),
                       "all_variance": float(both.var())},
        "num_samples": int(len(pos)),
        # the same numbers under the key names the original evaluate_final_model.py wrote (scripts read them)
        "pos_cosine_similarity_mean": float(pos.mean()), "pos_cosine_similarity_std": float(pos.std()),
        "neg_cosine_similarity_mean": float(neg.mean()), "neg_cosine_similarity_std": float(neg.std()),
        "margin_mean": float(margin.mean()), "margin_std": float(margin.std()),
        "pos_uniformity": float(pos.var()), "neg_uniformity": float(neg.var()), "overall_uniformity": float(both.var()),
        "total_samples": int(len(pos)),
        # added
        "accuracy": float((pos > neg).mean()),
        "roc_auc": float(roc_auc_score(labels, both)),
        "best_f1": float(f1[best]) if len(f1) else 0.0, "best_f1_threshold": float(thr[best]) if len(thr) else 0.5,
        "per_query_margin": {"queries": len(q_margins), "mean": float(q_margins.mean()), "min": float(q_margins.min()),
                             "p10": float(np.percentile(q_margins, 10)), "fraction_positive": float((q_margins > 0).mean())},
        "targets": {"mean_negative_le_0.15": bool(neg.mean() <= TARGET_MAX_NEGATIVE),
                    "margin_ge_0.7": bool(margin.mean() >= TARGET_MIN_MARGIN)},
    }


# --------------------------------------------------------------------------- the evaluation
def pair_scores(model, prefixes, ts: TripletPool, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Normalised scores of each test triplet's (anchor, positive) and (anchor, negative); each text encoded once.

    Also returns the anchor and passage embeddings (for pool retrieval) and encoding throughput.
    """
    t0 = time.time()
    qa = encode(model, ts.queries, prefixes[0], batch_size)
    tq = time.time() - t0
    t1 = time.time()
    pe = encode(model, ts.passages, prefixes[1], batch_size, show_progress=len(ts.passages) > 2000)
    tp = time.time() - t1
    t = np.array(ts.triplets).reshape(-1, 3)  # (query, positive, negative) indices, one row per CSV row
    pos = (np.einsum("nd,nd->n", qa[t[:, 0]], pe[t[:, 1]]) + 1) / 2
    neg = (np.einsum("nd,nd->n", qa[t[:, 0]], pe[t[:, 2]]) + 1) / 2
    speed = {"queries_per_s": len(ts.queries) / max(tq, 1e-9), "passages_per_s": len(ts.passages) / max(tp, 1e-9)}
    return pos, neg, qa, pe, speed


def evaluate_bi_encoder(model, prefixes: tuple[Side, Side], ts: TripletPool, batch_size: int, full=None, k: int = 100,
                        dims=()) -> dict:
    """All metrics of one bi-encoder on the test CSV (and over a full corpus, a :class:`~crossdistill.data.eval_sets.RetrievalSet`,
    when given). ``dims``: also nDCG@10, MRR@10 and Recall@100 with the vectors cut to each of these sizes, re-normalised,
    under ``by_dim`` (over the full corpus when given, else the test pool; from the same embeddings, encoded once)."""
    pos, neg, qa, pe, speed = pair_scores(model, prefixes, ts, batch_size)
    out = {"statistics": score_statistics(pos, neg, list(ts.df["anchor"])), "throughput": speed,
           "_pos": pos, "_neg": neg}

    def pool_run(q, p):
        cos = q @ p.T
        top = np.argsort(-cos, axis=1, kind="stable")[:, :min(k, cos.shape[1])]
        return indexed_run(ts.query_ids(), ts.passage_ids(), top, np.take_along_axis(cos, top, 1))

    out["pool_run"] = pool_run(qa, pe)
    out["pool"] = ranking_metrics(ts.qrels, out["pool_run"])
    if full is None and dims:
        out["by_dim"] = {str(d): ranking_metrics(ts.qrels, pool_run(cut(qa, d), cut(pe, d))) for d in dims}
    if full is not None:
        doc_ids = list(full.corpus)
        qids_b = list(full.qrels)
        idx, sc, speed_b = dense_search(model, [full.queries[q] for q in qids_b], [full.corpus[d] for d in doc_ids],
                                        prefixes[0], prefixes[1], k, batch_size, show_progress=True, dims=dims)
        qrels = qrels_dict(full.qrels)
        out["corpus_run"] = indexed_run(qids_b, doc_ids, idx, sc)
        out["corpus"] = ranking_metrics(qrels, out["corpus_run"])
        out["throughput"].update({"corpus_passages_per_s": speed_b["passages_per_s"]})
        if dims:
            out["by_dim"] = {str(d): ranking_metrics(qrels, indexed_run(qids_b, doc_ids, *speed_b["by_dim"][d]))
                             for d in dims}
    return out


def retrieval_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per system, columns = metrics per scope."""
    scopes = [s for s in ("pool", "corpus") if any(s in r for r in results.values())]
    head = ["system"] + [f"{s} {m}" for s in scopes for m in DEFAULT_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name] + [f"{r[s][m]:.4f}" if s in r else "—" for s in scopes for m in DEFAULT_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["load_bi_encoder", "evaluate_bi_encoder", "score_statistics", "dense_search", "retrieval_table",
           "TARGET_MAX_NEGATIVE", "TARGET_MIN_MARGIN"]
