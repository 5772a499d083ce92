"""One student batch, padded once: the queries, the batch's distinct passages, and per query the positions of its
candidates among them with their soft labels and positive flags."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossdistill.data.candidates import CandidateList


@dataclass
class Batch:
    queries: list[str]         # each query with the student's query prefix
    passages: list[str]        # the batch's distinct passages (each encoded once), with the passage prefix
    index: torch.Tensor        # (Q, K) long: position in ``passages`` of each query's candidates
    mask: torch.Tensor         # (Q, K) bool: real candidates (lists may be shorter than K)
    soft_labels: torch.Tensor  # (Q, K) the teacher's soft labels (logits, probabilities or fused scores)
    positive: torch.Tensor     # (Q, K) bool: labelled (or teacher-judged) positives
    in_batch_teacher: torch.Tensor | None = None  # (Q, P) the teacher's logits of each query with each passage

    @property
    def n_texts(self) -> int:
        """Texts one step encodes: its queries and its distinct passages."""
        return len(self.queries) + len(self.passages)

    def to(self, device) -> "Batch":
        return Batch(self.queries, self.passages, self.index.to(device), self.mask.to(device),
                     self.soft_labels.to(device), self.positive.to(device),
                     None if self.in_batch_teacher is None else self.in_batch_teacher.to(device))


def collate(lists: list[CandidateList], soft_labels: list[torch.Tensor], query_prefix: str = "",
            passage_prefix: str = "", teacher_matrix=None) -> Batch:
    """The batch of ``lists`` with their soft labels (one tensor per list), padded to the longest list;
    ``teacher_matrix(queries, passages) -> (Q, P)``: the teacher's logits of every query with every distinct passage
    of the batch (raw texts), for in-batch distillation."""
    unique = list(dict.fromkeys(p for c in lists for p in c.passages))
    where = {p: i for i, p in enumerate(unique)}
    width = max(len(c.passages) for c in lists)
    index = torch.zeros(len(lists), width, dtype=torch.long)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    soft = torch.zeros(len(lists), width)
    positive = torch.zeros(len(lists), width, dtype=torch.bool)
    for i, (c, s) in enumerate(zip(lists, soft_labels)):
        n = len(c.passages)
        index[i, :n] = torch.tensor([where[p] for p in c.passages])
        mask[i, :n] = True
        soft[i, :n] = s
        positive[i, :n] = torch.tensor(c.positive)
    matrix = None if teacher_matrix is None else torch.from_numpy(teacher_matrix([c.query for c in lists], unique))
    return Batch([query_prefix + c.query for c in lists], [passage_prefix + p for p in unique], index, mask, soft,
                 positive, matrix)
