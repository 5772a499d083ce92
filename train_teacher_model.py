#!/usr/bin/env python
"""Stage 1: train a cross-encoder teacher (relevance in 0..1) on preprocessed/<data_version>/train.csv.

Example (the original's quick setting):
  python train_teacher_model.py --data_version scifact --output_dir ./models/cross_encoder_teacher_quick \
      --epochs 1 --batch_size 32 --lr 2e-5 --use_lora --lora_r 16 --lora_alpha 32 --max_samples 2000
"""


from crossdistill.cli import TEACHER_LR, add_training_args, check_training_args, make_parser
from crossdistill.errors import POSITIVE, UsageError, run_cli

DEFAULT_TEACHER = "minilm-l6"


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--model_name", default=DEFAULT_TEACHER,
                   help="base encoder: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) or alias "
                        "(minilm-l6, multilingual-e5-small)")
    add_training_args(p, data_help="folder under --data_root with train.csv and val.csv",
                      output_help="folder of the published teacher (checkpoints while training)",
                      output_default="./models/cross_encoder_teacher",
                      batch_size_help="pairs (bce) or lists (listwise) per step and process",
                      lr=TEACHER_LR, lr_help="learning rate of the encoder (or of its LoRA adapters)",
                      max_len_help="max tokens of the (query, passage) pair",
                      accumulation_help="split each batch into this many forward/backward passes (same batch, less memory)")
    p.add_argument("--loss", choices=["bce", "listwise"], default="bce", help="bce: pointwise with pos_weight; listwise: softmax cross-entropy over each positive's list")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean",
                   help="what the head reads: 'mean' appends one encoder layer initialised to mean pooling (the saved "
                        "model stays a standard *ForSequenceClassification); 'cls' = the first token, as is")
    p.add_argument("--pos_weight", default="auto", help="bce weight of positives: a number or 'auto' (negatives per positive)")
    p.add_argument("--head_lr", type=float, default=1e-3, help="learning rate of the new classification head")
    args = p.parse_args(argv)
    check_training_args(args, {"head_lr": POSITIVE})
    if args.pos_weight != "auto":
        try:
            if float(args.pos_weight) <= 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--pos_weight must be 'auto' or a number > 0 (got {args.pos_weight!r})") from None
    return args


def main(argv=None):
    from crossdistill.config import TeacherConfig
    from crossdistill.teacher_training import train_teacher

    train_teacher(TeacherConfig.from_args(parse_args(argv)))  # the typed settings, built once


if __name__ == "__main__":
    from crossdistill import faults

    faults.install()  # the recovery tests' fault injectors, only under CROSSDISTILL_ALLOW_FAULTS=1
    run_cli(main)
