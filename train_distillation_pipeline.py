#!/usr/bin/env python
"""Stage 2: distil a trained cross-encoder teacher into a bi-encoder student (exact cosine similarity).

Loss = KL(teacher ‖ student over K candidates) + contrastive_weight x margin loss + negative_penalty_weight x penalty.

Example (the original's quick setting):
  python train_distillation_pipeline.py --teacher_path ./models/cross_encoder_teacher_quick \
      --student_name intfloat/multilingual-e5-large-instruct --data_version scifact \
      --output_dir ./models/bi_encoder_distilled_quick --epochs 1 --batch_size 16 --lr 2e-5 --K 4 --tau 0.2 \
      --contrastive_weight 0.3 --negative_penalty_weight 0.4 --use_lora --max_len 128 --max_samples 2000
"""


from crossdistill.cli import STUDENT_LR, add_training_args, check_training_args, make_parser
from crossdistill.errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, TEMPERATURE, UsageError, run_cli
from crossdistill.fusion import parse_fusion
from crossdistill.losses import SOFT_LOSSES
from crossdistill.recipes import DEFAULT_RECIPE, STUDENT_RECIPES, apply_recipe

DEFAULT_STUDENT = "minilm-l6"


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--teacher_path", required=True, help="folder written by train_teacher_model.py")
    p.add_argument("--student_name", default=DEFAULT_STUDENT,
                   help="student: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) or alias "
                        "(minilm-l6, multilingual-e5-small)")
    add_training_args(p, data_help="folder under --data_root with train.csv and val.csv",
                      output_help="folder of the published student (checkpoints while training)", output_default=None,
                      batch_size_help="queries per step and process (each with K candidates); global batch = this x processes",
                      lr=STUDENT_LR, lr_help="learning rate (AdamW, linear warm-up and decay)",
                      max_len_help="max tokens per query/passage for the student",
                      accumulation_help="run each batch as this many exact micro-batches (same result, less memory)")
    p.add_argument("--K", type=int, default=16, help="candidates per query: positives, CSV negatives, mined negatives")
    p.add_argument("--recipe", choices=sorted(STUDENT_RECIPES), default=DEFAULT_RECIPE,
                   help="loss settings every unset loss flag takes: 'ranking' = KL from teacher logits to scale*cos + in-batch "
                        "InfoNCE (measured best); 'original' = SPEC.md's KL(prob/0.2) + 0.3 contrastive + 0.4 negative penalty")
    p.add_argument("--tau", type=float, default=None, help="teacher temperature of the listwise KL (ranking 1.0, original 0.2)")
    p.add_argument("--contrastive_weight", type=float, default=None, help="weight of the margin term (ranking 0, original 0.3)")
    p.add_argument("--negative_penalty_weight", type=float, default=None,
                   help="weight of the negative-score penalty (ranking 0, original 0.4)")
    p.add_argument("--negative_source", choices=["bm25", "model", "random"], default="bm25",
                   help="how lists are filled up to K beyond the CSV's negatives")
    p.add_argument("--mining_model", default="minilm-l6", help="bi-encoder for --negative_source model")
    p.add_argument("--soft_labels", choices=["prob", "logit"], default=None,
                   help="teacher scores fed to softmax(./tau): sigmoid probabilities (original) or logits (ranking)")
    p.add_argument("--soft_loss", choices=list(SOFT_LOSSES), default=None,
                   help="soft-label term: listwise KL, or MarginMSE (Hofstaetter et al.) on scale*cos (default kl)")
    p.add_argument("--soft_weight", type=float, default=None, help="weight of the soft-label term (default 1)")
    p.add_argument("--kl_student", choices=["scaled", "tau"], default=None,
                   help="the KL's student side: 'scaled' = softmax(scale*cos) (ranking), 'tau' = softmax(((cos+1)/2)/tau) (original)")
    p.add_argument("--infonce_weight", type=float, default=None,
                   help="weight of the in-batch InfoNCE on labelled positives, every other passage of the batch a negative "
                        "(ranking 1, original 0)")
    p.add_argument("--kl_tau_squared", action="store_true",
                   help="multiply the KL by tau^2 (Hinton et al.; sentence-transformers' DistillKLDivLoss), so its weight "
                        "against InfoNCE does not move with --tau")
    p.add_argument("--scale", type=float, default=None,
                   help="inverse temperature on cosines for InfoNCE, MarginMSE and the scaled KL "
                        "(default: the student's own, 100 for e5 models, 20 otherwise)")
    p.add_argument("--teacher_fusion", default=None,
                   help="soft labels = z(teacher logit) + sum of w*z(source) per query, e.g. 'bm25=0.5' or "
                        "'bm25=0.5,student=0.2'; 'none' = the teacher alone")
    p.add_argument("--val_pool", choices=["auto", "csv", "corpus"], default="auto",
                   help="passages the val queries are ranked against: 'corpus' = the whole BEIR corpus the data came from, "
                        "'csv' = the val CSV's passages, 'auto' = corpus for BEIR data, else csv")
    p.add_argument("--positive_definition", choices=["label", "teacher"], default="label",
                   help="contrastive positives: ground-truth labels, or teacher prob > 0.5 (original)")
    p.add_argument("--cross_device_negatives", action="store_true",
                   help="the contrastive term also counts every other passage of the global batch as a negative of each "
                        "query: gathered from all processes with gradients (one process: in-batch negatives)")
    p.add_argument("--allow_weaker_teacher", action="store_true",
                   help="distil even when the teacher ranks the val pool worse than the starting student")
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="which model to publish: 'best' = highest val MRR@10, the starting student included; 'last' = "
                        "the last epoch's (e.g. when calibrated scores matter more than ranking)")
    p.add_argument("--guard_k", type=int, default=20, help="teacher reranks the student's top-k of the val pool for the guard")
    p.add_argument("--micro_batch_size", type=int, default=None,
                   help="max texts per forward pass (gradients combined exactly); set automatically on out-of-memory")
    p.add_argument("--score_cache", default=None, help="SQLite file of teacher scores (default: per-teacher file in the cache)")
    args = p.parse_args(argv)
    apply_recipe(args)
    if parse_fusion(args.teacher_fusion) and args.soft_labels == "prob":  # a malformed spec is refused in parse_fusion
        raise UsageError("--teacher_fusion fuses the teacher's logits (per-query z-scores), so it cannot be combined with "
                         "--soft_labels prob (the original recipe's default); pass --soft_labels logit, or leave fusion out")
    check_training_args(args, {"soft_weight": NON_NEGATIVE, "infonce_weight": NON_NEGATIVE, "scale": POSITIVE,
                               "K": (lambda v: v >= 2, ">= 2"), "tau": TEMPERATURE, "contrastive_weight": NON_NEGATIVE,
                               "negative_penalty_weight": NON_NEGATIVE, "guard_k": AT_LEAST_1,
                               "micro_batch_size": AT_LEAST_1})
    return args


def main(argv=None):
    from crossdistill.config import StudentConfig
    from crossdistill.distillation import train_student

    train_student(StudentConfig.from_args(parse_args(argv)))  # the typed settings, built once


if __name__ == "__main__":
    from crossdistill import faults

    faults.install()  # the recovery tests' fault injectors, only under CROSSDISTILL_ALLOW_FAULTS=1
    run_cli(main)
