"""Write a teacher's scores over a prepared data version: the candidate lists the student builds (its positives, the
CSV's negatives, mined negatives, K per query) with the teacher's logits, one JSON record per query in FlagEmbedding's
layout (query, pos, neg, pos_scores, neg_scores). Scores made once can then be shared, inspected, and trained on with
no teacher model: train_distillation_pipeline.py --teacher_scores FILE (same --data_version, --K, --seed, --max_samples:
the same student, bit for bit).

Example:
  python teacher_scores.py --teacher_path models/scifact/cross_encoder_teacher --data_version scifact \
      --output scores/scifact_teacher.jsonl
"""

from crossdistill.core.errors import run_cli
from crossdistill.teachers.config import ScoresConfig


def parse_args(argv=None) -> ScoresConfig:
    return ScoresConfig.parse(argv, __doc__)


def main(argv=None):
    from crossdistill.teachers.export import export_scores

    export_scores(parse_args(argv))


def run() -> None:
    """The command line: ``python -m crossdistill.teachers``, ``crossdistill-teacher-scores``, ``python teacher_scores.py``."""
    run_cli(main)
