"""Stage 1: train a cross-encoder teacher (relevance in 0..1) on preprocessed/<data_version>/train.csv.

Example (the original's quick setting):
  python train_teacher_model.py --data_version scifact --output_dir ./models/cross_encoder_teacher_quick \
      --epochs 1 --batch_size 32 --lr 2e-5 --use_lora --lora_r 16 --lora_alpha 32 --max_samples 2000
"""


from crossdistill.core.errors import run_cli
from crossdistill.teach.config import TeacherConfig


def parse_args(argv=None) -> TeacherConfig:
    from crossdistill.core.cli import with_monitor_flags

    return TeacherConfig.parse(with_monitor_flags(argv), __doc__)


def main(argv=None):
    from crossdistill.teach.train import train_teacher

    train_teacher(parse_args(argv))  # the typed settings, built once


def run() -> None:
    """The command line: ``python -m crossdistill.teach``, ``crossdistill-teacher``, ``python train_teacher_model.py``."""
    from crossdistill.core import faults

    faults.install()  # the recovery tests' fault injectors, only under CROSSDISTILL_ALLOW_FAULTS=1
    run_cli(main)
