"""Helper for test_distributed: the gradient of one batch, under N processes (torchrun) or one.

Usage: python ddp_gradient_check.py MODEL VAL_CSV OUT.pt   (rank 0 writes the DDP-averaged gradient)
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from crossdistill.core.training import shard
from crossdistill.data.candidates import build_candidates
from crossdistill.data.versions import read_triplets
from crossdistill.distill.batch import collate
from crossdistill.distill.recipes import loss_settings
from crossdistill.distill.step import forward_backward
from crossdistill.models.resolve import resolve_model
from crossdistill.models.student import BiEncoderStudent


def candidate_lists(val_csv: str, n: int = 4, k: int = 4):
    lists, _ = build_candidates(read_triplets(Path(val_csv)).head(20), k, "bm25", 0)
    lists = lists[:n]
    teacher = torch.Generator().manual_seed(0)
    scores = torch.rand(n, k, generator=teacher)
    return lists, scores


def gradient(model_path: str, val_csv: str, accelerator: Accelerator) -> torch.Tensor:
    lists, scores = candidate_lists(val_csv)
    mine = shard(list(range(len(lists))), accelerator.process_index, accelerator.num_processes)
    # negative_penalty_weight 0: that term uses a batch-level mean, which is per process by design
    args = loss_settings("original", negative_penalty_weight=0.0, cross_device_negatives=True)
    torch.manual_seed(0)
    student = BiEncoderStudent.load(resolve_model(model_path), 48)
    student = accelerator.prepare(student)
    student.eval()
    batch = collate([lists[i] for i in mine], [scores[i, :len(lists[i].passages)] for i in mine])
    forward_backward(student, batch, args, None, 1, accelerator)
    model = accelerator.unwrap_model(student)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


if __name__ == "__main__":
    acc = Accelerator(cpu=True)
    g = gradient(sys.argv[1], sys.argv[2], acc)
    if acc.is_main_process:
        torch.save(g, sys.argv[3])
