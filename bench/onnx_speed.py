#!/usr/bin/env python
"""Serving speed and quality of a student in three forms, side by side in one run: its PyTorch weights (fp32, what
``SentenceTransformer.encode`` runs), its ONNX export (fp32) and the ONNX model with int8 weights (dynamic quantisation),
the last two written by ``crossdistill.models.export`` and run by ONNX Runtime.

For each: encoding throughput (passages/s over the first ``--passages`` SciFact passages, length-sorted batches; median
of ``--repeats`` interleaved runs), single-query latency (p50/p99 over ``--queries`` SciFact test claims encoded one at
a time), nDCG@10 / Recall@100 of SciFact test over the full 5,183-passage corpus, and the embeddings' agreement with
torch's (cosine, min and mean over the throughput sample).

  python bench/onnx_speed.py --model_path minilm-l6 --out bench/results/onnx_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _serving import add_serving_args, cpu_description, exported_copy  # noqa: E402  (bench/ is the script's own folder)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serving_args(p, passages=1024, repeats=3, out="bench/results/onnx_speed.json")
    p.add_argument("--queries", type=int, default=200, help="single-query latency samples")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from crossdistill.data.sources import load_beir
    from crossdistill.evaluate.bi_encoder import dense_search
    from crossdistill.evaluate.metrics import indexed_run, ranking_metrics
    from crossdistill.evaluate.retrieval import qrels_dict
    from crossdistill.models.onnx import OnnxEncoder
    from crossdistill.models.resolve import resolve_model

    torch.set_num_threads(a.threads)
    resolved = resolve_model(a.model_path)
    rs = load_beir(a.beir_dir, "test")
    doc_ids = list(rs.corpus)
    corpus = [rs.corpus[d] for d in doc_ids]
    qids = list(rs.qrels)
    queries = [rs.queries[q] for q in qids]
    qp, pp = resolved.query_prefix, resolved.passage_prefix
    with tempfile.TemporaryDirectory() as tmp:
        folder, export_s = exported_copy(resolved.path, tmp)
        st = SentenceTransformer(str(folder), device="cpu")
        st.max_seq_length = a.max_len
        models = {"torch_fp32": st, "onnx_fp32": OnnxEncoder(folder, "onnx", a.max_len, a.threads),
                  "onnx_int8": OnnxEncoder(folder, "onnx-int8", a.max_len, a.threads)}
        sizes = {"torch_fp32": (folder / "model.safetensors").stat().st_size,
                 "onnx_fp32": (folder / "onnx" / "model.onnx").stat().st_size,
                 "onnx_int8": (folder / "onnx" / "model_qint8_avx2.onnx").stat().st_size}

        def encode(name, texts, batch_size):
            return models[name].encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)

        sample = [pp + t for t in corpus[:a.passages]]
        speed, sample_emb = {n: [] for n in models}, {}
        for _ in range(a.repeats):  # interleaved: a slower machine moment hits every backend alike
            for n in models:
                t0 = time.perf_counter()
                sample_emb[n] = encode(n, sample, a.batch_size)
                speed[n].append(len(sample) / (time.perf_counter() - t0))
        latency = {}
        for n in models:
            encode(n, [qp + queries[0]], 1)  # warm-up
            times = []
            for q in queries[:a.queries]:
                t0 = time.perf_counter()
                encode(n, [qp + q], 1)
                times.append((time.perf_counter() - t0) * 1000)
            latency[n] = {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}
        quality = {}
        for n in models:
            idx, sc, _ = dense_search(models[n], queries, corpus, qp, pp, 100, a.batch_size)
            run = indexed_run(qids, doc_ids, idx, sc)
            quality[n] = {k: round(v, 4) for k, v in ranking_metrics(qrels_dict(rs.qrels), run, ("ndcg@10", "recall@100")).items()}
            cos = (sample_emb[n] * sample_emb["torch_fp32"]).sum(1)  # the throughput runs' embeddings, not encoded again
            quality[n]["cosine_vs_torch"] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)}
    base = statistics.median(speed["torch_fp32"])
    result = {
        **cpu_description(a.threads),
        "model": a.model_path, "max_len": a.max_len, "batch_size": a.batch_size, "passages_per_run": len(sample),
        "export_seconds": round(export_s, 1), "file_bytes": sizes,
        "passages_per_s": {n: {"median": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]} for n, v in speed.items()},
        "throughput_vs_torch_fp32": {n: round(statistics.median(v) / base, 2) for n, v in speed.items()},
        "single_query_latency": latency, "scifact_test": quality,
        "ndcg10_delta_vs_torch": {n: round(quality[n]["ndcg@10"] - quality["torch_fp32"]["ndcg@10"], 4) for n in models},
    }
    print(json.dumps(result, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
