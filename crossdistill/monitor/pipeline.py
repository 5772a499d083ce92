"""The whole job — teacher, student, evaluation — as commands, one preset a line of why (what each preset measured,
and when it changed: docs/results.md)."""

from __future__ import annotations

import sys
from pathlib import Path

# the cpu presets' student training (#35: 128 tokens, K 4, 725 pseudo-queries, two epochs, the teacher fused with BM25
# and the starting student, one scale per fused source)
_CPU_STUDENT = ["--epochs", "2", "--max_len", "128", "--K", "4", "--val_pool", "csv", "--teacher_fusion", "bm25=1,student=1",
                "--guard_k", "10", "--attention_dropout", "0", "--pseudo_queries", "725", "--fusion_norm", "run"]
# a preset's teacher is the cross-encoder stage (crossdistill.teach) unless it names a bi-encoder teacher: a bigger
# embedding model fine-tuned on the labels alone by the student stage itself (crossdistill.distill, --soft_weight 0)
PRESETS = {
    # the measured recipe: every script at its defaults (README "Results"; about 5 minutes on one H200)
    "default": {"teacher": [], "student": [], "suffix": ""},
    # the recipe cut to ~20 minutes on 2 CPU cores (18.2 on an Intel Xeon): a one-epoch teacher (128 tokens) fused with
    # BM25 and the starting student, the student at 128 tokens, K 4, 725 pseudo-queries, two epochs, one scale per fused
    # source (docs/results.md, #35); trained for Matryoshka dimensions on the starting student's principal axes and
    # published turned onto its own (#48, 2026-12-08: val nDCG@10 at full size 0.706 -> 0.711, its first 128
    # dimensions 0.642 -> 0.706, its first 64 0.527 -> 0.686)
    "cpu": {
        "teacher": ["--epochs", "1", "--max_len", "128", "--max_samples", "3000", "--max_val_samples", "300",
                    "--attention_dropout", "0"],
        "student": [*_CPU_STUDENT, "--matryoshka_dims", "384,256,128,64", "--matryoshka_pca_start", "--pca_rotation"],
        "suffix": "_cpu",
    },
    # a teacher that knows more than the labels, at CPU size (~2.5 hours on 2 cores, docs/results.md, #49):
    # nomic-embed-text-v1.5 fine-tuned on the labels at 256 tokens (bf16), the student learns its scale x cosine over
    # each list and over every passage of each batch, on the cpu preset's own training (queries at 64 tokens, passages
    # at 256 since 2026-12-07: val 0.700 -> 0.733)
    "cpu_big": {
        "teacher_stage": "distill",
        "teacher": ["--student_name", "nomic-embed-text-v1.5", "--soft_weight", "0", "--K", "2", "--max_len", "256",
                    "--epochs", "2", "--batch_size", "16", "--val_pool", "csv", "--max_val_samples", "300",
                    "--mixed_precision", "bf16"],
        "student": ["--epochs", "2", "--max_len", "128", "--K", "4", "--val_pool", "csv", "--guard_k", "10",
                    "--attention_dropout", "0", "--pseudo_queries", "725", "--in_batch_kl_weight", "1",
                    "--query_max_len", "64", "--passage_max_len", "256", "--pca_rotation"],
        "suffix": "_cpu_big",
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
# the cpu preset with the student reading queries at 64 tokens and passages at 256 (#48: it won on val, 0.706 -> 0.719;
# test 0.704 -> 0.724) at ~2.5x the student's time (65 minutes in all on a 2-core AMD EPYC): over the 30 minutes the cpu
# preset may take (#49), so a preset of its own; measured without Matryoshka, so it keeps the cpu student as it was then
PRESETS["cpu_long"] = {"teacher": list(PRESETS["cpu"]["teacher"]),
                       "student": [*_CPU_STUDENT, "--pca_rotation", "--query_max_len", "64", "--passage_max_len", "256"],
                       "suffix": "_cpu_long"}


def pipeline_commands(preset: str, data_version: str, models_dir: str, teacher_model: str | None,
                      student_name: str | None, teacher_extra: list[str], student_extra: list[str],
                      data_root: str = "preprocessed") -> list[tuple[str, Path, list[str]]]:
    """[(stage, output_dir, command)] for the teacher and the student of ``preset``, in ``<models_dir>/<data_version>/``:
    a finished teacher of one data version is never taken for another's (the monitor skips a finished stage). The
    stages run as modules of the installed package (``python -m crossdistill.<stage>``), from any folder."""
    p = PRESETS[preset]
    dense = p.get("teacher_stage") == "distill"  # a bi-encoder teacher, trained by the student stage on the labels
    teacher_dir = Path(models_dir) / data_version / f"{'bi_encoder_teacher' if dense else 'cross_encoder_teacher'}{p['suffix']}"
    student_dir = Path(models_dir) / data_version / f"bi_encoder_distilled{p['suffix']}"
    common = ["--data_version", data_version, "--data_root", data_root]
    base = (["--student_name", teacher_model] if dense else ["--model_name", teacher_model]) if teacher_model else []
    teacher = [sys.executable, "-m", f"crossdistill.{'distill' if dense else 'teach'}", *common, "--output_dir",
               str(teacher_dir), *p["teacher"], *base, *teacher_extra]
    student = [sys.executable, "-m", "crossdistill.distill", *common, "--teacher_path", str(teacher_dir),
               "--output_dir", str(student_dir), *p["student"], *(["--student_name", student_name] if student_name else []),
               *student_extra]
    return [("teacher", teacher_dir, teacher), ("student", student_dir, student)]
