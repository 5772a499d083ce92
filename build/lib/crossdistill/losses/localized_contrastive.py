"""Localised contrastive estimation (LCE) for the cross-encoder teacher: one positive against its hard negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def localized_contrastive_loss(logits: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Mean over lists of −log( exp(z_pos) / Σ_{j ∈ list} exp(z_j) ): softmax cross-entropy that puts each list's
    positive first.

    Args:
        logits: (N,) the teacher's logits of every (query, passage) pair of the batch, list after list, each list's
            positive first and its negatives after it.
        sizes: the lists' lengths (1 + negatives each), summing to N; lists may be ragged.

    Returns:
        Scalar tensor, the mean over lists. A list with no negative contributes 0 (nothing to contrast).

    Reference: Gao, Dai and Callan, "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline" (ECIR 2021);
    the listwise loss of sentence-transformers' ``CrossEncoder`` ``MultipleNegativesRankingLoss`` with hard negatives.
    """
    if sum(sizes) != logits.shape[0]:
        raise ValueError(f"sizes sum to {sum(sizes)} but there are {logits.shape[0]} logits")
    width = max(sizes)
    padded = torch.stack([F.pad(x, (0, width - len(x)), value=float("-inf")) for x in torch.split(logits.float(), sizes)])
    return F.cross_entropy(padded, torch.zeros(len(sizes), dtype=torch.long, device=logits.device))
