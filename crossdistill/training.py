"""Pieces every training loop shares: seeding, optimizer groups, schedule, timing."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and make cuBLAS deterministic where it can be."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def make_optimizer(model: torch.nn.Module, lr: float, head_lr: float | None, head_names: tuple[str, ...],
                   weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over trainable parameters; those whose name contains one of ``head_names`` get ``head_lr``.

    Biases and LayerNorm weights get no weight decay.
    """
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = any(h in name for h in head_names)
        group_lr = head_lr if (is_head and head_lr) else lr
        wd = 0.0 if (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name) else weight_decay
        groups.setdefault((group_lr, wd), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()])


def linear_schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(round(warmup_ratio * total_steps)), max(total_steps, 1))


def batches(items: list, batch_size: int, rng: random.Random | None = None) -> list[list]:
    """Split ``items`` into batches, shuffled first when ``rng`` is given."""
    order = list(range(len(items)))
    if rng is not None:
        rng.shuffle(order)
    return [[items[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def shard(items: list[int], rank: int, world: int) -> list[int]:
    """This process's share of a global batch (interleaved); never empty, since every DDP process must step."""
    return items[rank::world] or items[:1]


def on_main(accelerator, fn):
    """Run ``fn`` on the main process only and give its result to every process."""
    from accelerate.utils import broadcast_object_list

    result = [fn() if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(result)
    return result[0]


def resolve_precision(choice: str) -> str:
    """``auto``: bf16 on a GPU that has it, fp16 on other GPUs, full precision on CPU."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"
