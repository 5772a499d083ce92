"""The distillation objective: KL + contrastive + negative penalty."""

from __future__ import annotations

import torch

from .contrastive import contrastive_margin_loss
from .kl import listwise_kl_loss
from .negative_penalty import negative_penalty_loss


def distillation_loss(teacher_scores: torch.Tensor, student_scores: torch.Tensor, mask: torch.Tensor,
                      positive: torch.Tensor, tau: float = 0.2, contrastive_weight: float = 0.3,
                      negative_penalty_weight: float = 0.4, margin: float = 0.7,
                      negative_threshold: float = 0.15,
                      extra_negatives: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """total = KL + contrastive_weight × contrastive + negative_penalty_weight × penalty.

    Args:
        teacher_scores: (Q, K) teacher probabilities (or logits) of each candidate.
        student_scores: (Q, K) normalised student scores ``(cos + 1) / 2``.
        mask: (Q, K) bool, real candidates.
        positive: (Q, K) bool, candidates counted as positive for the contrastive term; all other real
            candidates are negatives for both the contrastive and the penalty term.
        extra_negatives: optional ``(scores (Q, P), mask (Q, P))`` of further passages (cross-device
            negatives) that join each query's negatives in the contrastive term only (the teacher never
            scored them, so KL and the penalty do not see them).

    Returns:
        dict with ``loss`` (the total, differentiable) and the components ``kl``, ``contrastive``,
        ``negative_penalty`` (detached, for logging).
    """
    kl = listwise_kl_loss(teacher_scores, student_scores, mask, tau)
    if extra_negatives is None:
        con = contrastive_margin_loss(student_scores, positive, mask, margin)
    else:
        extra_scores, extra_mask = extra_negatives
        con = contrastive_margin_loss(torch.cat([student_scores, extra_scores], dim=1),
                                      torch.cat([positive, torch.zeros_like(extra_mask)], dim=1),
                                      torch.cat([mask, extra_mask], dim=1), margin)
    pen = negative_penalty_loss(student_scores, ~positive & mask, negative_threshold)
    total = kl + contrastive_weight * con + negative_penalty_weight * pen
    return {"loss": total, "kl": kl.detach(), "contrastive": con.detach(), "negative_penalty": pen.detach()}
