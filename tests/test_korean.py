"""Korean end to end on a slice of KorQuAD with the offline multilingual-e5-small alias (a few real steps)."""

import json

import pandas as pd
import pytest

from conftest import KORQUAD, run_in_process


@pytest.mark.slow
def test_korean_mini_pipeline(tmp_path, e5_small):
    env = {"CROSSDISTILL_CACHE": str(e5_small.parent)}
    proc = run_in_process("prepare_data.py", "--source", KORQUAD, "--data_version", "ko", "--data_root", tmp_path,
                          "--num_negatives", "2", "--random_negatives", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for split in ("train", "val"):  # a slice keeps the 12-layer model to a few steps
        df = pd.read_csv(tmp_path / "ko" / f"{split}.csv", dtype=str, keep_default_na=False).head(12)
        assert df["anchor"].str.contains("[가-힣]").all()
        df.to_csv(tmp_path / "ko" / f"{split}.csv", index=False)
    teacher = tmp_path / "teacher"
    proc = run_in_process("train_teacher_model.py", "--model_name", "multilingual-e5-small", "--data_root", tmp_path,
                          "--data_version", "ko", "--output_dir", teacher, "--epochs", "1", "--batch_size", "8",
                          "--max_len", "32", "--use_lora", "--lora_r", "2", "--lora_alpha", "4", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((teacher / "teacher_config.json").read_text())
    assert (cfg["query_prefix"], cfg["passage_prefix"]) == ("query: ", "passage: ")
    student = tmp_path / "student"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--student_name",
                          "multilingual-e5-small", "--data_root", tmp_path, "--data_version", "ko", "--output_dir", student,
                          "--epochs", "1", "--batch_size", "2", "--K", "3", "--max_len", "32", "--use_lora", "--lora_r", "2",
                          "--lora_alpha", "4", "--allow_weaker_teacher", "--guard_k", "5", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(x) for x in (student / "events.jsonl").read_text().splitlines() if '"event": "step"' in x]
    assert steps and steps[-1]["step"] == 3  # 12 rows = 6 questions x 2 negatives, 2 questions per step
    st_cfg = json.loads((student / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"]["query"] == "query: " and st_cfg["prompts"]["passage"] == "passage: "
