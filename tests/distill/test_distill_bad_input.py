"""Hostile input against the student stage: teachers that are not finished, flags that cannot train anything, overwrites
that must leave the finished run whole. Each test names its issue (#14, #26, #38)."""

import json
import shutil

import pytest

from conftest import SCIFACT, assert_usage_error, run_in_process, snapshot
from crossdistill.core.errors import UsageError


def test_max_len_beyond_the_model_is_refused_at_start(tmp_path, tiny_minilm, scifact_version, tiny_teacher):
    """Issue #14."""
    root, v = scifact_version
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", root / v / "test.csv",
                      "--output_dir", tmp_path / "e", "--max_len", "4096")
    assert_usage_error(proc, "--max_len 4096 is longer than", "512")
    assert not (tmp_path / "e").exists()


def test_a_half_published_teacher_is_refused_by_name(tmp_path):
    """Issue #14."""
    from crossdistill.models.teacher_folder import inspect_teacher

    t = tmp_path / "teacher"
    t.mkdir()
    (t / "config.json").write_text("{}")
    (t / "lora_config.json").write_text("{}")
    with pytest.raises(UsageError, match="no weights"):
        inspect_teacher(t)


def test_a_student_is_never_published_over_its_teacher(tmp_path, tiny_teacher, tiny_minilm, scifact_version,
                                                        score_cache_env):
    """Issue #26: 4."""
    root, v = scifact_version
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    before = snapshot(teacher)
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--output_dir", teacher,
                          "--student_name", tiny_minilm, "--data_root", root, "--data_version", v, "--overwrite",
                          env=score_cache_env)
    assert_usage_error(proc, "holds a teacher folder", "not a student one")
    assert snapshot(teacher) == before
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--output_dir", teacher / "student",
                          "--student_name", tiny_minilm, "--data_root", root, "--data_version", v, env=score_cache_env)
    assert_usage_error(proc, "--output_dir", "lies inside --teacher_path")
    assert snapshot(teacher) == before


# --------------------------------------------------------------------------- 5, 6: a failed --overwrite changes nothing
@pytest.mark.slow
@pytest.mark.parametrize("problem", ["student_name", "csv_cell", "max_len"])
def test_overwrite_with_a_bad_input_leaves_the_finished_run_whole(tmp_path, finished_student, tiny_teacher, tiny_minilm,
                                                                  scifact_version, score_cache_env, problem):
    """Issue #26: 5: every input is validated before the folder is claimed: done.json and events.jsonl stay as they were."""
    root, v = scifact_version
    before = snapshot(finished_student)
    args = ["--teacher_path", tiny_teacher, "--output_dir", finished_student, "--student_name", tiny_minilm, "--data_root",
            root, "--data_version", v, "--overwrite", "--max_len", "48"]
    if problem == "student_name":
        args[args.index("--student_name") + 1] = str(tmp_path / "no-such-model")
    elif problem == "max_len":
        args[args.index("--max_len") + 1] = "100000"
    else:
        from crossdistill.data.versions import read_triplets, write_triplets

        data = tmp_path / "data"
        shutil.copytree(root / v, data / v)
        df = read_triplets(data / v / "train.csv")
        df.loc[3, "positive"] = " "
        write_triplets(df, data / v / "train.csv")
        args[args.index("--data_root") + 1] = str(data)
    proc = run_in_process("train_distillation_pipeline.py", *args, env=score_cache_env)
    assert_usage_error(proc)
    assert snapshot(finished_student) == before


@pytest.mark.slow
def test_guard_refusal_under_overwrite_restores_events_too(finished_student, tiny_teacher, tiny_minilm, scifact_version,
                                                           score_cache_env):
    """Issue #26: 6: the weak tiny teacher is refused by the guard after the folder was claimed: the previous result comes back
    exactly, events.jsonl included, and nothing of the refused run is left."""
    from conftest import STUDENT_ARGS

    root, v = scifact_version
    before = snapshot(finished_student)
    args = [a for a in STUDENT_ARGS if a != "--allow_weaker_teacher"]
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", finished_student, "--overwrite", *args,
                          env=score_cache_env)
    assert_usage_error(proc, "teacher ranks worse")
    assert snapshot(finished_student) == before


# --------------------------------------------------------------------------- 12, 14, 19: silent wrongs and ranges
def test_flags_that_cannot_train_anything_are_refused(tmp_path, tiny_minilm, tiny_teacher, scifact_version):
    """Issue #26."""
    root, v = scifact_version
    student = ["--teacher_path", tiny_teacher, "--output_dir", tmp_path / "s", "--student_name", tiny_minilm, "--data_root",
               root, "--data_version", v]
    assert_usage_error(run_in_process("train_distillation_pipeline.py", *student, "--soft_weight", "0", "--infonce_weight",
                                      "0"), "every loss term is weighted 0")
    for value in ("nan", "inf", "-inf"):
        assert_usage_error(run_in_process("train_teacher_model.py", "--output_dir", tmp_path / "t", f"--pos_weight={value}"),
                           "--pos_weight must be 'auto' or a finite number")
    for seed in ("-1", str(2**32)):
        for script, extra in (("train_teacher_model.py", ["--output_dir", tmp_path / "t"]),
                              ("train_distillation_pipeline.py", student),
                              ("prepare_data.py", ["--source", SCIFACT, "--data_version", "x", "--data_root", tmp_path])):
            assert_usage_error(run_in_process(script, *extra, "--seed", seed), "--seed must be between 0 and 4294967295")
    # a prefix that alone fills --max_len: every query would be the same text
    assert_usage_error(run_in_process("train_distillation_pipeline.py", *student, "--max_len", "16", "--query_prefix",
                                      "represent this scientific claim for retrieving the abstracts that support it: ",
                                      "--allow_weaker_teacher"), "--query_prefix", "nothing of the text would remain")
    assert_usage_error(run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root,
                                      "--data_version", v, "--output_dir", tmp_path / "t", "--max_len", "12",
                                      "--passage_prefix", "a long passage prefix that fills every token of the input"),
                       "nothing of the text would remain")
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_a_teacher_without_done_json_is_refused(tmp_path, tiny_teacher, tiny_minilm, scifact_version):
    """Issue #26: 14."""
    root, v = scifact_version
    half = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, half)
    (half / "done.json").unlink()
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", half, "--output_dir", tmp_path / "s",
                          "--student_name", tiny_minilm, "--data_root", root, "--data_version", v)
    assert_usage_error(proc, "no done.json", "--resume")


@pytest.mark.parametrize("flag, value", [("--weight_decay", "1e300"), ("--scale", "1e300"), ("--soft_weight", "1e300"),
                                         ("--infonce_weight", "inf"), ("--teacher_fusion", "bm25=1e300")])
def test_absurd_loss_settings_name_the_flag(flag, value, tmp_path):
    """Issue #38: At 1e300 these ended as 'loss became nan, lower --lr' and the monitor halved the lr."""
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tmp_path, "--output_dir", tmp_path / "o",
                          f"{flag}={value}")
    assert_usage_error(proc, flag.split("=")[0])
    assert not (tmp_path / "o").exists()


def test_pseudo_queries_without_a_teacher_model_are_refused(tmp_path, tiny_minilm, scifact_version):
    """Issue #35: pseudo-queries need a model to score their lists; a scores file cannot."""
    root, v = scifact_version
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [2.0], "neg_scores": [-1.0]}) + "\n")
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_scores", scores, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "s", "--pseudo_queries", "8")
    assert_usage_error(proc, "--pseudo_queries 8 needs a teacher model", "--teacher_path")
    assert_usage_error(run_in_process("train_distillation_pipeline.py", "--output_dir", tmp_path / "s", "--pseudo_queries",
                                      "-1"), "--pseudo_queries must be between 0 and 1000000")
    assert not (tmp_path / "s").exists()


def test_a_cross_encoder_as_the_fusion_model_is_refused(tmp_path, tiny_minilm, tiny_teacher, scifact_version):
    """Issue #46 (4): --fusion_model took any folder; a cross-encoder's mean-pooled states were fused as "dense"."""
    root, v = scifact_version
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "o", "--teacher_fusion",
                          "dense=1", "--fusion_model", tiny_teacher)
    assert_usage_error(proc, "--fusion_model", "is a cross-encoder")
    assert not (tmp_path / "o").exists()


def test_teacher_scores_that_cannot_teach_are_refused(tmp_path, tiny_minilm, scifact_version):
    """Issue #46 (5): records without 'neg' give one-passage lists, whose distillation term is identically 0; a file of
    nothing else is refused, a file with some is counted (lists_from_scores' one_passage_lists, said in the log)."""
    import pandas as pd

    from crossdistill.data.teacher_scores import check_record, lists_from_scores

    root, v = scifact_version
    train = pd.read_csv(f"{root}/{v}/train.csv")
    queries = list(dict.fromkeys(train["anchor"]))[:6]
    pos = {q: train[train["anchor"] == q]["positive"].iloc[0] for q in queries}
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"query": q, "pos": [pos[q]], "neg": [], "pos_scores": [3.0]}) + "\n"
                              for q in queries))
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_scores", scores, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "s")
    assert_usage_error(proc, "every one of the 6 scored lists", "holds a single passage", "--soft_weight 0")
    assert not (tmp_path / "s").exists()
    records = [check_record({"query": q, "pos": [pos[q]], "neg": [] if i % 2 else ["other"], "pos_scores": [1.0],
                             **({} if i % 2 else {"neg_scores": [0.0]})}, f"line {i}") for i, q in enumerate(queries)]
    _, _, stats = lists_from_scores(records, queries, 4)
    assert stats["one_passage_lists"] == 3 and stats["queries"] == 6


def test_probabilities_and_the_same_scores_as_logits_give_the_same_soft_labels(tmp_path, scifact_version):
    """Issue #47 (1): CrossEncoder.predict writes sigmoid probabilities by default; taken as logits they flattened the
    soft labels. --score_kind auto sees every score in [0, 1] and turns them into logits, and says so."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from crossdistill.data.teacher_scores import check_record
    from crossdistill.distill.config import StudentConfig
    from crossdistill.distill.soft_labels import scored_lists

    root, v = scifact_version
    train = pd.read_csv(f"{root}/{v}/train.csv")
    rng = np.random.default_rng(0)
    logit_records, prob_records = [], []
    for q, rows in list(train.groupby("anchor", sort=False))[:12]:
        pos, neg = [rows["positive"].iloc[0]], list(dict.fromkeys(rows["negative"]))[:3]
        ls = rng.normal(0, 3, 1 + len(neg)).round(3).tolist()
        logit_records.append({"query": q, "pos": pos, "neg": neg, "pos_scores": ls[:1], "neg_scores": ls[1:]})
        ps = (1 / (1 + np.exp(-np.asarray(ls)))).tolist()
        prob_records.append({**logit_records[-1], "pos_scores": ps[:1], "neg_scores": ps[1:]})

    def run(records, kind="auto"):
        lines, path = [], tmp_path / "s.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        cfg = StudentConfig.parse(["--teacher_scores", str(path), "--output_dir", "o", "--K", "4", "--score_kind", kind,
                                   "--scale", "20"])
        inputs = SimpleNamespace(cfg=cfg, train=train, scores_path=str(path),
                                 scores=[check_record(r, f"line {i}") for i, r in enumerate(records)])
        _, logits, _, info = scored_lists(inputs, lines.append)
        return logits, info, lines

    as_logits, info_l, lines_l = run(logit_records)
    as_probs, info_p, lines_p = run(prob_records)
    assert info_l["score_kind"] == "logit" and info_p["score_kind"] == "probability"
    assert any("taken as probabilities" in x for x in lines_p) and any("taken as logits" in x for x in lines_l)
    assert any("every one of its" in x and "lies in [0, 1]" in x for x in lines_p)
    for a, b in zip(as_logits, as_probs):
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(np.exp(a) / np.exp(a).sum(), np.exp(b) / np.exp(b).sum(), atol=1e-5)
    forced, info_f, _ = run(prob_records, "logit")  # the user says they are logits: taken as they are
    assert info_f["score_kind"] == "logit" and np.allclose(forced[0], [r for r in prob_records[0]["pos_scores"] +
                                                                      prob_records[0]["neg_scores"]][:len(forced[0])])
    with pytest.raises(UsageError, match="--score_kind probability, but the file holds the score"):
        run(logit_records, "probability")
