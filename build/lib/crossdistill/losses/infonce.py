"""In-batch InfoNCE (multiple-negatives ranking) over every passage of the batch."""

from __future__ import annotations

import torch


def in_batch_infonce_loss(cos: torch.Tensor, positive: torch.Tensor, mask: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """Mean over queries of −log( Σ_{p ∈ P⁺_q} exp(scale·cos_qp) / Σ_{p ∈ P_q} exp(scale·cos_qp) ).

    Each query is scored against every distinct passage of the batch (its own candidates, the other queries'
    candidates and positives, and — with several processes — the passages gathered from the others). Its
    labelled positives are the targets; every other passage in ``mask`` is a negative. With one positive this
    is the multiple-negatives ranking loss of sentence-transformers (``MultipleNegativesRankingLoss``).

    Args:
        cos: (Q, P) cosine similarities of each query with each passage of the batch.
        positive: (Q, P) bool, True where the passage is a labelled positive of the query.
        mask: (Q, P) bool, True for passages that take part (padding False); positives must be inside it.
        scale: inverse temperature applied to the cosines (20 in sentence-transformers and in DPR-style
            training with normalised embeddings).

    Returns:
        Scalar tensor, the mean over queries with at least one positive and one negative; 0 when none has.

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive Coding" (2018);
    Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply" (2017).
    """
    if scale <= 0:
        raise ValueError("scale must be > 0")
    logits = (cos.float() * scale).masked_fill(~mask, float("-inf"))
    pos = positive & mask
    usable = pos.any(-1) & (mask & ~positive).any(-1)
    if not bool(usable.any()):
        return cos.sum() * 0.0
    log_all = torch.logsumexp(logits[usable], dim=-1)
    log_pos = torch.logsumexp(logits[usable].masked_fill(~pos[usable], float("-inf")), dim=-1)
    return (log_all - log_pos).mean()
