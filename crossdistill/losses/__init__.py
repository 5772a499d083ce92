"""Distillation losses: pure functions of tensors, one per file.

All take student scores already normalised to 0..1 (``s = (cos + 1) / 2``), shape (Q, K): Q queries,
K candidates each, with a boolean ``mask`` (Q, K) marking real candidates (lists may be ragged).
"""

from .contrastive import contrastive_margin_loss
from .kl import listwise_kl_loss
from .negative_penalty import negative_penalty_loss
from .total import distillation_loss

__all__ = ["listwise_kl_loss", "contrastive_margin_loss", "negative_penalty_loss", "distillation_loss"]
