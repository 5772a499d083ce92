"""``train_teacher_model.py``'s settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import (
    AT_LEAST_1,
    DEFAULT_MAX_LEN,
    MAX_LEN,
    POSITIVE,
    TrainingConfig,
    setting,
)


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(TrainingConfig):
    """``train_teacher_model.py``'s settings."""

    model_name: str = setting("minilm-l6", "base encoder: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) "
                                           "or alias (minilm-l6, multilingual-e5-small)")
    output_dir: str = setting("./models/cross_encoder_teacher", "folder of the published teacher (checkpoints while "
                                                                "training)")
    batch_size: int = setting(16, "pairs (bce) or lists (listwise) per step and process", check=AT_LEAST_1)
    lr: float = setting(5e-5, "learning rate of the encoder (or of its LoRA adapters)", check=POSITIVE)
    max_len: int = setting(DEFAULT_MAX_LEN, "max tokens of the (query, passage) pair", check=MAX_LEN)
    loss: str = setting("bce", "bce: pointwise with pos_weight; listwise: softmax cross-entropy of each positive against "
                               "its negatives (localised contrastive estimation)", choices=["bce", "listwise"])
    pooling: str = setting("auto", "what the head reads: 'auto' keeps a base model's trained one-label classification "
                                    "head (a reranker: 'cls') and gives a bare encoder 'mean'; 'mean' appends one encoder "
                                    "layer initialised to mean pooling (the saved model stays a standard "
                                    "*ForSequenceClassification); 'cls' = the first token, as is",
                           choices=["auto", "mean", "cls"])
    pos_weight: str = setting("auto", "bce weight of positives: a number or 'auto' (negatives per positive)")
    head_lr: float | None = setting(None, "learning rate of the classification head (default: 1e-3 for a new head, --lr "
                                          "for a trained one that --pooling keeps)", check=POSITIVE)

    def check(self) -> None:
        if self.pos_weight != "auto":
            try:
                if not math.isfinite(float(self.pos_weight)) or float(self.pos_weight) <= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(f"--pos_weight must be 'auto' or a finite number > 0 (got {self.pos_weight!r})") from None
        super().check()
