#!/usr/bin/env python
"""Stage 1: train a cross-encoder teacher (relevance in 0..1) on preprocessed/<data_version>/train.csv.

Example (the original's quick setting):
  python train_teacher_model.py --data_version scifact --output_dir ./models/cross_encoder_teacher_quick \
      --epochs 1 --batch_size 32 --lr 2e-5 --use_lora --lora_r 16 --lora_alpha 32 --max_samples 2000
"""


from crossdistill.cli import add_runtime_args, make_parser
from crossdistill.errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, PROBABILITY, UsageError, check_args, run_cli

DEFAULT_TEACHER = "minilm-l6"


def parse_args(argv=None):
    p = make_parser(__doc__)
    # the original's flags and defaults
    p.add_argument("--model_name", default=DEFAULT_TEACHER,
                   help="base encoder: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) or alias "
                        "(minilm-l6, multilingual-e5-small)")
    p.add_argument("--data_version", default="scifact", help="folder under --data_root with train.csv and val.csv")
    p.add_argument("--output_dir", default="./models/cross_encoder_teacher", help="folder of the published teacher (checkpoints while training)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training data")
    p.add_argument("--batch_size", type=int, default=16, help="pairs (bce) or lists (listwise) per step and process")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate of the encoder (or of its LoRA adapters)")
    p.add_argument("--use_lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora_r", type=int, default=32, help="LoRA rank (with --use_lora)")
    p.add_argument("--lora_alpha", type=int, default=64, help="LoRA scaling alpha (with --use_lora)")
    p.add_argument("--lora_dropout", type=float, default=0.1, help="LoRA dropout (with --use_lora)")
    p.add_argument("--max_samples", type=int, default=None, help="seeded random subset of the training rows")
    # added
    p.add_argument("--max_len", type=int, default=256, help="max tokens of the (query, passage) pair")
    p.add_argument("--loss", choices=["bce", "listwise"], default="bce", help="bce: pointwise with pos_weight; listwise: softmax cross-entropy over each positive's list")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean",
                   help="what the head reads: 'mean' appends one encoder layer initialised to mean pooling (the saved "
                        "model stays a standard *ForSequenceClassification); 'cls' = the first token, as is")
    p.add_argument("--pos_weight", default="auto", help="bce weight of positives: a number or 'auto' (negatives per positive)")
    p.add_argument("--head_lr", type=float, default=1e-3, help="learning rate of the new classification head")
    p.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on biases and LayerNorm)")
    p.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of the steps spent warming the learning rate up")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm")
    p.add_argument("--eval_batch_size", type=int, default=64, help="batch size for validation, teacher scoring and encoding")
    p.add_argument("--max_val_samples", type=int, default=None, help="seeded subset of val rows (faster validation)")
    p.add_argument("--query_prefix", default=None, help="text put before each query (default: the model's convention)")
    p.add_argument("--passage_prefix", default=None, help="text put before each passage (default: the model's prompts or family convention)")
    add_runtime_args(p, "split each batch into this many forward/backward passes (same batch, less memory)")
    p.add_argument("--log_steps", type=int, default=10, help="write a step event (read by the monitor) every N steps")
    p.add_argument("--save_steps", type=int, default=200, help="checkpoint every N steps (and at every epoch end); 0: epoch ends only")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --output_dir")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output_dir")
    args = p.parse_args(argv)
    check_args(args, {"epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "lr": POSITIVE, "head_lr": POSITIVE,
                      "lora_r": AT_LEAST_1, "lora_alpha": POSITIVE, "lora_dropout": PROBABILITY,
                      "max_samples": AT_LEAST_1, "max_len": (lambda v: v >= 8, ">= 8"), "weight_decay": NON_NEGATIVE,
                      "warmup_ratio": PROBABILITY, "max_grad_norm": POSITIVE, "eval_batch_size": AT_LEAST_1,
                      "log_steps": AT_LEAST_1, "save_steps": NON_NEGATIVE, "max_val_samples": AT_LEAST_1, "gradient_accumulation_steps": AT_LEAST_1})
    if args.pos_weight != "auto":
        try:
            if float(args.pos_weight) <= 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--pos_weight must be 'auto' or a number > 0 (got {args.pos_weight!r})") from None
    return args


def main(argv=None):
    from crossdistill.teacher_training import train_teacher

    train_teacher(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
