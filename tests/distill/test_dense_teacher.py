"""A bi-encoder as the teacher (issue #49), end to end on SciFact rows with a 2-layer MiniLM: the student learns its
scale x cosine over the lists and, with --in_batch_kl_weight, its distribution over every passage of each batch; the
teacher's texts are encoded once, ever (a second run reads every vector from the cache); and a run with no teacher at
all learns the labels alone (--soft_weight 0)."""

import json

import pytest

from conftest import STUDENT_ARGS, run_in_process

pytestmark = pytest.mark.slow
ARGS = [a for a in STUDENT_ARGS if a != "--allow_weaker_teacher"][:-2] + ["--recipe", "ranking", "--allow_weaker_teacher"]


def _events(folder):
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def test_a_bi_encoder_teacher_teaches_in_batch_and_encodes_each_text_once(tiny_minilm, scifact_version, tmp_path):
    root, v = scifact_version
    env = {"CROSSDISTILL_CACHE": str(tmp_path / "cache")}
    common = ["--teacher_path", tiny_minilm, "--student_name", tiny_minilm, "--data_root", root, "--data_version", v,
              *ARGS, "--in_batch_kl_weight", "1", "--teacher_precision", "fp32"]
    first = run_in_process("train_distillation_pipeline.py", *common, "--output_dir", tmp_path / "a", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "bi-encoder, scale 20 x cosine, 256 tokens, fp32: as asked" in first.stdout  # the teacher reads its own length
    assert "encoding" in first.stdout and "new texts" in first.stdout
    steps = [e for e in _events(tmp_path / "a") if e["event"] == "step"]
    assert steps and all(e["in_batch_kl"] > 0 and e["soft"] > 0 for e in steps)
    card = (tmp_path / "a" / "README.md").read_text()
    assert "bi-encoder" in card and "in_batch_kl_weight" in card
    config = json.loads((tmp_path / "a" / "training_args.json").read_text())
    assert config["in_batch_kl_weight"] == 1.0 and config["teacher_precision"] == "fp32"
    # the same teacher again: every vector from the cache, nothing encoded; the same student, bit for bit
    second = run_in_process("train_distillation_pipeline.py", *common, "--output_dir", tmp_path / "b", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "new texts" not in second.stdout
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_no_teacher_at_all_learns_the_labels_alone(tiny_minilm, scifact_version, tmp_path):
    root, v = scifact_version
    proc = run_in_process("train_distillation_pipeline.py", "--student_name", tiny_minilm, "--data_root", root,
                          "--data_version", v, *ARGS, "--soft_weight", "0", "--output_dir", tmp_path / "s",
                          env={"CROSSDISTILL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher none: the labels alone (--soft_weight 0)" in proc.stdout
    assert "guard skipped: no teacher" in proc.stdout
    assert "labels alone" in (tmp_path / "s" / "README.md").read_text()
    assert json.loads((tmp_path / "s" / "distillation_config.json").read_text())["teacher_path"] is None
    refused = run_in_process("train_distillation_pipeline.py", "--student_name", tiny_minilm, "--data_root", root,
                             "--data_version", v, *ARGS, "--output_dir", tmp_path / "t")
    assert refused.returncode == 2 and "--soft_weight 0 to learn the labels alone" in refused.stderr
