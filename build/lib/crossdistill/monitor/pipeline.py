"""The whole job — teacher, student, evaluation — as commands with the original's quick/full settings."""

from __future__ import annotations

import sys
from pathlib import Path

PRESETS = {
    # the measured recipe: every script at its defaults (README "Results"; about 5 minutes on one H200)
    "default": {"teacher": [], "student": [], "suffix": ""},
    # the same recipe cut for 2 CPU cores, to run in about 20 minutes there (docs/results.md): a teacher on 3,000 rows
    # (whole queries: about 380 of the 725, one epoch) and a student with K 4 for two epochs, at 128 tokens, val on the CSV pool,
    # attention dropout off (PyTorch's fused attention: 1.2x faster on CPU), the guard on the val top-10. A teacher this
    # short is weaker than the student on its own (the guard refuses it), so its soft labels are fused per query with
    # BM25's and the starting student's own cosines, at equal weights: the combination the guard accepts on val
    # (fused val MRR@10 0.700 against the student's 0.664; BM25 alone added to the teacher: 0.650, refused). 725
    # pseudo-queries cut from the training passages join the lists (issue #35: val nDCG@10 over the corpus 0.649 ->
    # 0.669, seed 42; the student's training about 1.7x longer), and the student trains two epochs (issue #35's fourth
    # CPU session: val 0.669 -> 0.696, seed 42; 11 of the monitor's 18.6 minutes); the fused sources are put on one
    # scale per run instead of z-scored per 4-candidate list (--fusion_norm run, issue #35's fifth CPU session: val
    # nDCG@10 over the corpus 0.696 -> 0.702, mean of seeds 42-44)
    "cpu": {
        "teacher": ["--epochs", "1", "--max_len", "128", "--max_samples", "3000", "--max_val_samples", "300",
                    "--attention_dropout", "0"],
        "student": ["--epochs", "2", "--max_len", "128", "--K", "4", "--val_pool", "csv", "--teacher_fusion",
                    "bm25=1,student=1", "--guard_k", "10", "--attention_dropout", "0", "--pseudo_queries", "725",
                    "--fusion_norm", "run"],
        "suffix": "_cpu",
    },
    # the original's settings (SPEC.md), with its loss
    "quick": {
        "teacher": ["--epochs", "1", "--batch_size", "32", "--lr", "2e-5", "--use_lora", "--lora_r", "16",
                    "--lora_alpha", "32", "--max_samples", "2000"],
        "student": ["--recipe", "original", "--val_pool", "csv", "--epochs", "1", "--batch_size", "16", "--lr", "2e-5", "--K", "4", "--tau", "0.2",
                    "--contrastive_weight", "0.3", "--negative_penalty_weight", "0.4", "--use_lora", "--max_len", "128",
                    "--max_samples", "2000"],
        "suffix": "_quick",
    },
    "full": {
        "teacher": ["--epochs", "3", "--batch_size", "16", "--lr", "2e-5", "--use_lora", "--lora_r", "32",
                    "--lora_alpha", "64", "--lora_dropout", "0.1"],
        "student": ["--recipe", "original", "--epochs", "3", "--batch_size", "4", "--lr", "2e-5", "--K", "8", "--tau", "0.2",
                    "--contrastive_weight", "0.3", "--negative_penalty_weight", "0.4", "--use_lora", "--lora_r", "32",
                    "--lora_alpha", "64", "--lora_dropout", "0.1"],
        "suffix": "",
    },
}


def pipeline_commands(preset: str, data_version: str, models_dir: str, teacher_model: str | None,
                      student_name: str | None, teacher_extra: list[str], student_extra: list[str],
                      data_root: str = "preprocessed") -> list[tuple[str, Path, list[str]]]:
    """[(stage, output_dir, command)] for the teacher and the student of ``preset``, in ``<models_dir>/<data_version>/``:
    a finished teacher of one data version is never taken for another's (the monitor skips a finished stage)."""
    p = PRESETS[preset]
    teacher_dir = Path(models_dir) / data_version / f"cross_encoder_teacher{p['suffix']}"
    student_dir = Path(models_dir) / data_version / f"bi_encoder_distilled{p['suffix']}"
    common = ["--data_version", data_version, "--data_root", data_root]
    teacher = [sys.executable, "-m", "crossdistill.teach", *common, "--output_dir", str(teacher_dir), *p["teacher"],
               *(["--model_name", teacher_model] if teacher_model else []), *teacher_extra]
    student = [sys.executable, "-m", "crossdistill.distill", *common, "--teacher_path", str(teacher_dir),
               "--output_dir", str(student_dir), *p["student"], *(["--student_name", student_name] if student_name else []),
               *student_extra]
    return [("teacher", teacher_dir, teacher), ("student", student_dir, student)]
