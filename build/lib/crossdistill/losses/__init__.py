"""Distillation losses: pure functions of tensors, one per file.

The list losses take student scores already normalised to 0..1 (``s = (cos + 1) / 2``), shape (Q, K): Q
queries, K candidates each, with a boolean ``mask`` (Q, K) marking real candidates (lists may be ragged).
The in-batch InfoNCE takes raw cosines of each query against every passage of the batch, (Q, P).
The teacher's losses (pointwise BCE, localised contrastive estimation) take its logits of (query, passage) pairs.
The student's composite loss takes a batch's scores and a :class:`LossSettings` (``total.py``, ``settings.py``).
"""

from crossdistill.losses.contrastive import contrastive_margin_loss
from crossdistill.losses.in_batch_kl import in_batch_kl_loss
from crossdistill.losses.infonce import in_batch_infonce_loss
from crossdistill.losses.kl import listwise_kl_loss
from crossdistill.losses.localized_contrastive import localized_contrastive_loss
from crossdistill.losses.margin_mse import margin_mse_loss
from crossdistill.losses.negative_penalty import negative_penalty_loss
from crossdistill.losses.pointwise_bce import pointwise_bce_loss
from crossdistill.losses.settings import LossSettings
from crossdistill.losses.total import SOFT_LOSSES, TERMS, BatchScores, distillation_loss

__all__ = ["in_batch_kl_loss", "TERMS", "listwise_kl_loss", "contrastive_margin_loss", "negative_penalty_loss", "in_batch_infonce_loss",
           "margin_mse_loss", "distillation_loss", "BatchScores", "LossSettings", "SOFT_LOSSES", "localized_contrastive_loss", "pointwise_bce_loss"]
