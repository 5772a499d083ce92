"""PCA rotation of a bi-encoder's vectors: the same model, its output turned onto the principal axes of its own
embeddings, so that a prefix of the vector (``truncate_dim``) keeps as much as a prefix can.

.. math::
    E = U \\Sigma V^\\top \\;\\; (E: N \\times D \\text{ embeddings of } N \\text{ training texts, not centred}),
    \\qquad e' = V^\\top e

:math:`V^\\top` is orthogonal, so every cosine — the student's score — is unchanged at full size; the first :math:`d`
coordinates of :math:`e'` span the :math:`d`-dimensional subspace that keeps the most of the passages' squared length
(Eckart–Young), where the model's own first :math:`d` coordinates are an arbitrary :math:`d` of its :math:`D`. The data
are not centred: a centring bias would change the cosines. By default :math:`E` stacks the training passages and the
training queries, each side scaled to the same total squared length (:func:`sides_weighed_equally`): a truncated
score :math:`q_{:d} \\cdot p_{:d}` needs the axes where the *queries* lie as much as those of the passages (on SciFact,
the axes of the passages alone served queries worst: docs/results.md). In the published folder the rotation is a
sentence-transformers ``Dense`` module (identity activation, no bias) before ``Normalize``, so
``SentenceTransformer(folder, truncate_dim=d)`` serves it and the ONNX encoder applies it after pooling.

Reference: Jolliffe, "Principal Component Analysis" (2002); sentence-transformers' example
``examples/sentence_transformer/training/distillation/dimensionality_reduction.py`` (PCA weights in a ``Dense`` layer).
"""

from __future__ import annotations

import numpy as np

#: the prefix sizes a rotated student is evaluated at, besides its full size (those below it)
TRUNCATE_DIMS = (1024, 768, 512, 256, 128, 64)


def principal_axes(emb: np.ndarray) -> np.ndarray:
    """(D, D) orthogonal matrix whose rows are the principal axes of ``emb`` (N, D), not centred, by decreasing energy;
    each axis signed so that its largest coordinate is positive (one answer for the same embeddings)."""
    emb = np.asarray(emb, dtype=np.float64)
    n, d = emb.shape
    if n < d:
        raise ValueError(f"a PCA rotation of {d}-dimensional vectors needs at least {d} passages; got {n}")
    _, _, vt = np.linalg.svd(emb, full_matrices=False)
    signs = np.sign(vt[np.arange(d), np.abs(vt).argmax(axis=1)])
    return vt * signs[:, None]


def sides_weighed_equally(sides: list[np.ndarray]) -> np.ndarray:
    """The rows of every side (e.g. passages and queries, each (N_i, D), unit rows), each side scaled by
    :math:`1/\\sqrt{N_i}` so that every side holds the same squared length: the axes found on them serve a
    query-passage cosine, not only the more numerous side."""
    return np.vstack([np.asarray(e, dtype=np.float64) / np.sqrt(len(e)) for e in sides])


def energy_kept(emb: np.ndarray, axes: np.ndarray, dims) -> dict[str, float]:
    """Share of the embeddings' squared length in the first ``d`` rotated coordinates, for each ``d`` of ``dims``."""
    rotated = np.asarray(emb, dtype=np.float64) @ axes.T
    total = float((rotated ** 2).sum())
    return {str(d): float((rotated[:, :d] ** 2).sum()) / total for d in dims}


def truncate_dims(dim: int) -> list[int]:
    """The sizes a rotated ``dim``-dimensional student is evaluated at: its own, then those of :data:`TRUNCATE_DIMS`
    below it."""
    return [dim, *(d for d in TRUNCATE_DIMS if d < dim)]


def with_rotation(st, axes: np.ndarray):
    """A SentenceTransformer of ``st``'s modules with ``axes`` (D, D) applied as a ``Dense`` module (identity, no bias)
    before its ``Normalize`` (or last). ``st``'s own modules are shared, not copied."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize

    d = axes.shape[0]
    dense = Dense(d, d, bias=False, activation_function=torch.nn.Identity(),
                  init_weight=torch.tensor(axes, dtype=torch.float32))
    modules = list(st)
    at = next((i for i, m in enumerate(modules) if isinstance(m, Normalize)), len(modules))
    rotated = SentenceTransformer(modules=[*modules[:at], dense, *modules[at:]], device=str(st.device))
    rotated.prompts = dict(st.prompts or {})  # the student's own prompts, nothing added
    rotated.default_prompt_name = st.default_prompt_name
    rotated.similarity_fn_name = st.similarity_fn_name
    rotated.max_seq_length = st.max_seq_length
    return rotated
