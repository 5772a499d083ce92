"""Contrastive margin between each query's positives and negatives."""

from __future__ import annotations

import torch


def contrastive_margin_loss(student_scores: torch.Tensor, positive: torch.Tensor, mask: torch.Tensor,
                            margin: float = 0.7) -> torch.Tensor:
    """Mean over queries of relu(margin − (mean s of positives − mean s of negatives)).

    Args:
        student_scores: (Q, K) normalised student scores in 0..1.
        positive: (Q, K) bool, True for candidates counted as positive (ground truth by default; the
            original took teacher probability > 0.5).
        mask: (Q, K) bool, True for real candidates.
        margin: the wanted gap (the original's target: 0.7).

    Returns:
        Scalar tensor: the mean over queries that have at least one positive and one negative; 0 when no
        query has both (e.g. every candidate positive, or no negatives).
    """
    pos = positive & mask
    neg = ~positive & mask
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    usable = (n_pos > 0) & (n_neg > 0)
    if not usable.any():
        return student_scores.sum() * 0.0
    mean_pos = (student_scores * pos).sum(-1) / n_pos.clamp(min=1)
    mean_neg = (student_scores * neg).sum(-1) / n_neg.clamp(min=1)
    per_query = torch.relu(margin - (mean_pos - mean_neg))
    return per_query[usable].mean()
