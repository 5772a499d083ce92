"""``evaluate_final_model.py``'s logic: evaluate the student and its baselines, write JSON, figures and report.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.core.files import write_json
from crossdistill.core.ownership import atomic_dir, check_output_dir, mark_owner, refuse_overlap
from crossdistill.core.training import peak_memory
from crossdistill.data import eval_sets, sources
from crossdistill.data.eval_sets import RetrievalSet, TripletPool
from crossdistill.data.versions import DataVersion
from crossdistill.evaluate.bi_encoder import evaluate_bi_encoder, load_bi_encoder, retrieval_table
from crossdistill.evaluate.config import EvalConfig
from crossdistill.evaluate.metrics import ranking_metrics, top_k_run
from crossdistill.evaluate.plots import analysis_figure, comparison_figure, matryoshka_figure
from crossdistill.evaluate.retrieval import qrels_dict
from crossdistill.evaluate.student import load_student, trained_dims, trained_settings
from crossdistill.models.sides import Side

RESULTS = "bi_encoder_evaluation_results.json"
ANALYSIS_PNG = "bi_encoder_evaluation_analysis.png"
COMPARISON_PNG = "bi_encoder_retrieval_comparison.png"
MATRYOSHKA_PNG = "bi_encoder_matryoshka.png"


def _bm25(ts: TripletPool, full: RetrievalSet | None) -> dict:
    from crossdistill.data.mining import BM25Miner
    from crossdistill.evaluate.retrieval import bm25_run

    out = {"pool_run": top_k_run(ts.query_ids(), ts.passage_ids(), BM25Miner(ts.passages).scores(ts.queries), 100)}
    out["pool"] = ranking_metrics(ts.qrels, out["pool_run"])
    if full is not None:
        out["corpus_run"] = bm25_run(full.corpus, full.queries, 100)
        out["corpus"] = ranking_metrics(qrels_dict(full.qrels), out["corpus_run"])
    return out


def _rerank(teachers, run: dict, queries: dict, corpus: dict, k: int, qrels: dict, batch_size: int):
    """The teachers rerank the top-k of ``run``; returns (metrics, pairs/s, (teacher probs, student scores, labels))."""
    from crossdistill.evaluate.retrieval import rerank

    t0 = time.time()
    rr = rerank(teachers, run, queries=queries, corpus=corpus, k=k, batch_size=batch_size)
    secs = time.time() - t0
    n_pairs = sum(len(v) for v in rr.values())
    t_prob, s_norm, is_pos = [], [], []
    for q, docs in rr.items():
        for d, logit in docs.items():
            t_prob.append(1 / (1 + np.exp(-logit)))
            s_norm.append((run[q][d] + 1) / 2)
            is_pos.append(d in qrels.get(q, {}))
    return ranking_metrics(qrels, rr), n_pairs / max(secs, 1e-9), (np.array(t_prob), np.array(s_norm), np.array(is_pos))


def full_corpus(cfg: EvalConfig, ts: TripletPool, log=print) -> tuple[RetrievalSet | None, dict | None]:
    """The full corpus the test queries are also retrieved over, and what it is: a BEIR folder (``--beir_dir``), your
    files (``--corpus`` with ``--queries``/``--qrels``, or ``--corpus`` alone with the test CSV's queries and
    positives), or the prepared version's own ``corpus.jsonl`` (``--data_version``); None without one."""
    from crossdistill.data.tables import read_texts

    if cfg.beir_dir:
        full = sources.load_beir(cfg.beir_dir, cfg.split)
        return full, {"dir": str(cfg.beir_dir), "split": cfg.split, "corpus_passages": len(full.corpus)}
    corpus_file = cfg.corpus
    if corpus_file is None and cfg.data_version:
        own = DataVersion.of(cfg).corpus_file
        corpus_file = str(own) if own else None
    if corpus_file is None:
        return None, None
    corpus = read_texts(corpus_file, "passage")
    if cfg.queries:  # the user's own queries and relevance judgements over their corpus
        queries = read_texts(cfg.queries, "query")
        qrels, dropped = _read_judgements(cfg.qrels, queries, corpus)
        if not qrels:
            raise UsageError(f"{cfg.qrels} has no positive pair whose query ({cfg.queries}) and passage ({corpus_file}) "
                             "exist; check the ids")
        said = {k: v for k, v in dropped.items() if v}
        if said:
            log(f"qrels {cfg.qrels}: " + "; ".join(f"{v} {k.replace('_', ' ')}" for k, v in said.items()))
        full = RetrievalSet(corpus, {q: queries[q] for q in qrels}, qrels)
        return full, {"dir": str(corpus_file), "split": str(cfg.qrels), "corpus_passages": len(full.corpus),
                      "positives_added": 0, "qrels": dropped}
    else:  # the test CSV's queries and positives, ranked over the corpus (a positive it lacks joins it)
        full, _, stats = eval_sets.retrieval_set_from_rows(ts.df[["anchor", "positive"]], corpus)
        added = stats["passages_added_to_corpus"]
        if added:
            log(f"{added} positive passage(s) of the test CSV are not in {corpus_file}: added to the corpus for retrieval")
    return full, {"dir": str(corpus_file), "split": "test" if not cfg.queries else str(cfg.qrels),
                  "corpus_passages": len(full.corpus), "positives_added": added}


def _read_judgements(path: str, queries: dict, corpus: dict) -> tuple[dict[str, list[str]], dict]:
    """Positive pairs of a qrels file, and what was left out and why: pairs whose query or passage id is unknown,
    pairs judged 0 or below (not relevant), and graded scores (above 1), which count as relevant alike: the metrics are
    binary (every score > 0 is one relevant passage). A score that is not a finite number is refused, naming it."""
    import math

    from crossdistill.data.tables import read_qrels_file

    qrels: dict[str, list[str]] = {}
    dropped = {"pairs_with_unknown_query_id": 0, "pairs_with_unknown_passage_id": 0, "pairs_judged_not_relevant": 0,
               "graded_pairs_binarised": 0}
    for q, d, score in read_qrels_file(path):
        if not math.isfinite(score):
            raise UsageError(f"{path}: the pair ({q}, {d}) has the score {score!r}; scores must be finite numbers")
        if q not in queries:
            dropped["pairs_with_unknown_query_id"] += 1
        elif d not in corpus:
            dropped["pairs_with_unknown_passage_id"] += 1
        elif score <= 0:
            dropped["pairs_judged_not_relevant"] += 1
        elif d not in qrels.get(q, []):
            dropped["graded_pairs_binarised"] += int(score > 1)
            qrels.setdefault(q, []).append(d)
    return qrels, dropped


def check_data_matches(cfg: EvalConfig) -> None:
    """Refuse an evaluation that would silently score the wrong queries: ``--test_data`` of one prepared version ranked
    over another version's corpus, or a student scored on a version prepared again (re-split) after it was trained,
    whose test queries may be among its training queries."""
    version = DataVersion.of(cfg).folder if cfg.data_version else None
    test_parent = Path(cfg.test_data).resolve().parent
    if version is not None and version.is_dir() and (test_parent / "prepare_config.json").is_file() and \
            test_parent != version.resolve() and not cfg.corpus and not cfg.beir_dir:
        raise UsageError(f"--test_data {cfg.test_data} belongs to the data version {test_parent.name}, but --data_version is "
                         f"{cfg.data_version}: its queries would be ranked over another version's corpus; pass "
                         f"--data_version {test_parent.name} (or leave --test_data out)")
    trained = Path(cfg.model_path) / "distillation_config.json"
    if not trained.is_file() or version is None:
        return
    try:
        recorded = json.loads(trained.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    fingerprint = recorded.get("data_fingerprint") if isinstance(recorded, dict) else None
    if recorded.get("data_version") != cfg.data_version or not isinstance(fingerprint, dict):
        return
    now = DataVersion.of(cfg).fingerprint()
    changed = [n for n in ("train.csv", "test.csv") if n in fingerprint and n in now and fingerprint[n] != now[n]]
    if changed:
        raise UsageError(f"data version {cfg.data_version} was prepared again after {cfg.model_path} was trained on it "
                         f"({' and '.join(changed)} differ): its test queries may be among the student's training "
                         "queries; evaluate on the version it was trained on (prepare it under a new name next time), or "
                         "train the student again")


def run_evaluation(cfg: EvalConfig, log=print) -> Path:
    model_path = Path(cfg.model_path)
    if not model_path.exists() and ("/" in cfg.model_path or model_path.suffix):
        raise UsageError(f"--model_path {model_path} does not exist; pass the student folder written by "
                         "train_distillation_pipeline.py")
    refuse_overlap(cfg.output_dir, "--output_dir", {"--model_path": cfg.model_path, "--teacher_path": cfg.teacher_path,
                                                     "--test_data": cfg.test_data, "--beir_dir": cfg.beir_dir,
                                                     "--corpus": cfg.corpus, "--queries": cfg.queries,
                                                     "--qrels": cfg.qrels, "--base_model": cfg.base_model})
    check_data_matches(cfg)
    out_dir = check_output_dir(cfg.output_dir, cfg.overwrite, "evaluation")
    ts = TripletPool.from_csv(cfg.test_data)
    full, full_info = full_corpus(cfg, ts, log)
    teacher = _open_teachers(cfg.teacher_path) if cfg.teacher_path else None
    model, prefixes = load_student(cfg)
    log(f"evaluating {cfg.model_path} ({cfg.backend}) on {len(ts.df)} test triplets ({len(ts.queries)} queries, "
        f"{len(ts.passages)} passages)" + (f" and {len(full.qrels)} queries over {len(full.corpus)} passages of "
                                           f"{full_info['dir']}" if full else ""))
    # a Matryoshka or PCA-rotated student: its quality at each of its dimensions too, from the same embeddings
    dims = trained_dims(cfg.model_path) if not cfg.truncate_dim else []
    results: dict[str, dict] = {"student": evaluate_bi_encoder(model, prefixes, ts, cfg.batch_size, full, dims=dims)}
    results["student"]["lengths"] = {"query": prefixes[0].max_len or model.max_seq_length,
                                     "passage": prefixes[1].max_len or model.max_seq_length}
    if dims:
        results["student"]["matryoshka"] = results["student"].pop("by_dim")
    if cfg.base_model:
        q_len, p_len = prefixes[0].max_len, prefixes[1].max_len  # the baseline at the student's lengths
        base, base_resolved = load_bi_encoder(cfg.base_model, p_len, query_max_len=q_len)
        results[f"base model ({cfg.base_model})"] = evaluate_bi_encoder(
            base, (Side(base_resolved.query_prefix, q_len), Side(base_resolved.passage_prefix, p_len)), ts,
            cfg.batch_size, full)
        del base
    if cfg.bm25:
        results["BM25"] = _bm25(ts, full)
    scatter, throughput = None, {"student": results["student"]["throughput"]}
    if teacher is not None:
        student = results["student"]
        pool_q, pool_d = dict(zip(ts.query_ids(), ts.queries)), dict(zip(ts.passage_ids(), ts.passages))
        entry = {}
        entry["pool"], pps, scatter = _rerank(teacher, student["pool_run"], pool_q, pool_d, cfg.rerank_k, ts.qrels,
                                              cfg.batch_size)
        if full is not None:
            entry["corpus"], pps, scatter = _rerank(teacher, student["corpus_run"], full.queries, full.corpus,
                                                    cfg.rerank_k, qrels_dict(full.qrels), cfg.batch_size)
        results[f"teacher reranks student top-{cfg.rerank_k}"] = entry
        throughput["teacher_pairs_per_s"] = pps
    _write(cfg, out_dir, ts, results, throughput, scatter, full_info, log)
    return out_dir


def _open_teachers(path: str):
    """The teacher(s) of ``--teacher_path`` (any kind :func:`~crossdistill.teachers.kinds.open_kind` accepts), their
    scores computed once through their caches, on the GPU when there is one."""
    import torch

    from crossdistill.teachers.ensemble import open_teachers

    return open_teachers(path, device="cuda" if torch.cuda.is_available() else "cpu")


def _write(cfg: EvalConfig, out_dir: Path, ts: TripletPool, results: dict, throughput: dict, scatter, full_info, log):
    """bi_encoder_evaluation_results.json, the two figures and report.md, written into place at once."""
    student = results["student"]
    comparison = {name: {scope: r[scope] for scope in ("pool", "corpus") if scope in r} for name, r in results.items()}
    stats = student["statistics"]
    report = {**stats, "retrieval": comparison, "throughput": throughput, "peak_rss_mib": peak_memory()["peak_rss_mib"],
              "model_path": str(cfg.model_path), "backend": cfg.backend, "test_data": str(cfg.test_data),
              "truncate_dim": cfg.truncate_dim, "lengths": student.get("lengths"),
              "beir": full_info, "baselines": [n for n in results if n != "student"],
              "statistics_by_system": {n: r["statistics"] for n, r in results.items() if "statistics" in r}}
    table_scope = "corpus" if full_info is not None else "pool"
    if "matryoshka" in student:
        trained = trained_settings(cfg.model_path)
        report["matryoshka"] = {"scope": table_scope, "by_dim": student["matryoshka"],
                                "trained_at_dims": bool(trained.get("matryoshka_dims")),
                                "pca_rotation": bool(trained.get("pca_rotation"))}
    table = retrieval_table(comparison)
    samples = _samples(ts, student["_pos"], student["_neg"], cfg.num_samples)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / RESULTS, report)
        analysis_figure(student["_pos"], student["_neg"], stats, tmp / ANALYSIS_PNG,
                        f"Bi-encoder evaluation: {Path(str(cfg.model_path)).name} ({stats['num_samples']} test triplets)")
        comparison_figure(student["_pos"], student["_neg"], {n: c[table_scope] for n, c in comparison.items()
                                                             if table_scope in c},
                          tmp / COMPARISON_PNG, scatter, "full corpus" if full_info is not None else "test pool")
        if "matryoshka" in report:
            matryoshka_figure(report["matryoshka"]["by_dim"], {n: c[table_scope] for n, c in comparison.items()
                                                              if table_scope in c}, tmp / MATRYOSHKA_PNG,
                              "full corpus" if full_info is not None else "test pool")
        (tmp / "report.md").write_text(_report_md(report, table, samples), encoding="utf-8")
        mark_owner(tmp, "evaluation")
    log("\n" + _headline(stats) + "\n\n" + table)
    if "matryoshka" in report:
        log("\nMatryoshka (" + table_scope + "): " + " | ".join(
            f"{d}: nDCG@10 {m['ndcg@10']:.4f}" for d, m in report["matryoshka"]["by_dim"].items()))
    log("\nsample pairs:\n" + "\n".join(f"  [{s['positive_score']:.3f} vs {s['negative_score']:.3f}] {s['anchor'][:90]}"
                                          for s in samples))
    log(f"\nthroughput: {throughput}  peak RSS {report['peak_rss_mib']} MiB\nwrote {out_dir}")


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
              f"![comparison]({COMPARISON_PNG})", "",
              *(["## Matryoshka: by embedding dimension", "", "| dimensions | nDCG@10 | MRR@10 | Recall@100 |",
                 "|---|---|---|---|",
                 *[f"| {d} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m.get('recall@100', float('nan')):.4f} |"
                   for d, m in s["matryoshka"]["by_dim"].items()], "", f"![matryoshka]({MATRYOSHKA_PNG})", ""]
                if "matryoshka" in s else []),
              "## Throughput (this machine)", "", "```",
              json.dumps(s["throughput"], indent=1), f"peak RSS {s['peak_rss_mib']} MiB", "```", "", "## Sample pairs", ""]
    for x in samples:
        lines.append(f"- **{x['positive_score']:.3f}** vs {x['negative_score']:.3f}: {x['anchor']}")
    return "\n".join(lines) + "\n"
