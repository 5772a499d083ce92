"""The distillation objective: soft-label term + in-batch InfoNCE + contrastive margin + negative penalty."""

from __future__ import annotations

import torch

from crossdistill.losses.contrastive import contrastive_margin_loss
from crossdistill.losses.infonce import in_batch_infonce_loss
from crossdistill.losses.kl import listwise_kl_loss
from crossdistill.losses.margin_mse import margin_mse_loss
from crossdistill.losses.negative_penalty import negative_penalty_loss

SOFT_LOSSES = ("kl", "margin_mse")


def distillation_loss(teacher_scores: torch.Tensor, student_scores: torch.Tensor, mask: torch.Tensor,
                      positive: torch.Tensor, tau: float = 0.2, contrastive_weight: float = 0.3,
                      negative_penalty_weight: float = 0.4, margin: float = 0.7,
                      negative_threshold: float = 0.15,
                      extra_negatives: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                      student_tau: float | None = None, soft_loss: str = "kl", soft_weight: float = 1.0,
                      scale: float = 20.0, infonce_weight: float = 0.0, kl_tau_squared: bool = False,
                      in_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """total = soft_weight × soft + infonce_weight × InfoNCE + contrastive_weight × contrastive
    + negative_penalty_weight × penalty.

    The defaults are the original's objective (KL at τ 0.2 on both sides, weights 0.3 / 0.4, no InfoNCE).

    Args:
        teacher_scores: (Q, K) teacher probabilities, logits or fused scores of each candidate.
        student_scores: (Q, K) normalised student scores ``s = (cos + 1) / 2``.
        mask: (Q, K) bool, real candidates.
        positive: (Q, K) bool, candidates counted as positive for the contrastive, InfoNCE and MarginMSE
            terms; all other real candidates are negatives.
        soft_loss: ``kl`` (:func:`listwise_kl_loss` with τ and ``student_tau``) or ``margin_mse``
            (:func:`margin_mse_loss` on ``scale · cos``).
        scale: the student's inverse temperature on cosines for InfoNCE and MarginMSE.
        kl_tau_squared: multiply the KL by τ² (Hinton et al. 2015; sentence-transformers' ``DistillKLDivLoss``), so
            that the size of its gradient, and with it its weight against InfoNCE, does not move with τ.
        extra_negatives: optional ``(scores (Q, P), mask (Q, P))`` of further passages (cross-device
            negatives) that join each query's negatives in the contrastive term only (the teacher never
            scored them, so the soft term and the penalty do not see them).
        in_batch: ``(cos (Q, P), positive (Q, P), mask (Q, P))`` of each query against every distinct passage
            of the (global) batch, for the InfoNCE term; needed when ``infonce_weight > 0``.

    Returns:
        dict with ``loss`` (the total, differentiable) and the components ``soft`` (the soft-label term, KL or MarginMSE, whichever it
        is), ``infonce``, ``contrastive``, ``negative_penalty`` (detached, for logging).
    """
    zero = student_scores.sum() * 0.0
    if soft_weight == 0:
        soft = zero
    elif soft_loss == "kl":
        soft = listwise_kl_loss(teacher_scores, student_scores, mask, tau, student_tau) * (tau ** 2 if kl_tau_squared else 1.0)
    elif soft_loss == "margin_mse":
        soft = margin_mse_loss(teacher_scores, (2 * student_scores - 1) * scale, positive, mask)
    else:
        raise ValueError(f"soft_loss must be one of {SOFT_LOSSES}")
    if extra_negatives is None:
        con = contrastive_margin_loss(student_scores, positive, mask, margin) if contrastive_weight else zero
    else:
        extra_scores, extra_mask = extra_negatives
        con = contrastive_margin_loss(torch.cat([student_scores, extra_scores], dim=1),
                                      torch.cat([positive, torch.zeros_like(extra_mask)], dim=1),
                                      torch.cat([mask, extra_mask], dim=1), margin)
    pen = negative_penalty_loss(student_scores, ~positive & mask, negative_threshold) if negative_penalty_weight else zero
    if infonce_weight:
        if in_batch is None:
            raise ValueError("infonce_weight > 0 needs in_batch scores")
        nce = in_batch_infonce_loss(*in_batch, scale=scale)
    else:
        nce = zero
    total = soft_weight * soft + infonce_weight * nce + contrastive_weight * con + negative_penalty_weight * pen
    return {"loss": total, "soft": soft.detach(), "infonce": nce.detach(), "contrastive": con.detach(),
            "negative_penalty": pen.detach()}
