"""Matryoshka students (issue #48): trained with every loss term at each prefix dimension, published with the
dimensions recorded, loaded by sentence-transformers with truncate_dim, and evaluated at each trained dimension."""

import json

import numpy as np
import pytest

from conftest import STUDENT_ARGS, assert_usage_error, run_in_process

pytestmark = pytest.mark.slow


def _train_one_epoch(out, tiny_teacher, tiny_minilm, scifact_version, score_cache_env, *extra):
    """The tiny student for one epoch with ``extra`` flags; asserts it finished."""
    root, v = scifact_version
    args = [a for a in STUDENT_ARGS]
    args[args.index("--epochs") + 1] = "1"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", out, *args, *extra,
                          env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_matryoshka_student_is_published_loaded_truncated_and_evaluated_per_dimension(
        tmp_path, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    from sentence_transformers import SentenceTransformer

    root, v = scifact_version
    out = tmp_path / "m"
    _train_one_epoch(out, tiny_teacher, tiny_minilm, scifact_version, score_cache_env, "--matryoshka_dims", "384,128,64")
    assert json.loads((out / "distillation_config.json").read_text())["matryoshka_dims"] == [384, 128, 64]
    assert "Matryoshka dimensions" in (out / "README.md").read_text() and "truncate_dim=64" in (out / "README.md").read_text()
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert any("loss@64" in e for e in events if e["event"] == "step")
    small = SentenceTransformer(str(out), device="cpu", truncate_dim=64)
    emb = small.encode(["a query about cells"], normalize_embeddings=True)
    assert emb.shape == (1, 64) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-5)
    ev = tmp_path / "eval"
    proc = run_in_process("evaluate_final_model.py", "--model_path", out, "--data_root", root, "--data_version", v,
                          "--output_dir", ev, "--bm25")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((ev / "bi_encoder_evaluation_results.json").read_text())
    by_dim = res["matryoshka"]["by_dim"]
    assert set(by_dim) == {"384", "128", "64"} and all(0 <= m["ndcg@10"] <= 1 for m in by_dim.values())
    scope = res["matryoshka"]["scope"]
    assert abs(by_dim["384"]["ndcg@10"] - res["retrieval"]["student"][scope]["ndcg@10"]) < 1e-6  # full size: the same
    assert (ev / "bi_encoder_matryoshka.png").is_file() and "## Matryoshka" in (ev / "report.md").read_text()
    # --truncate_dim: the student evaluated cut to 64, which is what the per-dimension row said
    ev64 = tmp_path / "eval64"
    proc = run_in_process("evaluate_final_model.py", "--model_path", out, "--data_root", root, "--data_version", v,
                          "--output_dir", ev64, "--truncate_dim", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res64 = json.loads((ev64 / "bi_encoder_evaluation_results.json").read_text())
    assert res64["truncate_dim"] == 64 and "matryoshka" not in res64
    assert abs(res64["retrieval"]["student"][scope]["ndcg@10"] - by_dim["64"]["ndcg@10"]) < 1e-4
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", out, "--data_root", root,
                                      "--data_version", v, "--output_dir", tmp_path / "e2", "--truncate_dim", "512"),
                       "--truncate_dim 512 is more than the 384 dimensions")
    assert_usage_error(run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name",
                                      tiny_minilm, "--data_root", root, "--data_version", v, "--output_dir",
                                      tmp_path / "x", "--matryoshka_dims", "512,64"), "goes up to 512")


def test_a_student_published_with_a_pca_rotation_keeps_its_cosines_and_is_evaluated_per_dimension(
        tmp_path, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    from sentence_transformers import SentenceTransformer

    root, v = scifact_version
    out = tmp_path / "r"
    _train_one_epoch(out, tiny_teacher, tiny_minilm, scifact_version, score_cache_env, "--pca_rotation")
    config = json.loads((out / "distillation_config.json").read_text())
    assert config["matryoshka_dims"] == [] and config["truncate_dims"] == [384, 256, 128, 64]
    rotation = config["pca_rotation"]
    assert rotation["passages"] > 384 and 0.5 < rotation["energy_kept"]["64"] < rotation["energy_kept"]["128"] < 1
    assert rotation["fit"] == "both" and rotation["queries"] > 100
    assert "PCA rotation" in (out / "README.md").read_text()
    model = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]
    weight = model[2].linear.weight.detach().numpy()
    assert np.allclose(weight @ weight.T, np.eye(384), atol=1e-5)  # a rotation
    texts = [json.loads(x)["text"] for x in (root / v / "corpus.jsonl").read_text().splitlines()[:12]]
    unrotated = SentenceTransformer(modules=[model[0], model[1], model[3]], device="cpu")
    a, b = model.encode(texts, normalize_embeddings=True), unrotated.encode(texts, normalize_embeddings=True)
    assert np.abs(a @ a.T - b @ b.T).max() < 1e-5  # every cosine, so every score, is the unrotated student's
    ev = tmp_path / "eval"
    proc = run_in_process("evaluate_final_model.py", "--model_path", out, "--data_root", root, "--data_version", v,
                          "--output_dir", ev)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((ev / "bi_encoder_evaluation_results.json").read_text())
    assert set(res["matryoshka"]["by_dim"]) == {"384", "256", "128", "64"}
    assert res["matryoshka"]["pca_rotation"] and not res["matryoshka"]["trained_at_dims"]


def test_matryoshka_prefixes_on_the_starting_students_axes_are_published_and_found_again_on_resume(
        tmp_path, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    """--matryoshka_pca_start: the rotation is the principal axes of the starting student's embeddings of the training
    passages, it is published as the folder's Dense module, and a run crashed and resumed finds the same one (the
    buffer is no checkpoint entry) and ends with the same weights."""
    from sentence_transformers import SentenceTransformer

    from crossdistill.data.versions import DataVersion
    from crossdistill.models.rotation import principal_axes, sides_weighed_equally

    root, v = scifact_version
    flags = ("--matryoshka_dims", "384,64", "--matryoshka_pca_start")
    out = tmp_path / "straight"
    _train_one_epoch(out, tiny_teacher, tiny_minilm, scifact_version, score_cache_env, *flags)
    config = json.loads((out / "distillation_config.json").read_text())
    assert config["matryoshka_dims"] == [384, 64] and config["pca_rotation"] is None
    start = config["matryoshka_pca_start"]
    assert start["fit"] == "both" and start["passages"] > 384 and start["queries"] > 100
    assert 0.5 < start["energy_kept"]["64"] < start["energy_kept"]["128"] < 1
    assert 0.5 < start["query_energy_kept"]["64"] < start["query_energy_kept"]["128"] < 1
    assert "principal axes of the starting student" in (out / "README.md").read_text()
    model = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]
    published = model[2].linear.weight.detach().numpy()
    # the rotation is the starting student's principal axes of the training passages and queries, each side weighing
    # the same (the leading axes: trailing ones of near-equal energy may turn by rounding)
    train = DataVersion(root, v).split("train")
    passages = list(dict.fromkeys([*train["positive"], *train["negative"]]))
    queries = list(dict.fromkeys(train["anchor"]))
    base = SentenceTransformer(str(tiny_minilm), device="cpu")
    base.max_seq_length = 48
    axes = principal_axes(sides_weighed_equally([base.encode(texts, batch_size=64, normalize_embeddings=True)
                                                 for texts in (passages, queries)]))
    assert np.abs(np.abs((published[:64] * axes[:64]).sum(axis=1)) - 1).max() < 1e-3
    # crashed after the step-4 checkpoint, resumed: the same rotation, the same weights
    crashed = tmp_path / "crashed"
    faults = {"CROSSDISTILL_ALLOW_FAULTS": "1", "CROSSDISTILL_FAULTS": json.dumps({"crash_at_steps": [5]})}
    root_args = ("--teacher_path", tiny_teacher, "--student_name", tiny_minilm, "--data_root", root, "--data_version", v,
                 "--output_dir", crashed)
    args = [a for a in STUDENT_ARGS]
    args[args.index("--epochs") + 1] = "1"
    with pytest.raises(RuntimeError, match="injected crash at step 5"):
        run_in_process("train_distillation_pipeline.py", *root_args, *args, *flags, env={**score_cache_env, **faults})
    assert not (crashed / "done.json").exists()
    proc = run_in_process("train_distillation_pipeline.py", *root_args, *args, *flags, "--resume", env=score_cache_env)
    assert proc.returncode == 0 and "resumed from" in proc.stdout, proc.stderr[-2000:]
    from conftest import same_weights

    assert same_weights(out, crashed)
    resumed = SentenceTransformer(str(crashed), device="cpu")[2].linear.weight.detach().numpy()
    assert np.array_equal(resumed, published)
    assert_usage_error(run_in_process("train_distillation_pipeline.py", *root_args[:-1], tmp_path / "x",
                                      "--matryoshka_pca_start"), "--matryoshka_pca_start", "--matryoshka_dims")
