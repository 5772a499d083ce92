#!/usr/bin/env python
"""Rerank a first stage's top-k of a BEIR split with a trained teacher (BM25's, or a bi-encoder's: the candidates a
teacher judges in distillation); print the metrics of both orders and a paired t-test of nDCG@10 per query (ranx),
with the queries the teacher wins, ties and loses.

  python bench/teacher_rerank.py --teacher models/teacher --beir_dir ../shared/data/scifact --split test --k 30
  python bench/teacher_rerank.py --teacher models/teacher --first_stage minilm-l6 --queries_from preprocessed/scifact/val.csv
  (--queries_from restricts to the queries of a prepared split, e.g. val: the split choices are made on)
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossdistill.data.sources import load_beir
from crossdistill.data.versions import read_triplets  # noqa: E402
from crossdistill.evaluate.metrics import indexed_run, paired_comparison, ranking_metrics  # noqa: E402
from crossdistill.evaluate.retrieval import bm25_run, qrels_dict, rerank  # noqa: E402
from crossdistill.models.teacher import CrossEncoderTeacher  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", required=True)
    p.add_argument("--beir_dir", default="../shared/data/scifact")
    p.add_argument("--split", default="test")
    p.add_argument("--queries_from", default=None)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--first_stage", default="bm25", help="bm25, or a bi-encoder (folder or alias) whose top-k is reranked")
    p.add_argument("--max_len", type=int, default=None, help="score with another max_len than the teacher was trained with")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rs = load_beir(a.beir_dir, a.split)
    if a.queries_from:
        keep = set(read_triplets(a.queries_from)["anchor"])
        rs = rs.subset([q for q in rs.qrels if rs.queries[q] in keep])
    qrels = qrels_dict(rs.qrels)
    if a.first_stage == "bm25":
        run = bm25_run(rs.corpus, rs.queries, 100)
    else:
        from crossdistill.evaluate.bi_encoder import dense_search, load_bi_encoder

        model, resolved = load_bi_encoder(a.first_stage, a.max_len)
        qids, dids = list(rs.queries), list(rs.corpus)
        idx, sc, _ = dense_search(model, [rs.queries[q] for q in qids], [rs.corpus[d] for d in dids],
                                  resolved.query_prefix, resolved.passage_prefix, 100, 64)
        run = indexed_run(qids, dids, idx, sc)
    teacher = CrossEncoderTeacher.load(a.teacher, a.max_len)
    t0 = time.time()
    rr = rerank(teacher, run, queries=rs.queries, corpus=rs.corpus, k=a.k, show_progress=True)
    secs = time.time() - t0
    res = {"queries": len(qrels), "k": a.k, "first_stage": a.first_stage, "first_stage_metrics": ranking_metrics(qrels, run),
           "teacher_rerank": ranking_metrics(qrels, rr),
           "paired_ndcg@10": paired_comparison(qrels, run, rr, "ndcg@10"),
           "rerank_seconds": round(secs, 1), "pairs_per_s": round(len(qrels) * a.k / secs, 1)}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
