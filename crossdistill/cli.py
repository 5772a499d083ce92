"""Command-line helpers the scripts share: argument spelling, and every flag both training scripts take, defined
once here with its check (each script adds only its own flags and passes the few defaults that differ)."""

from __future__ import annotations


def join_passthrough(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """Rewrite ``--x_args VALUE`` as ``--x_args=VALUE`` for the options in ``names``.

    Those options carry another script's flags as one quoted string, e.g. ``--student_args "--epochs 2"``, and
    argparse would take a value that starts with ``--`` for an option of its own ("expected one argument").
    Everything after a bare ``--`` is left alone.
    """
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return out + argv[i:]
        if a in names and i + 1 < len(argv):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# the scripts' default learning rates; the monitor halves the one in force after a non-finite loss
TEACHER_LR = 5e-5
STUDENT_LR = 2e-5


def make_parser(description: str):
    """The scripts' parser: the module docstring as description, every flag's default shown in ``--help``, and no
    abbreviations (``--epoch`` is an error, not ``--epochs``)."""
    import argparse

    class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    return argparse.ArgumentParser(description=description, formatter_class=_Formatter, allow_abbrev=False)


def add_runtime_args(p, accumulation_help: str) -> None:
    """Flags both training scripts share: data root, seed, devices, precision and memory savers."""
    p.add_argument("--data_root", default="preprocessed", help="folder holding the prepared data versions")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice (same inputs and seed give the same result)")
    p.add_argument("--mixed_precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="auto: bf16 on GPUs that have it, fp16 on other GPUs, full precision on CPU")
    p.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for activation memory")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1, help=accumulation_help)
    p.add_argument("--report_to", choices=["none", "tensorboard"], default="none",
                   help="training curves (loss, lr, val metrics) for TensorBoard in <output_dir>/runs (pip install tensorboard)")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: GPU when there is one; cpu: force the CPU")


def add_training_args(p, *, data_help: str, output_help: str, output_default: str | None, batch_size_help: str,
                      lr: float, lr_help: str, max_len_help: str, accumulation_help: str) -> None:
    """The flags the teacher and the student scripts share (the original's, then ours), one definition each."""
    p.add_argument("--data_version", default="scifact", help=data_help)
    p.add_argument("--output_dir", default=output_default, required=output_default is None, help=output_help)
    p.add_argument("--epochs", type=int, default=3, help="passes over the training data")
    p.add_argument("--batch_size", type=int, default=16, help=batch_size_help)
    p.add_argument("--lr", type=float, default=lr, help=lr_help)
    p.add_argument("--use_lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora_r", type=int, default=32, help="LoRA rank (with --use_lora)")
    p.add_argument("--lora_alpha", type=int, default=64, help="LoRA scaling alpha (with --use_lora)")
    p.add_argument("--lora_dropout", type=float, default=0.1, help="LoRA dropout (with --use_lora)")
    p.add_argument("--max_samples", type=int, default=None, help="seeded random subset of the training queries, each with all its rows, up to this many rows")
    p.add_argument("--max_len", type=int, default=256, help=max_len_help)
    p.add_argument("--attention_dropout", type=float, default=None,
                   help="dropout on attention probabilities while training (default: the model's own, 0.1 for MiniLM and "
                        "e5); 0 lets PyTorch use its fused attention kernel: on CPU 1.2-1.3x faster steps and about a third "
                        "less memory")
    p.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on biases and LayerNorm)")
    p.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of the steps spent warming the learning rate up")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm")
    p.add_argument("--eval_batch_size", type=int, default=64, help="batch size for validation, teacher scoring and encoding")
    p.add_argument("--max_val_samples", type=int, default=None, help="seeded subset of the val queries, each with all its rows, up to this many rows (faster validation)")
    p.add_argument("--query_prefix", default=None, help="text put before each query (default: the model's prompts or family convention)")
    p.add_argument("--passage_prefix", default=None, help="text put before each passage (default: the model's prompts or family convention)")
    p.add_argument("--log_steps", type=int, default=5, help="write a step event (read by the monitor) every N steps")
    p.add_argument("--save_steps", type=int, default=50, help="checkpoint every N steps (and at every epoch end); 0: epoch ends only")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --output_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output_dir, only one this toolkit wrote, and only once every input checked out")
    add_runtime_args(p, accumulation_help)


def check_training_args(args, extra_rules: dict | None = None) -> None:
    """Check the shared flags (and ``extra_rules`` of the script's own); one clear UsageError for the first bad one."""
    from .errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, PROBABILITY, UsageError, check_args

    check_args(args, {"epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "lr": POSITIVE, "lora_r": AT_LEAST_1,
                      "lora_alpha": POSITIVE, "lora_dropout": PROBABILITY, "attention_dropout": PROBABILITY, "max_samples": AT_LEAST_1,
                      "max_len": (lambda v: v >= 8, ">= 8"), "weight_decay": NON_NEGATIVE, "warmup_ratio": PROBABILITY,
                      "max_grad_norm": POSITIVE, "eval_batch_size": AT_LEAST_1, "max_val_samples": AT_LEAST_1,
                      "log_steps": AT_LEAST_1, "save_steps": NON_NEGATIVE, "gradient_accumulation_steps": AT_LEAST_1,
                      **(extra_rules or {})})
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one")
