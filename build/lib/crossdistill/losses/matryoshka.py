"""Matryoshka: the whole student loss at several prefixes of the embedding.

.. math::
    L_{MRL} = \\sum_{d \\in D} w_d \\cdot L\\big(\\hat q_{:d}, \\hat p_{:d}\\big), \\qquad
    \\hat x_{:d} = x_{:d} / \\lVert x_{:d} \\rVert

Every term of the student's loss (:func:`~crossdistill.losses.total.distillation_loss`) is computed again on the first
``d`` dimensions of each query and passage embedding, re-normalised, for each ``d`` of ``dims``, and the results are
summed with ``weights``; the soft labels stay the teacher's. A student so trained keeps most of its quality when its
vectors are cut to ``d`` dimensions (``SentenceTransformer(folder, truncate_dim=d)``).

Reference: Kusupati et al. 2022, "Matryoshka Representation Learning"; sentence-transformers' ``MatryoshkaLoss``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def truncate(emb: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` dimensions of each row, L2-normalised again (rows of the full size are returned as they are)."""
    return emb if dim >= emb.shape[-1] else F.normalize(emb[..., :dim], dim=-1)


def matryoshka_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], dict], q_emb: torch.Tensor, p_emb: torch.Tensor,
                    dims: tuple[int, ...], weights: tuple[float, ...]) -> dict:
    """``loss`` = Σ_d w_d · ``loss_fn(truncate(q, d), truncate(p, d))["loss"]``; the other entries (each term, for the
    logs) are those of the first (largest) dimension, and ``loss@<d>`` the loss at each dimension (detached)."""
    if len(dims) != len(weights) or not dims:
        raise ValueError("matryoshka_loss needs one weight per dimension")
    total, first = None, None
    at = {}
    for d, w in zip(dims, weights):
        out = loss_fn(truncate(q_emb, d), truncate(p_emb, d))
        total = w * out["loss"] if total is None else total + w * out["loss"]
        at[f"loss@{d}"] = out["loss"].detach()
        first = first or out
    return {**first, **at, "loss": total}
