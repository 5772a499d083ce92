"""Stage 2: distil a trained cross-encoder teacher into a bi-encoder student (exact cosine similarity).

Loss (the default 'ranking' recipe) = KL(teacher logits ‖ scale·cos over K candidates) + in-batch InfoNCE on the
labels; the original's recipe ('--recipe original') = KL + contrastive_weight x margin + negative_penalty_weight x penalty.

Example (the original's quick setting):
  python train_distillation_pipeline.py --teacher_path ./models/cross_encoder_teacher_quick \
      --student_name intfloat/multilingual-e5-large-instruct --data_version scifact \
      --output_dir ./models/bi_encoder_distilled_quick --epochs 1 --batch_size 16 --lr 2e-5 --K 4 --tau 0.2 \
      --contrastive_weight 0.3 --negative_penalty_weight 0.4 --use_lora --max_len 128 --max_samples 2000
"""


from crossdistill.core.errors import run_cli
from crossdistill.distill.config import StudentConfig


def parse_args(argv=None) -> StudentConfig:
    from crossdistill.core.cli import with_monitor_flags

    return StudentConfig.parse(with_monitor_flags(argv), __doc__)


def main(argv=None):
    from crossdistill.distill.train import train_student

    train_student(parse_args(argv))  # the typed settings, built once


def run() -> None:
    """The command line: ``python -m crossdistill.distill``, ``crossdistill-distill``, ``python train_distillation_pipeline.py``."""
    from crossdistill.core import faults

    faults.install()  # the recovery tests' fault injectors, only under CROSSDISTILL_ALLOW_FAULTS=1
    run_cli(main)
