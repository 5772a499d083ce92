"""Pointwise binary cross-entropy for the cross-encoder teacher (the SPEC's loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pointwise_bce_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Mean over pairs of −[w · y · log σ(z) + (1 − y) · log(1 − σ(z))].

    Args:
        logits: (N,) the teacher's logits of (query, passage) pairs.
        labels: (N,) 1 for a positive pair, 0 for a negative one.
        pos_weight: w, the weight of positives (``--pos_weight auto``: negatives per positive, so the base rate is no
            easy answer).

    Returns:
        Scalar tensor (``BCEWithLogitsLoss`` with ``pos_weight``).
    """
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(),
                                              pos_weight=torch.tensor(pos_weight, device=logits.device))
