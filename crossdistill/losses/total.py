"""The student's composite objective: soft-label term + in-batch InfoNCE + contrastive margin + negative penalty.

.. math::
    L = w_{soft} \\cdot L_{soft} + w_{nce} \\cdot L_{InfoNCE} + w_{con} \\cdot L_{contrastive} + w_{pen} \\cdot L_{penalty}

with the weights and temperatures of a :class:`~crossdistill.losses.settings.LossSettings` (the ``ranking`` recipe:
KL + InfoNCE; the ``original``: KL at τ 0.2 + 0.3 contrastive + 0.4 penalty, SPEC.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossdistill.losses.contrastive import contrastive_margin_loss
from crossdistill.losses.infonce import in_batch_infonce_loss
from crossdistill.losses.kl import listwise_kl_loss
from crossdistill.losses.margin_mse import margin_mse_loss
from crossdistill.losses.negative_penalty import negative_penalty_loss
from crossdistill.losses.settings import MARGIN, NEGATIVE_THRESHOLD, LossSettings

SOFT_LOSSES = ("kl", "margin_mse")


@dataclass
class BatchScores:
    """A batch's scores, as the loss terms read them.

    teacher: (Q, K) teacher probabilities, logits or fused scores of each candidate (the soft labels).
    student: (Q, K) normalised student scores ``s = (cos + 1) / 2``.
    mask: (Q, K) bool, real candidates. positive: (Q, K) bool, candidates counted as positive for the contrastive,
    InfoNCE and MarginMSE terms; all other real candidates are negatives.
    extra_negatives: optional ``(scores (Q, P), mask (Q, P))`` of further passages (cross-device negatives) that join
    each query's negatives in the contrastive term only (the teacher never scored them).
    in_batch: ``(cos (Q, P), positive (Q, P), mask (Q, P))`` of each query against every distinct passage of the
    (global) batch, for the InfoNCE term; needed when its weight is > 0.
    """

    teacher: torch.Tensor
    student: torch.Tensor
    mask: torch.Tensor
    positive: torch.Tensor
    extra_negatives: tuple[torch.Tensor, torch.Tensor] | None = None
    in_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def soft_term(b: BatchScores, s: LossSettings) -> torch.Tensor:
    """The soft-label term: listwise KL (×τ² with ``kl_tau_squared``, Hinton et al. 2015), or MarginMSE on
    ``scale · cos``."""
    if s.soft_loss == "kl":
        return listwise_kl_loss(b.teacher, b.student, b.mask, s.tau, s.student_tau) * (s.tau ** 2 if s.kl_tau_squared else 1.0)
    if s.soft_loss == "margin_mse":
        return margin_mse_loss(b.teacher, (2 * b.student - 1) * s.scale, b.positive, b.mask)
    raise ValueError(f"soft_loss must be one of {SOFT_LOSSES}")


def contrastive_term(b: BatchScores) -> torch.Tensor:
    """The margin term over each query's candidates, plus the extra (cross-device) negatives when given."""
    if b.extra_negatives is None:
        return contrastive_margin_loss(b.student, b.positive, b.mask, MARGIN)
    extra_scores, extra_mask = b.extra_negatives
    return contrastive_margin_loss(torch.cat([b.student, extra_scores], dim=1),
                                   torch.cat([b.positive, torch.zeros_like(extra_mask)], dim=1),
                                   torch.cat([b.mask, extra_mask], dim=1), MARGIN)


def distillation_loss(b: BatchScores, s: LossSettings) -> dict[str, torch.Tensor]:
    """``loss`` (the weighted total, differentiable) and its terms ``soft``, ``infonce``, ``contrastive``,
    ``negative_penalty`` (detached, for logging); a term weighted 0 is not computed."""
    zero = b.student.sum() * 0.0
    soft = soft_term(b, s) if s.soft_weight else zero
    con = contrastive_term(b) if (s.contrastive_weight or b.extra_negatives is not None) else zero
    pen = negative_penalty_loss(b.student, ~b.positive & b.mask, NEGATIVE_THRESHOLD) if s.negative_penalty_weight else zero
    if s.infonce_weight and b.in_batch is None:
        raise ValueError("infonce_weight > 0 needs in_batch scores")
    nce = in_batch_infonce_loss(*b.in_batch, scale=s.scale) if s.infonce_weight else zero
    total = s.soft_weight * soft + s.infonce_weight * nce + s.contrastive_weight * con + s.negative_penalty_weight * pen
    return {"loss": total, "soft": soft.detach(), "infonce": nce.detach(), "contrastive": con.detach(),
            "negative_penalty": pen.detach()}
