"""MarginMSE: match the student's positive−negative score margins to the teacher's."""

from __future__ import annotations

import torch


def margin_mse_loss(teacher_scores: torch.Tensor, student_scores: torch.Tensor, positive: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Mean over every (query, positive i, negative j) of ((s_i − s_j) − (t_i − t_j))².

    Only score *differences* are matched, so teacher and student need not share a scale's offset (a
    cross-encoder logit and a scaled cosine), only its unit: pass the student's cosine times a scale.

    Args:
        teacher_scores: (Q, K) teacher scores (logits, or fused per-query scores).
        student_scores: (Q, K) student scores on the teacher's unit (e.g. ``scale * cos``).
        positive: (Q, K) bool, labelled positives; every other real candidate is a negative.
        mask: (Q, K) bool, real candidates.

    Returns:
        Scalar tensor; 0 when no query has both a positive and a negative.

    Reference: Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
    Knowledge Distillation" (2020).
    """
    pos = (positive & mask).float()
    neg = (~positive & mask).float()
    pairs = pos[:, :, None] * neg[:, None, :]  # (Q, K_i, K_j): i positive, j negative
    n = pairs.sum()
    if n == 0:
        return student_scores.sum() * 0.0
    s = student_scores.float()
    t = teacher_scores.float()
    diff = (s[:, :, None] - s[:, None, :]) - (t[:, :, None] - t[:, None, :])
    return (diff.pow(2) * pairs).sum() / n
