"""``evaluate_final_model.py``'s logic: evaluate the student and its baselines, write JSON, figures and report.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .errors import UsageError
from .data import TripletPool
from .evaluation import evaluate_bi_encoder, load_bi_encoder, peak_rss_mb, retrieval_table
from .fsutil import atomic_dir, check_output_dir, mark_owner, refuse_overlap, write_json
from .metrics import ranking_metrics, top_k_run
from .plots import analysis_figure, comparison_figure

RESULTS = "bi_encoder_evaluation_results.json"
ANALYSIS_PNG = "bi_encoder_evaluation_analysis.png"
COMPARISON_PNG = "bi_encoder_retrieval_comparison.png"


def _prefixes(resolved) -> tuple[str, str]:
    return resolved.query_prefix, resolved.passage_prefix


def _bm25(ts: TripletPool, beir) -> dict:
    from .mining import BM25Miner
    from .retrieval import bm25_run

    out = {"pool_run": top_k_run(ts.query_ids(), ts.passage_ids(), BM25Miner(ts.passages).scores(ts.queries), 100)}
    out["pool"] = ranking_metrics(ts.qrels, out["pool_run"])
    if beir is not None:
        out["corpus_run"] = bm25_run(beir.corpus, beir.queries, 100)
        out["corpus"] = ranking_metrics({q: {d: 1 for d in ds} for q, ds in beir.qrels.items()}, out["corpus_run"])
    return out


def _rerank(teacher, run: dict, queries: dict, corpus: dict, k: int, qrels: dict, batch_size: int):
    """Teacher reranks the top-k of ``run``; returns (metrics, run, pairs/s, teacher probs, student scores, labels)."""
    from .retrieval import rerank

    t0 = time.time()
    rr = rerank(teacher, run, queries=queries, corpus=corpus, k=k, batch_size=batch_size, show_progress=True)
    secs = time.time() - t0
    n_pairs = sum(len(v) for v in rr.values())
    t_prob, s_norm, is_pos = [], [], []
    for q, docs in rr.items():
        for d, logit in docs.items():
            t_prob.append(1 / (1 + np.exp(-logit)))
            s_norm.append((run[q][d] + 1) / 2)
            is_pos.append(d in qrels.get(q, {}))
    return ranking_metrics(qrels, rr), n_pairs / max(secs, 1e-9), (np.array(t_prob), np.array(s_norm), np.array(is_pos))


def run_evaluation(args, log=print) -> Path:
    from .data import load_beir

    model_path = Path(args.model_path)
    if not model_path.exists() and ("/" in args.model_path or model_path.suffix):
        raise UsageError(f"--model_path {model_path} does not exist; pass the student folder written by "
                         "train_distillation_pipeline.py")
    out_dir = check_output_dir(args.output_dir, args.overwrite, "evaluation")
    ts = TripletPool.from_csv(args.test_data)
    beir = load_beir(args.beir_dir, args.split) if args.beir_dir else None
    teacher = None
    if args.teacher_path:
        from .distillation import load_teacher_dir
        from .teacher import CrossEncoderTeacher

        load_teacher_dir(args.teacher_path)
        teacher = CrossEncoderTeacher.load(args.teacher_path)
        import torch

        if torch.cuda.is_available():  # reranking thousands of pairs: on the GPU when there is one
            teacher.model.to("cuda")
    model, resolved = load_bi_encoder(args.model_path, args.max_len)
    log(f"evaluating {args.model_path} on {len(ts.df)} test triplets ({len(ts.queries)} queries, {len(ts.passages)} passages)"
        + (f" and {len(beir.qrels)} queries over {len(beir.corpus)} {args.beir_dir} passages" if beir else ""))

    results: dict[str, dict] = {}
    student = evaluate_bi_encoder(model, _prefixes(resolved), ts, args.batch_size, beir)
    results["student"] = student
    if args.base_model:
        base, base_resolved = load_bi_encoder(args.base_model, args.max_len)
        results[f"base model ({args.base_model})"] = evaluate_bi_encoder(base, _prefixes(base_resolved), ts, args.batch_size, beir)
        del base
    if args.bm25:
        results["BM25"] = _bm25(ts, beir)
    scatter = None
    throughput = {"student": student["throughput"]}
    if teacher is not None:
        pool_q = dict(zip(ts.query_ids(), ts.queries))
        pool_d = dict(zip(ts.passage_ids(), ts.passages))
        m, pps, scatter = _rerank(teacher, student["pool_run"], pool_q, pool_d, args.rerank_k, ts.qrels, args.batch_size)
        entry = {"pool": m}
        if beir is not None:
            qrels_b = {q: {d: 1 for d in ds} for q, ds in beir.qrels.items()}
            entry["corpus"], pps, scatter = _rerank(teacher, student["corpus_run"], beir.queries, beir.corpus,
                                                    args.rerank_k, qrels_b, args.batch_size)
        results[f"teacher reranks student top-{args.rerank_k}"] = entry
        throughput["teacher_pairs_per_s"] = pps

    comparison = {name: {scope: r[scope] for scope in ("pool", "corpus") if scope in r} for name, r in results.items()}
    stats = student["statistics"]
    report = {**stats, "retrieval": comparison, "throughput": throughput, "peak_rss_mb": round(peak_rss_mb(), 1),
              "model_path": str(args.model_path), "test_data": str(args.test_data),
              "beir": {"dir": str(args.beir_dir), "split": args.split, "corpus_passages": len(beir.corpus)} if beir else None,
              "baselines": [n for n in results if n != "student"],
              "statistics_by_system": {n: r["statistics"] for n, r in results.items() if "statistics" in r}}
    table_scope = "corpus" if beir is not None else "pool"
    table = retrieval_table(comparison)
    samples = _samples(ts, student["_pos"], student["_neg"], args.num_samples)

    with atomic_dir(out_dir) as tmp:
        write_json(tmp / RESULTS, report)
        analysis_figure(student["_pos"], student["_neg"], stats, tmp / ANALYSIS_PNG,
                        f"Bi-encoder evaluation: {Path(str(args.model_path)).name} ({stats['num_samples']} test triplets)")
        comparison_figure(student["_pos"], student["_neg"], {n: c[table_scope] for n, c in comparison.items() if table_scope in c},
                          tmp / COMPARISON_PNG, scatter, "full corpus" if beir is not None else "test pool")
        (tmp / "report.md").write_text(_report_md(report, table, samples), encoding="utf-8")
        mark_owner(tmp, "evaluation")
    log("\n" + _headline(stats) + "\n\n" + table)
    log("\nsample pairs:\n" + "\n".join(f"  [{s['positive_score']:.3f} vs {s['negative_score']:.3f}] {s['anchor'][:90]}"
                                          for s in samples))
    log(f"\nthroughput: {throughput}  peak RSS {report['peak_rss_mb']} MB\nwrote {out_dir}")
    return out_dir


def _samples(ts: TripletPool, pos, neg, n: int) -> list[dict]:
    idx = np.linspace(0, len(ts.df) - 1, num=min(n, len(ts.df))).astype(int)
    return [{"anchor": ts.df["anchor"][i], "positive": ts.df["positive"][i][:160], "negative": ts.df["negative"][i][:160],
             "positive_score": float(pos[i]), "negative_score": float(neg[i])} for i in idx]


def _headline(s: dict) -> str:
    t = s["targets"]
    return (f"positive {s['avg_positive_score']:.4f} ± {s['std_positive_score']:.4f} | negative {s['avg_negative_score']:.4f} ± "
            f"{s['std_negative_score']:.4f} | margin {s['avg_margin']:.4f} | accuracy {s['accuracy']:.4f} | ROC AUC "
            f"{s['roc_auc']:.4f} | targets: negative<=0.15 {'met' if t['mean_negative_le_0.15'] else 'not met'}, "
            f"margin>=0.7 {'met' if t['margin_ge_0.7'] else 'not met'}")


def _report_md(report: dict, table: str, samples: list[dict]) -> str:
    s = report
    lines = [f"# Bi-encoder evaluation: `{s['model_path']}`", "", f"Test data: `{s['test_data']}` ({s['num_samples']} triplets)"
             + (f"; corpus: {s['beir']['dir']} ({s['beir']['split']}, {s['beir']['corpus_passages']} passages)" if s["beir"] else ""),
             "", "## Scores (normalised cosine, (cos + 1) / 2)", "", _headline(s), "",
             "| statistic | value |", "|---|---|"]
    for k in ("avg_positive_score", "std_positive_score", "avg_negative_score", "std_negative_score", "avg_margin",
              "std_margin", "accuracy", "roc_auc", "best_f1", "best_f1_threshold"):
        lines.append(f"| {k} | {s[k]:.4f} |")
    for k, v in s["uniformity"].items():
        lines.append(f"| uniformity {k} | {v:.5f} |")
    pq = s["per_query_margin"]
    lines += [f"| per-query margin mean / min / p10 | {pq['mean']:.4f} / {pq['min']:.4f} / {pq['p10']:.4f} |",
              f"| queries with positive margin | {100 * pq['fraction_positive']:.1f} % "
              f"({round(pq['fraction_positive'] * pq['queries'])} of {pq['queries']}) |", "",
              f"![analysis]({ANALYSIS_PNG})", "", "## Retrieval", "",
              "`pool`: all distinct passages of the test CSV; `corpus`: the full BEIR corpus.", "", table, "",
              f"![comparison]({COMPARISON_PNG})", "", "## Throughput (this machine)", "", "```",
              json.dumps(s["throughput"], indent=1), f"peak RSS {s['peak_rss_mb']} MB", "```", "", "## Sample pairs", ""]
    for x in samples:
        lines.append(f"- **{x['positive_score']:.3f}** vs {x['negative_score']:.3f}: {x['anchor']}")
    return "\n".join(lines) + "\n"
