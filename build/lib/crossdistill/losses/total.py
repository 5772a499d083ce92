"""The student's composite objective, one table of terms (:data:`TERMS`):

.. math::
    L = \\sum_t w_t \\cdot L_t, \\quad t \\in \\{soft, InfoNCE, contrastive, penalty, in\\text{-}batch\\ KL\\}

with the weights and temperatures of a :class:`~crossdistill.losses.settings.LossSettings` (the ``ranking`` recipe:
KL + InfoNCE; the ``original``: KL at τ 0.2 + 0.3 contrastive + 0.4 penalty, SPEC.md). The loss, the config's checks,
the recipes' summaries and the model card all read :data:`TERMS`: a new term is its function in its own file and its
row here (and its weight in :class:`~crossdistill.losses.settings.LossSettings` and each recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from crossdistill.losses.contrastive import contrastive_margin_loss
from crossdistill.losses.in_batch_kl import in_batch_kl_loss
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
    (global) batch, for the InfoNCE and in-batch KL terms; needed when one of them is weighted.
    in_batch_teacher: (Q, P) the teacher's logits of the same pairs as ``in_batch``, for the in-batch KL term.
    """

    teacher: torch.Tensor
    student: torch.Tensor
    mask: torch.Tensor
    positive: torch.Tensor
    extra_negatives: tuple[torch.Tensor, torch.Tensor] | None = None
    in_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    in_batch_teacher: torch.Tensor | None = None


def soft_term(b: BatchScores, s: LossSettings) -> torch.Tensor:
    """The soft-label term: listwise KL (×τ² with ``kl_tau_squared``, Hinton et al. 2015), or MarginMSE on
    ``scale · cos``."""
    if s.soft_loss == "kl":
        return listwise_kl_loss(b.teacher, b.student, b.mask, s.tau, s.student_tau) * (s.tau ** 2 if s.kl_tau_squared else 1.0)
    if s.soft_loss == "margin_mse":
        return margin_mse_loss(b.teacher, (2 * b.student - 1) * s.scale, b.positive, b.mask)
    raise ValueError(f"soft_loss must be one of {SOFT_LOSSES}")


def contrastive_term(b: BatchScores, s: LossSettings) -> torch.Tensor:
    """The margin term over each query's candidates, plus the extra (cross-device) negatives when given."""
    if b.extra_negatives is None:
        return contrastive_margin_loss(b.student, b.positive, b.mask, MARGIN)
    extra_scores, extra_mask = b.extra_negatives
    return contrastive_margin_loss(torch.cat([b.student, extra_scores], dim=1),
                                   torch.cat([b.positive, torch.zeros_like(extra_mask)], dim=1),
                                   torch.cat([b.mask, extra_mask], dim=1), MARGIN)


def penalty_term(b: BatchScores, s: LossSettings) -> torch.Tensor:
    return negative_penalty_loss(b.student, ~b.positive & b.mask, NEGATIVE_THRESHOLD)


def infonce_term(b: BatchScores, s: LossSettings) -> torch.Tensor:
    return in_batch_infonce_loss(*b.in_batch, scale=s.scale)


def in_batch_kl_term(b: BatchScores, s: LossSettings) -> torch.Tensor:
    if b.in_batch_teacher is None:
        raise ValueError("in_batch_kl_weight > 0 needs the teacher's in-batch logits")
    cos, _, mask = b.in_batch
    return in_batch_kl_loss(b.in_batch_teacher, cos, mask, s.tau, s.scale)


@dataclass(frozen=True)
class Term:
    """One term of the student's loss: its name (the loss dict's key, the logs'), the LossSettings field (and flag)
    of its weight, what the recipe summary calls it, its function of (BatchScores, LossSettings), and whether it reads
    every passage of the batch (``BatchScores.in_batch``)."""

    name: str
    weight: str
    label: str
    compute: Callable[[BatchScores, LossSettings], torch.Tensor]
    in_batch: bool = False


TERMS = (
    Term("soft", "soft_weight", "soft-label", soft_term),
    Term("infonce", "infonce_weight", "InfoNCE", infonce_term, in_batch=True),
    Term("contrastive", "contrastive_weight", "contrastive", contrastive_term),
    Term("negative_penalty", "negative_penalty_weight", "negative penalty", penalty_term),
    Term("in_batch_kl", "in_batch_kl_weight", "in-batch KL", in_batch_kl_term, in_batch=True),
)
WEIGHTS = tuple(t.weight for t in TERMS)


def distillation_loss(b: BatchScores, s: LossSettings) -> dict[str, torch.Tensor]:
    """``loss`` (the weighted total, differentiable) and each term of :data:`TERMS` (detached, for logging); a term
    weighted 0 is not computed (0 in the dict)."""
    zero = b.student.sum() * 0.0
    out, total = {}, zero
    for term in TERMS:
        weight = getattr(s, term.weight)
        if not weight:
            out[term.name] = zero.detach()
            continue
        if term.in_batch and b.in_batch is None:
            raise ValueError(f"{term.weight} > 0 needs in_batch scores")
        value = term.compute(b, s)
        total = total + weight * value
        out[term.name] = value.detach()
    return {"loss": total, **out}
