"""Stage 3: metric values on hand-checked cases, the original's JSON keys, figures/report, and bad input."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import SCIFACT, assert_usage_error, run_in_process
from crossdistill.evaluate.bi_encoder import score_statistics
from crossdistill.evaluate.metrics import paired_comparison, ranking_metrics

ORIGINAL_KEYS = {"avg_positive_score", "std_positive_score", "avg_negative_score", "std_negative_score", "avg_margin",
                 "std_margin", "uniformity", "num_samples"}


@pytest.mark.slow
def test_ranking_metrics_hand_checked():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q1": {"x": 0.9, "a": 0.8, "y": 0.1},   # relevant at rank 2
           "q2": {"b": 0.7, "z": 0.6, "c": 0.5}}   # relevant at ranks 1 and 3
    m = ranking_metrics(qrels, run, ("mrr@10", "ndcg@10", "recall@1", "recall@10", "map"))
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert m["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx((0.5 + (1 + 2 / 3) / 2) / 2)


def test_matrix_metrics_agree_with_ranx_on_random_matrices_with_ties():
    """The in-loop numpy metrics (best epoch, guard) against ranx, on 60 random score matrices: with ties (integer
    scores in 0..3) ours break them by column and ranking_metrics by document id (zero-padded ids sort like the
    columns), without ties both equal plain ranx."""
    import numpy as np

    from crossdistill.evaluate.metrics import matrix_ranking_metrics

    rng = np.random.default_rng(0)
    for trial in range(60):
        nq, nd = int(rng.integers(1, 7)), int(rng.integers(2, 40))
        ties = trial % 2 == 0
        scores = rng.integers(0, 4, size=(nq, nd)).astype(np.float32) if ties else rng.random((nq, nd)).astype(np.float32)
        rel = [set(rng.choice(nd, size=int(rng.integers(1, min(4, nd) + 1)), replace=False).tolist()) for _ in range(nq)]
        ours = matrix_ranking_metrics(scores, rel)
        qrels = {f"q{i}": {f"d{j:03d}": 1 for j in r} for i, r in enumerate(rel)}
        run = {f"q{i}": {f"d{j:03d}": float(scores[i, j]) for j in range(nd)} for i in range(nq)}
        theirs = ranking_metrics(qrels, run, ("mrr@10", "ndcg@10", "recall@10"))
        for k in ours:
            assert ours[k] == pytest.approx(theirs[k], abs=1e-9), (trial, k, ours[k], theirs[k])


def test_per_query_metric_names_each_query():
    from crossdistill.evaluate.metrics import per_query_metric

    qrels = {"q2": {"d1": 1}, "q10": {"d2": 1}, "q1": {"d9": 1}}  # not in sorted order; q1 absent from the run
    run = {"q10": {"d1": 0.5, "d2": 0.9}, "q2": {"d1": 0.1, "d2": 0.9}}
    assert per_query_metric(qrels, run, "mrr@10") == {"q2": 0.5, "q10": 1.0, "q1": 0.0}


def test_paired_comparison_hand_checked():
    # MRR@10 per query: baseline 1/2, 1, 1/3, 1/2; system 1, 1, 1, 1/4 -> differences 1/2, 0, 2/3, -1/4
    qrels = {q: {"a": 1} for q in ("q1", "q2", "q3", "q4")}
    base = {"q1": {"x": 2, "a": 1}, "q2": {"a": 2, "x": 1}, "q3": {"x": 3, "y": 2, "a": 1}, "q4": {"x": 2, "a": 1}}
    system = {"q1": {"a": 2, "x": 1}, "q2": {"a": 2, "x": 1}, "q3": {"a": 3, "y": 2, "x": 1},
              "q4": {"x": 4, "y": 3, "z": 2, "a": 1}}
    res = paired_comparison(qrels, base, system, "mrr@10")
    d = np.array([1 / 2, 0, 2 / 3, -1 / 4])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    from scipy.stats import t as student_t
    assert res["p_value"] == pytest.approx(2 * student_t.sf(abs(t), len(d) - 1), rel=1e-6)
    assert (res["wins"], res["ties"], res["losses"]) == (2, 1, 1)
    assert res["metric"] == "mrr@10" and res["stat_test"] == "student"


def test_score_statistics_hand_checked():
    pos = np.array([0.9, 0.6, 0.8])
    neg = np.array([0.2, 0.7, 0.1])
    s = score_statistics(pos, neg, ["a", "a", "b"])
    assert s["avg_positive_score"] == pytest.approx(0.7667, abs=1e-4)
    assert s["avg_negative_score"] == pytest.approx(1 / 3)
    assert s["avg_margin"] == pytest.approx((0.7 - 0.1 + 0.7) / 3)
    assert s["accuracy"] == pytest.approx(2 / 3)
    # AUC: 9 positive/negative pairs, the positive wins in 8 (0.6 < 0.7 loses)
    assert s["roc_auc"] == pytest.approx(8 / 9)
    assert s["uniformity"]["all_variance"] == pytest.approx(np.var([0.9, 0.6, 0.8, 0.2, 0.7, 0.1]))
    assert s["per_query_margin"]["queries"] == 2 and s["per_query_margin"]["mean"] == pytest.approx((0.3 + 0.7) / 2)
    assert s["targets"] == {"mean_negative_le_0.15": False, "margin_ge_0.7": False}
    assert ORIGINAL_KEYS <= set(s)


@pytest.fixture(scope="module")
def small_test_csv(tmp_path_factory, scifact_version):
    root, v = scifact_version
    df = pd.read_csv(root / v / "test.csv", dtype=str, keep_default_na=False).head(40)
    path = tmp_path_factory.mktemp("eval") / "test.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_full_evaluation_with_baselines(tmp_path, reference_student, tiny_teacher, tiny_minilm, small_test_csv):
    student, _ = reference_student
    out = tmp_path / "eval"
    proc = run_in_process("evaluate_final_model.py", "--model_path", student, "--test_data", small_test_csv, "--output_dir", out,
                      "--batch_size", "16", "--base_model", tiny_minilm, "--bm25", "--teacher_path", tiny_teacher,
                      "--rerank_k", "5", "--max_len", "48")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "bi_encoder_evaluation_results.json").read_text())
    assert ORIGINAL_KEYS <= set(res) and res["num_samples"] == 40
    assert set(res["uniformity"]) == {"positive_variance", "negative_variance", "all_variance"}
    systems = res["retrieval"]
    assert set(systems) == {"student", f"base model ({tiny_minilm})", "BM25", "teacher reranks student top-5"}
    for r in systems.values():
        assert {"mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100", "map"} <= set(r["pool"])
        assert 0 <= r["pool"]["ndcg@10"] <= 1
    assert res["throughput"]["student"]["queries_per_s"] > 0 and res["throughput"]["teacher_pairs_per_s"] > 0
    for name in ("bi_encoder_evaluation_analysis.png", "bi_encoder_retrieval_comparison.png", "report.md"):
        assert (out / name).stat().st_size > 1000
    assert "| student |" in (out / "report.md").read_text() and "positive" in proc.stdout


def test_document_ids_reach_ranx_at_one_width():
    """ranx compiles per string width of the run's document ids; padded to one width, every evaluation after the
    first uses numba's cache (a new pool size used to cost a 50-80 s compile). Same metrics, same ids back."""
    from crossdistill.evaluate.metrics import _fixed_width_ids

    qrels, run = {"q1": {"d7": 1}}, {"q1": {"d7": 0.5, "d10000": 0.5, "d8": 0.1}}
    pq, pr = _fixed_width_ids(qrels, run)
    assert {len(d) for t in (pq, pr) for docs in t.values() for d in docs} == {64}
    assert [d.rstrip() for d in pr["q1"]] == list(run["q1"]) and list(pr["q1"].values()) == [0.5, 0.5, 0.1]
    long = {"q1": {"x" * 70: 0.3}}
    assert {len(d) for d in _fixed_width_ids(qrels, long)[1]["q1"]} == {128}
    clash = {"q1": {"a": 0.2, "a ": 0.1}}  # would merge once padded: left as they are
    assert _fixed_width_ids(qrels, clash)[1] == clash
    assert ranking_metrics(qrels, run) == ranking_metrics(pq, pr)


@pytest.mark.slow
def test_full_corpus_retrieval(tmp_path, tiny_minilm, small_test_csv):
    """Over the whole SciFact corpus (5,183 passages), for the BM25 baseline and a bi-encoder."""
    out = tmp_path / "eval"
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", small_test_csv, "--output_dir", out,
                      "--beir_dir", SCIFACT, "--bm25", "--max_len", "32", "--batch_size", "128")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "bi_encoder_evaluation_results.json").read_text())
    assert res["beir"]["corpus_passages"] == 5183
    assert res["retrieval"]["BM25"]["corpus"]["ndcg@10"] == pytest.approx(0.666, abs=0.002)  # as published (0.665)
    assert 0.1 < res["retrieval"]["student"]["corpus"]["ndcg@10"] < 0.8


def test_bad_inputs(tmp_path, tiny_teacher, tiny_minilm, small_test_csv):
    args = ["--output_dir", tmp_path / "o"]
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tmp_path / "nope" / "student",
                                      "--test_data", small_test_csv, *args), "does not exist")
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_teacher, "--test_data", small_test_csv,
                                      *args), "is a cross-encoder", "not a bi-encoder")
    bad = tmp_path / "bad.csv"
    bad.write_text("query,doc\nq,d\n")
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", bad, *args),
                       "lacks column(s)")
    bad.write_text("anchor,positive,negative\n")
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", bad, *args),
                       "no rows")
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "1", "title": "", "text": "a"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q", "text": "a"}\n')
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", small_test_csv,
                                      "--beir_dir", beir, *args), "qrels/test.tsv")
    assert not (tmp_path / "o").exists()
