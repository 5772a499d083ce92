#!/usr/bin/env python
"""Rerank BM25's top-k of a BEIR split with a trained teacher; print the metrics of both orders and a paired
t-test of nDCG@10 per query (ranx), with the queries the teacher wins, ties and loses.

  python bench/teacher_rerank.py --teacher models/teacher --beir_dir ../shared/data/scifact --split test --k 30
  (--queries_from preprocessed/<v>/val.csv restricts to the queries of a prepared split, e.g. val)
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossdistill.data import load_beir, read_triplets  # noqa: E402
from crossdistill.metrics import paired_comparison, ranking_metrics  # noqa: E402
from crossdistill.retrieval import bm25_run, qrels_dict, rerank  # noqa: E402
from crossdistill.teacher import CrossEncoderTeacher  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", required=True)
    p.add_argument("--beir_dir", default="../shared/data/scifact")
    p.add_argument("--split", default="test")
    p.add_argument("--queries_from", default=None)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--max_len", type=int, default=None, help="score with another max_len than the teacher was trained with")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rs = load_beir(a.beir_dir, a.split)
    if a.queries_from:
        keep = set(read_triplets(a.queries_from)["anchor"])
        rs = rs.subset([q for q in rs.qrels if rs.queries[q] in keep])
    qrels = qrels_dict(rs.qrels)
    run = bm25_run(rs.corpus, rs.queries, 100)
    teacher = CrossEncoderTeacher.load(a.teacher, a.max_len)
    t0 = time.time()
    rr = rerank(teacher, run, queries=rs.queries, corpus=rs.corpus, k=a.k, show_progress=True)
    secs = time.time() - t0
    res = {"queries": len(qrels), "k": a.k, "bm25": ranking_metrics(qrels, run), "teacher_rerank": ranking_metrics(qrels, rr),
           "paired_ndcg@10": paired_comparison(qrels, run, rr, "ndcg@10"),
           "rerank_seconds": round(secs, 1), "pairs_per_s": round(len(qrels) * a.k / secs, 1)}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
