"""Listwise KL divergence between teacher and student distributions over each query's candidates."""

from __future__ import annotations

import torch


def _masked_log_softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x.masked_fill(~mask, float("-inf")), dim=-1)


def listwise_kl_loss(teacher_scores: torch.Tensor, student_scores: torch.Tensor, mask: torch.Tensor,
                     tau: float, student_tau: float | None = None) -> torch.Tensor:
    """Mean over queries of KL(p ‖ q), with p = softmax(teacher / τ), q = softmax(student / τ_s).

    .. math::
        \\mathrm{KL}(p \\| q) = \\sum_k p_k (\\log p_k - \\log q_k)

    Args:
        teacher_scores: (Q, K) teacher relevance, e.g. sigmoid probabilities in 0..1 (or logits).
        student_scores: (Q, K) normalised student scores ``(cos + 1) / 2`` in 0..1.
        mask: (Q, K) bool, True for real candidates; padded entries take no probability mass.
        tau: teacher temperature τ > 0 (the original used 0.2 for both sides).
        student_tau: student temperature τ_s > 0; ``None`` = τ (the original). With normalised scores,
            τ_s = 1 / (2·scale) gives the student the logits ``scale · cos`` (up to a constant).

    Returns:
        Scalar tensor. Queries with fewer than two real candidates contribute 0 (a one-item list has no
        distribution to match) but still count in the mean, so the loss scale does not depend on padding.

    Reference: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015); listwise form as in
    RocketQAv2 / sentence-transformers ``DistillKLDivLoss``.
    """
    student_tau = tau if student_tau is None else student_tau
    if tau <= 0 or student_tau <= 0:
        raise ValueError("tau must be > 0")
    log_p = _masked_log_softmax(teacher_scores.float() / tau, mask)
    log_q = _masked_log_softmax(student_scores.float() / student_tau, mask)
    terms = torch.where(mask, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))
    per_query = terms.sum(-1) * (mask.sum(-1) >= 2)
    return per_query.mean()
