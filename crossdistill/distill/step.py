"""One optimisation step of the student: encode the batch's queries and distinct passages, score, loss, backward.

:func:`forward_backward` is the one place that calls the model and the loss. Out of memory never skips data: the
stage redoes the step with the batch's texts split into micro-batches whose gradients are combined exactly
(embeddings without gradients first, the loss backpropagated to them, then each micro-batch re-encoded with gradients
under the same RNG state — "gradient caching", Gao et al. 2021). With several processes, in-batch passages can be
gathered across them (``cross_device_negatives``). Not accelerate's ``accumulate``: that enlarges the batch, this
splits one batch exactly.
"""

from __future__ import annotations

import contextlib

import torch

from crossdistill.core import hooks
from crossdistill.core.training import gather_rows, text_keys
from crossdistill.distill.batch import Batch
from crossdistill.losses import BatchScores, LossSettings, distillation_loss
from crossdistill.losses.matryoshka import matryoshka_loss


def batch_scores(q_emb, p_emb, batch: Batch, settings: LossSettings, p_keys=None) -> BatchScores:
    """The batch's scores from its embeddings, in fp32 (under bf16's 8-bit mantissa a cosine near 0.9 keeps about 3
    significant digits, and e5's cosines sit in a band ~0.02 wide that a scale of 100 spreads over the whole softmax).
    ``p_keys`` (keys of the distinct passages) is given when InfoNCE or cross-device negatives need every passage of
    the (global) batch."""
    q_emb, p_emb = q_emb.float(), p_emb.float()
    index, mask, positive = batch.index, batch.mask, batch.positive
    cos = torch.einsum("qd,qkd->qk", q_emb, p_emb[index])
    scores = BatchScores(batch.soft_labels.float(), (cos + 1) / 2, mask, positive)
    if p_keys is not None:
        all_emb, all_keys = gather_rows(p_emb, p_keys) if settings.cross_device_negatives else (p_emb, p_keys)
        own = torch.where(mask, p_keys[index], torch.zeros_like(index))  # (Q, K) keys of each query's candidates
        in_list = (all_keys[None, :, None] == own[:, None, :]) & mask[:, None, :]  # (Q, P, K)
        all_cos = q_emb @ all_emb.T
        if settings.cross_device_negatives:  # the contrastive term's extra negatives: all but the query's candidates
            scores.extra_negatives = ((all_cos + 1) / 2, ~in_list.any(-1))
        is_pos = (in_list & positive[:, None, :]).any(-1)
        scores.in_batch = (all_cos, is_pos, torch.ones_like(is_pos))
        if batch.in_batch_teacher is not None:  # one process: the batch's distinct passages, in their own order
            scores.in_batch_teacher = batch.in_batch_teacher.float()
    return scores


def batch_loss(q_emb, p_emb, batch: Batch, settings: LossSettings, p_keys, step: int) -> dict:
    """The loss dict of a batch from its embeddings, computed in fp32 outside any mixed-precision autocast."""
    with torch.autocast(device_type=q_emb.device.type, enabled=False):  # similarities and losses in fp32
        if settings.matryoshka_dims:  # the whole loss again at each prefix of the embedding
            out = matryoshka_loss(lambda q, p: distillation_loss(batch_scores(q, p, batch, settings, p_keys), settings),
                                  q_emb.float(), p_emb.float(), settings.matryoshka_dims, settings.matryoshka_weights)
        else:
            out = distillation_loss(batch_scores(q_emb, p_emb, batch, settings, p_keys), settings)
    out["loss"] = hooks.on_loss(step, out["loss"])
    return out


def forward_backward(student, batch: Batch, settings: LossSettings, micro: int | None, step: int, accelerator) -> dict:
    """The loss dict of one batch, its gradients accumulated in ``.grad``; ``micro`` = max texts per forward pass.

    ``student`` may be wrapped for distributed training (DDP): every pass that needs gradients goes through one call
    of the wrapper, and only the last micro-batch's backward synchronises gradients."""
    batch = batch.to(accelerator.device)
    p_keys = text_keys(batch.passages).to(accelerator.device) if settings.needs_in_batch else None
    if micro is None or micro >= batch.n_texts:
        hooks.at("forward", step, max(len(batch.queries), len(batch.passages)))
        with accelerator.autocast():
            q_emb, p_emb = student([batch.queries, batch.passages], ["query", "passage"])
        out = batch_loss(q_emb, p_emb, batch, settings, p_keys, step)
        if torch.isfinite(out["loss"]):
            accelerator.backward(out["loss"])
        return out
    chunks = [(side, texts[s:s + micro]) for side, texts in (("query", batch.queries), ("passage", batch.passages))
              for s in range(0, len(texts), micro)]  # each side at its own length
    emb, snaps = _embed_without_grad(accelerator.unwrap_model(student), chunks, step, accelerator)
    out = batch_loss(emb[:len(batch.queries)], emb[len(batch.queries):], batch, settings, p_keys, step)
    if torch.isfinite(out["loss"]):
        accelerator.backward(out["loss"])  # scales the loss under fp16; the cached gradients carry that scale
        _backward_chunks(student, chunks, snaps, emb.grad.split([len(c) for _, c in chunks]), accelerator)
        out["loss"] = out["loss"].detach()
    return out


def _embed_without_grad(model, chunks: list[tuple[str, list[str]]], step: int, accelerator):
    """Every (side, texts) chunk's embeddings without gradients (a leaf that collects the loss's gradient), and the RNG
    state before each chunk (its dropout is replayed exactly when it is re-encoded with gradients)."""
    snaps, embs = [], []
    with torch.no_grad():
        for side, chunk in chunks:
            hooks.at("forward", step, len(chunk))
            snaps.append(_rng_snapshot())
            with accelerator.autocast():
                embs.append(model.embed(chunk, side))
    return torch.cat(embs).detach().requires_grad_(True), snaps


def _backward_chunks(student, chunks, snaps, grads, accelerator) -> None:
    """Re-encode each chunk with gradients under its RNG state and backpropagate its cached gradient."""
    end_snap = _rng_snapshot()
    for i, ((side, chunk), snap, grad) in enumerate(zip(chunks, snaps, grads)):
        _rng_restore(snap)
        sync = contextlib.nullcontext() if i == len(chunks) - 1 else accelerator.no_sync(student)
        with sync:
            with accelerator.autocast():
                (emb,) = student([chunk], [side])
            emb.backward(grad)
    _rng_restore(end_snap)


def _rng_snapshot():
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _rng_restore(snap):
    torch.set_rng_state(snap[0])
    if snap[1] is not None:
        torch.cuda.set_rng_state_all(snap[1])
