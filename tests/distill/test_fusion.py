"""Teacher fusion: spec parsing, per-query z-scores, and BM25 scores of real SciFact candidates."""

import numpy as np
import pytest

from crossdistill.core.errors import UsageError
from crossdistill.distill.soft_labels import positives_first
from crossdistill.teachers.fusion import bm25_candidate_scores, fuse, parse_fusion, run_standardised, zscore


def test_parse_fusion_specs_and_errors():
    assert parse_fusion("none") == {} and parse_fusion(None) == {} and parse_fusion("") == {}
    assert parse_fusion("bm25=0.5") == {"bm25": 0.5}
    assert parse_fusion("bm25=0.5, student=0.25") == {"bm25": 0.5, "student": 0.25}
    for bad, fragment in [("bm25", "source=weight"), ("tfidf=1", "source=weight"), ("bm25=x", "must be a number"),
                          ("bm25=-1", "between 0 and 1000"), ("bm25=inf", "between 0 and 1000")]:
        with pytest.raises(UsageError, match=fragment):
            parse_fusion(bad)


def test_positives_first_reassigns_the_lists_own_values():
    # the teacher puts negative 1 above the positive (index 2): the positive takes the top value, the negatives keep
    # their order (1 > 3 > 0) over the values left
    out = positives_first(np.array([0.5, 3.0, 1.0, 2.0]), [False, False, True, False])
    np.testing.assert_array_equal(out, np.array([0.5, 2.0, 3.0, 1.0], dtype=np.float32))
    assert sorted(out) == sorted([0.5, 3.0, 1.0, 2.0])  # the same values: the distribution's shape is kept
    # two positives: they take the two highest values, in the teacher's order between them
    out = positives_first(np.array([4.0, -1.0, 0.0, 2.0]), [False, True, True, False])
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0, -1.0])
    # already in order, no positive (a pseudo-query), or no negative: unchanged
    for scores, pos in [([3.0, 1.0, 2.0], [True, False, False]), ([1.0, 2.0], [False, False]), ([1.0, 2.0], [True, True])]:
        np.testing.assert_array_equal(positives_first(np.array(scores), pos), scores)
    # ties keep the given order (stable)
    np.testing.assert_array_equal(positives_first(np.array([1.0, 1.0, 1.0]), [False, True, False]), [1.0, 1.0, 1.0])


def test_fuse_hand_values():
    teacher = [np.array([2.0, 0.0, -2.0]), np.array([1.0, 1.0])]
    bm25 = [np.array([0.0, 3.0, 0.0]), np.array([5.0, 1.0])]
    # z(teacher1) = [1.2247, 0, -1.2247]; z(bm25_1) = [-0.7071, 1.4142, -0.7071]
    out = fuse(teacher, {"bm25": bm25}, {"bm25": 0.5})
    z_t = np.array([2.0, 0.0, -2.0]) / np.sqrt(8 / 3)
    z_b = (np.array([0.0, 3.0, 0.0]) - 1.0) / np.sqrt(2.0)
    np.testing.assert_allclose(out[0], z_t + 0.5 * z_b, rtol=1e-5)
    np.testing.assert_allclose(out[1], [0.5, -0.5], rtol=1e-6)  # constant teacher list -> zeros; bm25 z = [1, -1]
    np.testing.assert_allclose(zscore(np.array([3.0, 3.0])), [0.0, 0.0])


def test_run_norm_keeps_an_unsure_list_flat():
    # list 0: the teacher separates its candidates clearly; list 1: it barely does. Per-list z-scores give both the
    # same spread; the run-wide scale keeps list 1 nearly flat
    teacher = [np.array([4.0, 0.0, 0.0, 0.0]), np.array([0.1, 0.0, 0.0, 0.0])]
    z = fuse(teacher, {}, {}, norm="list")
    np.testing.assert_allclose(z[0], z[1], rtol=1e-5)
    r = run_standardised(teacher)
    # centred: [3, -1, -1, -1] and [0.075, -0.025, -0.025, -0.025]; pooled sd = sqrt((12 + 0.0075) / 8)
    sd = np.sqrt((12 + 0.0075) / 8)
    np.testing.assert_allclose(r[0], np.array([3.0, -1, -1, -1]) / sd, rtol=1e-6)
    np.testing.assert_allclose(r[1], np.array([0.075, -0.025, -0.025, -0.025]) / sd, rtol=1e-6)
    assert np.ptp(r[1]) < 0.1 < 2 < np.ptp(r[0])
    # with a second source: each on its own run-wide scale, weighted, summed
    bm25 = [np.array([0.0, 2.0, 0.0, 0.0]), np.array([0.0, 0.0, 2.0, 0.0])]
    out = fuse(teacher, {"bm25": bm25}, {"bm25": 0.5}, norm="run")
    for i in range(2):
        np.testing.assert_allclose(out[i], r[i] + 0.5 * run_standardised(bm25)[i], rtol=1e-5)
    assert out[1].argmax() == 2  # where the teacher is unsure, BM25 decides
    assert fuse(teacher, {"bm25": bm25}, {"bm25": 0.5}, norm="list")[1].argmax() == 0  # z-scores: the teacher's noise wins
    flat = run_standardised([np.array([1.0, 1.0]), np.array([2.0])])  # every list constant: zeros
    assert [f.tolist() for f in flat] == [[0.0, 0.0], [0.0]]
    with pytest.raises(ValueError, match="fusion norm"):
        fuse(teacher, {}, {}, norm="query")


def test_bm25_candidate_scores_rank_the_lexical_match_first(scifact_version):
    from crossdistill.data import versions as data

    root, version = scifact_version
    df = data.read_triplets(root / version / "train.csv")
    rows = df.drop_duplicates("anchor").head(5)
    queries = list(rows["anchor"])
    positives = list(rows["positive"])
    cands = [[p, positives[(i + 1) % 5]] for i, p in enumerate(positives)]  # own positive vs another query's
    scores = bm25_candidate_scores(queries, cands)
    assert [s.shape for s in scores] == [(2,)] * 5
    assert all(np.isfinite(s).all() and (s >= 0).all() for s in scores)
    # a claim shares far more words with its own abstract than with another claim's
    assert sum(int(s[0] > s[1]) for s in scores) >= 4


def test_guard_judges_the_fused_teacher_the_student_will_learn_from():
    """With --teacher_fusion the guard reranks with the fused scores: a teacher that ranks every list backwards
    still passes when BM25 (weight 2) puts the lexical match first."""

    import pandas as pd

    from crossdistill.data.eval_sets import TripletPool
    from crossdistill.distill.guard import teacher_guard
    from crossdistill.teachers.ensemble import Teachers
    from crossdistill.teachers.kinds import TeacherKind

    queries = ["alpha beta gamma", "delta epsilon zeta"]
    passages = ["alpha beta gamma text", "unrelated words here", "delta epsilon zeta text", "other filler words"]
    pool = TripletPool(pd.DataFrame(), queries, passages, [(0, 0, 1), (1, 2, 3)])  # positives: q0 -> d0, q1 -> d2
    student_cos = np.array([[0.2, 0.9, 0.1, 0.0], [0.1, 0.0, 0.3, 0.8]])  # the student ranks the positives second
    class Backwards(TeacherKind):  # a teacher kind that ranks every list backwards
        name, fingerprint = "backwards", "b"

        def score(self, pairs, **kw):
            return np.array([-5.0 if "text" in p else 5.0 for _, p in pairs], dtype=np.float32), {}

    guard = lambda fusion: teacher_guard(Teachers([Backwards()], [1.0]), pool, student_cos, guard_k=2, batch_size=8,
                                         fusion=fusion, soft_labels="logit")
    alone = guard({})
    assert alone["teacher_rerank_mrr@10"] == 0.5 and alone["student_mrr@10"] == 0.5 and alone["fused"] == []
    fused = guard({"bm25": 2.0})
    assert fused["teacher_rerank_mrr@10"] == 1.0 and fused["fused"] == ["bm25"]


def test_one_soft_label_builder_bm25_idf_over_the_given_pool():
    """Training lists and the guard build soft labels with one function; BM25's IDF comes from the pool it is given
    (the corpus when there is one), so the same (query, candidates) get the same fused labels on both sides."""
    from crossdistill.teachers.fusion import build_soft_labels

    queries = ["rare gene expression"]
    cands = [["rare gene expression in mice", "gene expression in cells"]]
    logits = [np.array([0.5, 0.4], dtype=np.float32)]
    corpus = cands[0] + [f"gene study number {i}" for i in range(30)]  # "gene" common in the corpus, "rare" not
    a = build_soft_labels(logits, queries, cands, "logit", {"bm25": 1.0}, bm25_pool=corpus)
    b = build_soft_labels(logits, queries, cands, "logit", {"bm25": 1.0}, bm25_pool=list(reversed(corpus)))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)  # the same collection, in any order: the same labels
    alone = build_soft_labels(logits, queries, cands, "logit", {})
    np.testing.assert_array_equal(alone[0], logits[0])
    probs = build_soft_labels(logits, queries, cands, "prob", {})
    np.testing.assert_allclose(probs[0], 1 / (1 + np.exp(-logits[0])), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot be fused"):
        build_soft_labels(logits, queries, cands, "prob", {"bm25": 1.0})


def test_soft_labels_prob_with_fusion_is_refused():
    from conftest import load_script

    parse = load_script("train_distillation_pipeline.py").parse_args
    with pytest.raises(UsageError, match="--soft_labels prob"):
        parse(["--teacher_path", "t", "--output_dir", "o", "--teacher_fusion", "bm25=1", "--soft_labels", "prob"])
    with pytest.raises(UsageError, match="--soft_labels prob"):
        parse(["--teacher_path", "t", "--output_dir", "o", "--teacher_fusion", "bm25=1", "--recipe", "original"])
    assert parse(["--teacher_path", "t", "--output_dir", "o", "--teacher_fusion", "bm25=1"]).soft_labels == "logit"
    # --fusion_norm scales the fusion's sources: without a fusion it would do nothing, so it is refused
    with pytest.raises(UsageError, match="--fusion_norm run sets how --teacher_fusion scales"):
        parse(["--teacher_path", "t", "--output_dir", "o", "--fusion_norm", "run"])
    assert parse(["--teacher_path", "t", "--output_dir", "o", "--teacher_fusion", "bm25=1", "--fusion_norm",
                  "run"]).fusion_norm == "run"


@pytest.mark.slow
def test_a_dense_member_joins_the_teacher(tiny_teacher, tiny_minilm, scifact_version, score_cache_env, tmp_path):
    """Issue #35's lever: --teacher_fusion dense=W fuses the cosines of --fusion_model (e.g. a student trained on the
    labels alone) into the soft labels, for the training lists and the guard alike; one without the other is refused."""
    import json

    from conftest import assert_usage_error, run_in_process

    root, v = scifact_version
    args = ["--teacher_path", tiny_teacher, "--student_name", tiny_minilm, "--data_root", root, "--data_version", v,
            "--epochs", "1", "--K", "4", "--max_samples", "24", "--max_val_samples", "20", "--max_len", "32",
            "--val_pool", "csv", "--allow_weaker_teacher"]
    proc = run_in_process("train_distillation_pipeline.py", *args, "--output_dir", tmp_path / "x",
                          "--teacher_fusion", "bm25=1,dense=1")
    assert_usage_error(proc, "--fusion_model")
    proc = run_in_process("train_distillation_pipeline.py", *args, "--output_dir", tmp_path / "s",
                          "--teacher_fusion", "bm25=1,dense=1", "--fusion_model", tiny_minilm, env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher fused with bm25 x1, dense x1" in proc.stdout
    guard = json.loads((tmp_path / "s" / "metrics.json").read_text())["guard"]
    assert guard["fused"] == ["bm25", "dense"]
    # the dense member is the starting student here, so the guard's fused labels equal those of `student=1`
    # --positives_first reorders the training lists' soft labels only: the guard still judges the teacher as it is
    proc = run_in_process("train_distillation_pipeline.py", *args, "--output_dir", tmp_path / "t",
                          "--teacher_fusion", "bm25=1,student=1", "--positives_first", env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    same = metrics["guard"]
    assert abs(same["teacher_rerank_mrr@10"] - guard["teacher_rerank_mrr@10"]) < 1e-9
    first = metrics["teacher_scores"]["positives_first"]
    assert first["labelled_lists"] == metrics["candidates"]["queries"] and 0 < first["reordered"] <= first["labelled_lists"]
    assert f"positives first in {first['reordered']} of {first['labelled_lists']} labelled lists" in proc.stdout
    # --fusion_norm run: the same sources on one scale per run, for the training lists and the guard alike; the
    # run records it (a resume with the other norm would mix two teachers)
    proc = run_in_process("train_distillation_pipeline.py", *args, "--output_dir", tmp_path / "r",
                          "--teacher_fusion", "bm25=1,student=1", "--fusion_norm", "run", env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher fused with bm25 x1, student x1 (each source on one scale for the whole run)" in proc.stdout
    run_norm = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert run_norm["guard"]["fused"] == ["bm25", "student"] and 0 <= run_norm["guard"]["teacher_rerank_mrr@10"] <= 1
    assert json.loads((tmp_path / "r" / "training_args.json").read_text())["fusion_norm"] == "run"
