"""Penalty on high negative scores, over the whole batch and per query."""

from __future__ import annotations

import torch


def negative_penalty_loss(student_scores: torch.Tensor, negative: torch.Tensor, threshold: float = 0.15,
                          per_query_weight: float = 0.5) -> torch.Tensor:
    """relu(mean s over all negatives in the batch − t) + w × mean over queries of relu(mean s of its negatives − t).

    Args:
        student_scores: (Q, K) normalised student scores in 0..1.
        negative: (Q, K) bool, True for real candidates that are negatives (already masked).
        threshold: t, the original's target for the mean negative score (0.15).
        per_query_weight: w, weight of the per-query term (0.5 in the original).

    Returns:
        Scalar tensor; 0 when the batch has no negative. The per-query mean runs over queries with at
        least one negative.
    """
    n_neg = negative.sum(-1)
    if not bool(n_neg.any()):
        return student_scores.sum() * 0.0
    batch_mean = (student_scores * negative).sum() / n_neg.sum()
    per_query_mean = (student_scores * negative).sum(-1)[n_neg > 0] / n_neg[n_neg > 0]
    return torch.relu(batch_mean - threshold) + per_query_weight * torch.relu(per_query_mean - threshold).mean()
