"""The settings that define a run's candidate lists and the teachers that score them, declared once: the student
(``train_distillation_pipeline.py``) and ``teacher_scores.py`` read the same flags, so the exported scores are the
student's exact lists."""

from __future__ import annotations

from dataclasses import dataclass

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import MAX_LEN, Batched, DataLocation, Replaceable, Sampled, Seeded, setting
from crossdistill.core.training import PRECISIONS
from crossdistill.data.candidates import DEFAULT_K, DEFAULT_NEGATIVE_SOURCE
from crossdistill.data.config import Mining


@dataclass(frozen=True, kw_only=True)
class ListSettings(Seeded, Batched, Mining):
    """K candidates per query (positives, the CSV's negatives, then mined ones) and the teachers that score them."""

    teacher_path: str | None = setting(None, "the teacher: a cross-encoder (train_teacher_model.py's folder, a "
                                             "sentence-transformers CrossEncoder, a one-label transformers classifier, "
                                             "or a hub id) or a bi-encoder (a folder, alias or hub id: its scale x "
                                             "cosine); several: repeat the flag or give a comma list (their scores "
                                             "standardised per query and averaged, --teacher_weights)", repeatable=True)
    teacher_weights: str | None = setting(None, "with several --teacher_path: one weight per teacher, e.g. 2,1 "
                                                "(default equal)")
    teacher_max_len: int | None = setting(None, "tokens the teacher reads (a cross-encoder: of the pair; a bi-encoder: "
                                                "of each text); default: the teacher's own", check=MAX_LEN)
    teacher_precision: str = setting("auto", "precision of a bi-encoder teacher's encoding: 'auto' = bf16 where the "
                                             "hardware multiplies bf16 natively (a GPU that supports it, a CPU with "
                                             "AVX-512 BF16 or AMX), else fp32", choices=list(PRECISIONS))
    K: int = setting(DEFAULT_K, "candidates per query: positives, CSV negatives, mined negatives",
                     check=(lambda v: v >= 2, ">= 2"))
    negative_source: str = setting(DEFAULT_NEGATIVE_SOURCE, "how lists are filled up to K beyond the CSV's negatives",
                                   choices=["bm25", "model", "random"])
    score_cache: str | None = setting(None, "SQLite file of cross-encoder teacher scores (default: per-teacher file "
                                            "in the cache)")


def open_run_teachers(cfg: ListSettings, device: str = "cpu"):
    """The :class:`~crossdistill.teachers.ensemble.Teachers` a run's settings name (checked, nothing loaded)."""
    from crossdistill.teachers.ensemble import open_teachers

    return open_teachers(cfg.teacher_path, cfg.teacher_weights, score_cache=cfg.score_cache, max_len=cfg.teacher_max_len,
                         precision=cfg.teacher_precision, device=device)


# --------------------------------------------------------------------------- teacher_scores.py
@dataclass(frozen=True, kw_only=True)
class ScoresConfig(DataLocation, ListSettings, Sampled, Replaceable):
    """``teacher_scores.py``'s settings: the candidate lists the student would build (the same list settings and
    --max_samples), and the teachers' scores of them."""

    output: str = setting(help="the JSONL file to write (FlagEmbedding's layout: query, pos, neg, pos_scores, neg_scores; "
                               "the scores are the teacher's logits)")
    input_file: str | None = setting(None, "score your own lists instead of a data version's: a JSONL in FlagEmbedding's "
                                           "layout (query, pos, neg; scores in it are replaced), every passage of every "
                                           "record scored (what FlagEmbedding's add_reranker_score.py does)")

    def check(self) -> None:
        if not self.teacher_path:
            raise UsageError("--teacher_path is required: the teacher(s) whose scores are written (a cross-encoder or "
                             "bi-encoder folder, alias or hub id)")
        if self.input_file and self.data_version:
            raise UsageError("--input_file and --data_version both name the lists to score; pass one: your own lists "
                             "(--input_file) or the student's lists over a prepared version (--data_version)")
        if not self.input_file and not self.data_version:
            raise UsageError("pass --data_version (the student's lists over a prepared version) or --input_file (your "
                             "own lists in FlagEmbedding's JSONL layout) to say which lists to score")
        super().check()
