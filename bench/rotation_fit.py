#!/usr/bin/env python
"""What a published student's PCA rotation should be found on: nDCG@10 over the version's corpus, for val and test,
when its vectors are cut to 128 and 64 dimensions after a rotation found on the training passages and the training
queries, the queries weighing ``alpha`` of the whole (0: the passages alone, the only fit before 2026-12-08; 0.5: each
side the same, ``--pca_fit both``; 1: the queries alone). Every text is encoded once; each rotation composes with
whatever rotation the folder already has (so it is a new fit, not a second turn). Choose on val.

  python bench/rotation_fit.py --model_path bench/results/quality/students/<run> \
      --data_root bench/results/quality/data --data_version <version> [--max_len 128] [--out fit.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossdistill.data.eval_sets import retrieval_set_from_rows  # noqa: E402
from crossdistill.data.versions import DataVersion  # noqa: E402
from crossdistill.evaluate.bi_encoder import cut  # noqa: E402
from crossdistill.evaluate.metrics import ranking_metrics, top_k_run  # noqa: E402
from crossdistill.evaluate.retrieval import qrels_dict  # noqa: E402
from crossdistill.models.rotation import principal_axes  # noqa: E402

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
DIMS = (384, 128, 64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model_path", required=True)
    p.add_argument("--data_root", default="preprocessed")
    p.add_argument("--data_version", required=True)
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    version = DataVersion(Path(a.data_root), a.data_version)
    corpus = {json.loads(x)["_id"]: json.loads(x)["text"] for x in version.corpus_file.read_text().splitlines() if x}
    model = SentenceTransformer(a.model_path, device="cpu")
    model.max_seq_length = a.max_len
    prompts = model.prompts or {}

    def encode(texts, side):
        return model.encode([prompts.get(side, "") + t for t in texts], batch_size=64, normalize_embeddings=True,
                            convert_to_numpy=True)

    t0 = time.time()
    splits = {s: retrieval_set_from_rows(version.split(s), corpus)[0] for s in ("val", "test")}
    doc_ids = list(splits["test"].corpus)
    docs = encode([splits["test"].corpus[d] for d in doc_ids], "passage")
    queries = {s: encode(list(rs.queries.values()), "query") for s, rs in splits.items()}
    train = version.split("train")
    fit_p = encode(list(dict.fromkeys([*train["positive"], *train.get("negative", [])])), "passage")
    fit_q = encode(list(dict.fromkeys(train["anchor"])), "query")
    print(f"encoded {len(docs)} passages, {sum(map(len, queries.values()))} val/test queries, {len(fit_p)} training "
          f"passages and {len(fit_q)} training queries in {time.time() - t0:.0f} s", flush=True)

    def ndcg(split, axes, dim):
        rs = splits[split]
        scores = cut(queries[split] @ axes.T, dim) @ cut(docs @ axes.T, dim).T
        return ranking_metrics(qrels_dict(rs.qrels), top_k_run(list(rs.queries), doc_ids, scores, 100))["ndcg@10"]

    rows = []
    for alpha in ALPHAS:
        fit = np.vstack([np.sqrt(1 - alpha) * fit_p / np.sqrt(len(fit_p)), np.sqrt(alpha) * fit_q / np.sqrt(len(fit_q))])
        axes = principal_axes(fit)
        row = {"alpha": alpha, **{s: {str(d): round(ndcg(s, axes, d), 4) for d in DIMS} for s in splits}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"model_path": a.model_path, "data_version": a.data_version,
                                           "max_len": a.max_len, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
