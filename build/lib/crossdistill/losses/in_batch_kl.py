"""In-batch distillation: the student's distribution over every passage of the batch matched to the teacher's."""

from __future__ import annotations

import torch


def in_batch_kl_loss(teacher_logits: torch.Tensor, cos: torch.Tensor, mask: torch.Tensor, tau: float = 1.0,
                     scale: float = 20.0) -> torch.Tensor:
    """Mean over queries of KL(p ‖ q) over the whole batch, p = softmax(teacher / τ), q = softmax(scale · cos).

    .. math::
        \\mathrm{KL}(p \\| q) = \\sum_{j \\in P} p_j (\\log p_j - \\log q_j)

    Where the listwise KL (:func:`~crossdistill.losses.kl.listwise_kl_loss`) sees a query's K candidates, this sees every
    distinct passage of the batch — its own candidates and every other query's — so the student learns the teacher's
    order over many more passages per step at no extra encoding. It needs the teacher's score of every (query, passage)
    pair of the batch, which a bi-encoder teacher gives as one product of cached embeddings.

    Args:
        teacher_logits: (Q, P) the teacher's logits of each query with each passage of the batch (``scale_t · cos_t``
            for a bi-encoder teacher).
        cos: (Q, P) the student's cosines of the same pairs.
        mask: (Q, P) bool, passages that take part.
        tau: teacher temperature τ > 0.
        scale: the student's inverse temperature on cosines.

    Returns:
        Scalar tensor; a query with fewer than two passages in ``mask`` contributes 0 and still counts in the mean.

    Reference: Lin, Yang and Lin 2021, "In-Batch Negatives for Knowledge Distillation with Tightly-Coupled Teachers for
    Dense Retrieval" (TCT-ColBERT); Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".
    """
    if tau <= 0 or scale <= 0:
        raise ValueError("tau and scale must be > 0")
    log_p = torch.log_softmax((teacher_logits.float() / tau).masked_fill(~mask, float("-inf")), dim=-1)
    log_q = torch.log_softmax((cos.float() * scale).masked_fill(~mask, float("-inf")), dim=-1)
    terms = torch.where(mask, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))
    return (terms.sum(-1) * (mask.sum(-1) >= 2)).mean()
