"""One optimisation step of the student: encode the batch's queries and distinct passages, score, loss, backward.

Out of memory never skips data: :func:`forward_backward` redoes the step with the batch's texts split into
micro-batches whose gradients are combined exactly (embeddings without gradients first, the loss backpropagated
to them, then each micro-batch re-encoded with gradients under the same RNG state — "gradient caching",
Gao et al. 2021). With several processes, in-batch passages can be gathered across them (``gather_rows``).
"""

from __future__ import annotations

import torch

from crossdistill.core import hooks
from crossdistill.core.errors import UsageError, is_oom
from crossdistill.core.training import gather_rows, text_keys
from crossdistill.data.candidates import CandidateList
from crossdistill.distill.recipes import LossSettings
from crossdistill.losses import distillation_loss
from crossdistill.models.student import BiEncoderStudent


def _texts(student: BiEncoderStudent, lists: list[CandidateList]):
    queries = [student.query_prefix + c.query for c in lists]
    unique = list(dict.fromkeys(p for c in lists for p in c.passages))
    where = {p: i for i, p in enumerate(unique)}
    width = max(len(c.passages) for c in lists)
    index = torch.zeros(len(lists), width, dtype=torch.long)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    for i, c in enumerate(lists):
        index[i, :len(c.passages)] = torch.tensor([where[p] for p in c.passages])
        mask[i, :len(c.passages)] = True
    return queries, [student.passage_prefix + p for p in unique], index, mask


def _loss_from_embeddings(q_emb, p_emb, index, mask, soft_labels, positive, loss: LossSettings, p_keys=None) -> dict:
    """The distillation loss of a batch from its embeddings. ``p_keys`` (keys of the batch's distinct passages)
    is given when the InfoNCE term or cross-device negatives need every passage of the (global) batch.

    Similarities and losses are always computed in fp32, outside any mixed-precision autocast: under bf16 (8 bits
    of mantissa) a cosine near 0.9 keeps about 3 significant digits, and e5's cosines sit in a band ~0.02 wide that
    the scale of 100 then spreads over the whole softmax. Both step paths (one pass, gradient caching) call this."""
    with torch.autocast(device_type=q_emb.device.type, enabled=False):
        return _fp32_loss(q_emb.float(), p_emb.float(), index, mask, soft_labels.float(), positive, loss, p_keys)


def _fp32_loss(q_emb, p_emb, index, mask, soft_labels, positive, loss: LossSettings, p_keys) -> dict:
    cos = torch.einsum("qd,qkd->qk", q_emb, p_emb[index])
    student_scores = (cos + 1) / 2
    extra = in_batch = None
    if p_keys is not None:
        all_emb, all_keys = gather_rows(p_emb, p_keys) if loss.cross_device_negatives else (p_emb, p_keys)
        own = torch.where(mask, p_keys[index], torch.zeros_like(index))  # (Q, K) keys of each query's candidates
        in_list = (all_keys[None, :, None] == own[:, None, :]) & mask[:, None, :]  # (Q, P, K)
        all_cos = q_emb @ all_emb.T
        if loss.cross_device_negatives:  # the contrastive term's extra negatives: all but the query's own candidates
            extra = ((all_cos + 1) / 2, ~in_list.any(-1))
        is_pos = (in_list & positive[:, None, :]).any(-1)
        in_batch = (all_cos, is_pos, torch.ones_like(is_pos))
    return distillation_loss(soft_labels, student_scores, mask, positive, tau=loss.tau,
                             contrastive_weight=loss.contrastive_weight,
                             negative_penalty_weight=loss.negative_penalty_weight, extra_negatives=extra,
                             student_tau=loss.student_tau, soft_loss=loss.soft_loss, soft_weight=loss.soft_weight,
                             scale=loss.scale, infonce_weight=loss.infonce_weight, kl_tau_squared=loss.kl_tau_squared,
                             in_batch=in_batch)


def _rng_snapshot():
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _rng_restore(snap):
    torch.set_rng_state(snap[0])
    if snap[1] is not None:
        torch.cuda.set_rng_state_all(snap[1])


def forward_backward(student, lists, soft_labels, positive, loss: LossSettings, micro: int | None, step: int,
                     accelerator) -> dict:
    """Loss of one batch and its gradients (accumulated in ``.grad``); ``micro`` = max texts per forward.

    ``student`` may be wrapped for distributed training (DDP): every pass that needs gradients goes through
    one call of the wrapper, and only the last micro-batch's backward synchronises gradients.
    """
    import contextlib

    model = accelerator.unwrap_model(student)
    device = accelerator.device
    queries, passages, index, mask = _texts(model, lists)
    index, mask, soft_labels, positive = index.to(device), mask.to(device), soft_labels.to(device), positive.to(device)
    p_keys = text_keys(passages).to(device) if (loss.cross_device_negatives or loss.infonce_weight) else None
    if micro is None or micro >= len(queries) + len(passages):
        hooks.at("forward", step, max(len(queries), len(passages)))
        with accelerator.autocast():
            q_emb, p_emb = student([queries, passages])
        out = _loss_from_embeddings(q_emb, p_emb, index, mask, soft_labels, positive, loss, p_keys)  # fp32
        out["loss"] = hooks.on_loss(step, out["loss"])
        if torch.isfinite(out["loss"]):
            accelerator.backward(out["loss"])
        return out
    # gradient caching: exact full-batch gradients with at most `micro` texts per forward pass
    texts = queries + passages
    chunks = [texts[s:s + micro] for s in range(0, len(texts), micro)]
    snaps, embs = [], []
    with torch.no_grad():
        for chunk in chunks:
            hooks.at("forward", step, len(chunk))
            snaps.append(_rng_snapshot())
            with accelerator.autocast():
                embs.append(model.embed(chunk))
    all_emb = torch.cat(embs).detach().requires_grad_(True)
    out = _loss_from_embeddings(all_emb[:len(queries)], all_emb[len(queries):], index, mask, soft_labels, positive, loss,
                                 p_keys)
    out["loss"] = hooks.on_loss(step, out["loss"])
    if not torch.isfinite(out["loss"]):
        return out
    accelerator.backward(out["loss"])  # scales the loss under fp16; the cached gradients carry that scale
    grads = all_emb.grad.split([len(c) for c in chunks])
    end_snap = _rng_snapshot()
    for i, (chunk, snap, grad) in enumerate(zip(chunks, snaps, grads)):
        _rng_restore(snap)
        sync = contextlib.nullcontext() if i == len(chunks) - 1 else accelerator.no_sync(student)
        with sync:
            with accelerator.autocast():
                (emb,) = student([chunk])
            emb.backward(grad)
    _rng_restore(end_snap)
    out["loss"] = out["loss"].detach()
    return out


def n_texts(lists: list[CandidateList]) -> int:
    """Texts one step encodes: its queries and its distinct passages."""
    return len(lists) + len({p for c in lists for p in c.passages})


def train_step(student, batch, loss: LossSettings, state: dict, step: int, accelerator, optimizer, accumulation: int,
               events, log) -> dict:
    """One batch's forward and backward, never skipped: on out-of-memory the same batch is redone in exact
    micro-batches half as large (the size is kept in ``state["micro_batch_size"]`` for the rest of the run and its
    checkpoints, and logged as an ``oom`` event). ``accumulation`` > 1 splits every batch into that many exact
    micro-batches from the start (the same gradient, less memory)."""
    lists, soft_labels, positive = batch
    micro = state["micro_batch_size"]
    if micro is None and accumulation > 1:
        micro = -(-n_texts(lists) // accumulation)
    while True:
        try:
            return forward_backward(student, lists, soft_labels, positive, loss, micro, step, accelerator)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_oom(exc):
                raise
            optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            state["micro_batch_size"] = micro = (micro or n_texts(lists)) // 2
            events.log("oom", step=step, micro_batch_size=micro, error=str(exc)[:200])
            log(f"out of memory at step {step}: retrying with micro-batches of {micro} texts")
            if micro < 1:
                raise UsageError("out of memory even with one text per forward pass; lower --max_len or use a smaller "
                                 "model") from None
