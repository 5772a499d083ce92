"""Each training stage's settings as one typed, frozen value, built once from the parsed command line.

The flags are defined (with their defaults, help and checks) once, in the scripts' parsers and
:func:`crossdistill.cli.add_training_args`; these dataclasses name the same settings as fields so that the library
reads ``cfg.max_len`` from a typed value nobody mutates. :meth:`TrainingConfig.from_args` refuses a namespace whose
keys differ from the fields (a flag added to a parser but not here, or the reverse), so the two cannot drift apart.
Values a run resolves (the student's similarity scale, its score-cache path) are set with :func:`dataclasses.replace`,
giving a new config, never by changing the one given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrainingConfig:
    """The settings both stages share (:func:`crossdistill.cli.add_training_args` defines their flags)."""

    data_version: str
    data_root: str
    output_dir: str
    epochs: int
    batch_size: int
    lr: float
    use_lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    max_samples: int | None
    max_len: int
    attention_dropout: float | None
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    eval_batch_size: int
    max_val_samples: int | None
    query_prefix: str | None
    passage_prefix: str | None
    log_steps: int
    save_steps: int
    resume: bool
    overwrite: bool
    seed: int
    mixed_precision: str
    gradient_checkpointing: bool
    gradient_accumulation_steps: int
    report_to: str
    device: str

    @classmethod
    def from_args(cls, args) -> "TrainingConfig":
        """The config of a parsed namespace, which must hold exactly the fields, no more and no fewer."""
        names, given = {f.name for f in fields(cls)}, vars(args)
        extra, missing = sorted(given.keys() - names), sorted(names - given.keys())
        if extra or missing:
            raise ValueError(f"{cls.__name__}: the parsed flags and the config's fields differ "
                             f"(not in the config: {extra}; not parsed: {missing})")
        return cls(**{n: given[n] for n in names})

    def to_dict(self) -> dict:
        """Every setting, as written to ``training_args.json``."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TeacherConfig(TrainingConfig):
    """``train_teacher_model.py``'s settings."""

    model_name: str
    loss: str            # "bce" or "listwise"
    pooling: str         # "mean" or "cls"
    pos_weight: str      # "auto" or a number, as given
    head_lr: float


@dataclass(frozen=True)
class StudentConfig(TrainingConfig):
    """``train_distillation_pipeline.py``'s settings; the loss settings are filled by the recipe before this is built
    (:func:`crossdistill.recipes.apply_recipe`), the scale and score cache resolved by the run."""

    teacher_path: str
    student_name: str
    K: int
    recipe: str
    tau: float
    contrastive_weight: float
    negative_penalty_weight: float
    negative_source: str
    mining_model: str
    soft_labels: str
    soft_loss: str
    soft_weight: float
    kl_student: str
    infonce_weight: float
    kl_tau_squared: bool
    scale: float | None           # None: the student's own (resolved at the start of the run)
    teacher_fusion: str
    val_pool: str
    positive_definition: str
    cross_device_negatives: bool
    allow_weaker_teacher: bool
    keep: str
    guard_k: int
    micro_batch_size: int | None
    score_cache: str | None       # None: the teacher's own file in the cache (resolved at the start of the run)
