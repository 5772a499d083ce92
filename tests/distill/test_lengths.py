"""Queries and passages at their own lengths (issue #48, FlagEmbedding's query_max_len / passage_max_len): the lengths
reach the tokenizer in training, in the student's encoding for the guard and validation, in the evaluation, and are
recorded where a user finds them."""

import json

import numpy as np
import pytest
import torch

from conftest import STUDENT_ARGS, assert_usage_error, run_in_process

LONG = " ".join(["The protein binds the receptor and the cells divide faster in the treated group."] * 12)


@pytest.fixture(scope="module")
def student(tiny_minilm):
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent

    return BiEncoderStudent.load(resolve_model(str(tiny_minilm)), 128, query_max_len=16, passage_max_len=40)


def test_a_long_query_is_cut_at_query_max_len_and_a_long_passage_at_passage_max_len(student):
    assert (student.query_max_len, student.passage_max_len) == (16, 40)
    assert student.st.max_seq_length == 40  # what the saved folder keeps
    tok = student.st.tokenizer
    full = tok(LONG)["input_ids"]
    assert len(full) > 100
    # the uncached path (sentence-transformers' own preprocess, under the side's length)
    q, p = student._features([LONG], "query"), student._features([LONG], "passage")
    assert q["input_ids"].shape == (1, 16) and p["input_ids"].shape == (1, 40)
    assert q["input_ids"][0, :15].tolist() == full[:15] and p["input_ids"][0, :39].tolist() == full[:39]
    assert student.st.max_seq_length == 40  # restored after the query's call
    # the cached path (pretokenised once for training): the very same tensors
    student.pretokenize([LONG], "query")
    student.pretokenize([LONG], "passage")
    assert torch.equal(student._features([LONG], "query")["input_ids"], q["input_ids"])
    assert torch.equal(student._features([LONG], "passage")["input_ids"], p["input_ids"])
    with torch.no_grad():
        eq, ep = student([[LONG], [LONG]], ["query", "passage"])
    assert not torch.allclose(eq, ep)  # one text, two lengths, two embeddings


def test_the_students_cosines_encode_each_side_at_its_length(student, tiny_minilm):
    from sentence_transformers import SentenceTransformer

    cos = student.cosines([LONG], [LONG, "short passage"], batch_size=4)
    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    st.max_seq_length = 16
    q = st.encode([LONG], normalize_embeddings=True)
    st.max_seq_length = 40
    p = st.encode([LONG, "short passage"], normalize_embeddings=True)
    assert np.allclose(cos, q @ p.T, atol=1e-5)
    assert student.st.max_seq_length == 40


def test_the_evaluations_encoding_takes_a_side_with_its_length(tiny_minilm):
    from crossdistill.evaluate.bi_encoder import encode, load_bi_encoder
    from crossdistill.models.sides import Side

    model, _ = load_bi_encoder(str(tiny_minilm), 128)
    cut = model.tokenizer.decode(model.tokenizer(LONG)["input_ids"][1:15])  # the first 14 word pieces of LONG
    a, b = encode(model, [LONG], Side("", 16), 4), encode(model, [cut], Side("", 16), 4)
    assert np.allclose(a, b, atol=1e-5) and model.max_seq_length == 128
    assert not np.allclose(a, encode(model, [LONG], "", 4), atol=1e-3)  # a plain prefix: the model's own length


def test_the_monitor_evaluates_a_run_at_its_own_lengths(tmp_path):
    from crossdistill.monitor.commands import evaluation_command

    (tmp_path / "distillation_config.json").write_text("{}")
    (tmp_path / "training_args.json").write_text(json.dumps({"data_version": "v", "max_len": 128, "query_max_len": 64,
                                                             "passage_max_len": 256, "student_name": "minilm-l6"}))
    cmd = evaluation_command(tmp_path)
    assert cmd[cmd.index("--query_max_len") + 1] == "64" and cmd[cmd.index("--passage_max_len") + 1] == "256"
    (tmp_path / "training_args.json").write_text(json.dumps({"data_version": "v", "max_len": 96, "query_max_len": None,
                                                             "passage_max_len": None}))
    cmd = evaluation_command(tmp_path)
    assert "--query_max_len" not in cmd and cmd[cmd.index("--max_len") + 1] == "96"


def test_a_length_past_the_models_limit_names_its_flag(tmp_path, tiny_teacher, tiny_minilm, scifact_version):
    root, v = scifact_version
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "s",
                          "--passage_max_len", "1024")
    assert_usage_error(proc, "--passage_max_len 1024 is longer than the student", "pass --passage_max_len 512 or less")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_student_trained_at_two_lengths_records_them_and_is_evaluated_at_them(
        tmp_path, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    from sentence_transformers import SentenceTransformer

    root, v = scifact_version
    out = tmp_path / "s"
    args = list(STUDENT_ARGS)
    args[args.index("--epochs") + 1] = "1"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", out, *args,
                          "--query_max_len", "16", "--passage_max_len", "64", env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((out / "distillation_config.json").read_text())
    assert (config["query_max_len"], config["passage_max_len"], config["max_len"]) == (16, 64, 48)
    card = (out / "README.md").read_text()
    assert "queries 16 tokens, passages 64" in card and "model.max_seq_length = 16" in card
    assert SentenceTransformer(str(out), device="cpu").max_seq_length == 64
    ev = tmp_path / "eval"
    proc = run_in_process("evaluate_final_model.py", "--model_path", out, "--data_root", root, "--data_version", v,
                          "--output_dir", ev)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((ev / "bi_encoder_evaluation_results.json").read_text())
    assert res["lengths"] == {"query": 16, "passage": 64}  # the lengths it was trained at, without a flag
    ev2 = tmp_path / "eval2"
    proc = run_in_process("evaluate_final_model.py", "--model_path", out, "--data_root", root, "--data_version", v,
                          "--output_dir", ev2, "--query_max_len", "32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((ev2 / "bi_encoder_evaluation_results.json").read_text())["lengths"] == {"query": 32, "passage": 64}
