"""What a teacher is: one small interface every kind of teacher sits behind, and the one rule that decides which kind a
name is.

A kind scores (query, passage) pairs with logits — the numbers the soft labels are built from — and says what it is:

- :class:`~crossdistill.teachers.cross_encoder.CrossEncoderKind`: a one-label cross-encoder (this toolkit's, a
  sentence-transformers ``CrossEncoder`` folder, a transformers classifier, or a hub id of one); its logit;
- :class:`~crossdistill.teachers.dense.DenseKind`: a bi-encoder (a student this toolkit wrote, any sentence-transformers
  embedding model, an offline alias such as ``nomic-embed-text-v1.5``); ``scale · cos``, its embeddings cached;
- :class:`~crossdistill.teachers.scores_file.ScoresFileKind`: the scores of a FlagEmbedding-layout JSONL (no model);
- :class:`~crossdistill.teachers.lexical.BM25Kind`: BM25 over a passage collection (a fusion source).

A new kind is one module here with one class, and a line in :func:`open_kind` if a user names it with
``--teacher_path``.
"""

from __future__ import annotations

import numpy as np

from crossdistill.models.folders import is_bi_encoder_folder  # noqa: F401 - the one rule, re-exported


class TeacherKind:
    """One teacher: ``score(pairs) -> logits``, a ``fingerprint`` (what its cached work is keyed by), ``describe()``."""

    kind = "teacher"
    name: str = ""
    fingerprint: str = ""
    path: str | None = None  # its local folder or file, when it has one (never written into)
    base_model: str | None = None

    def score(self, pairs: list[tuple[str, str]], *, batch_size: int = 64, device=None, log=print,
              on_progress=None) -> tuple[np.ndarray, dict]:
        """(logits of ``pairs`` in order, stats of the work done: distinct pairs, computed now, from the cache)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.kind})"

    def release(self) -> None:
        """Drop a loaded model (a long run keeps the memory for the student); the next score loads it again."""


def open_kind(name: str, *, max_len: int | None = None, precision: str = "auto", device: str = "cpu"):
    """The teacher ``name`` (``--teacher_path``) as its kind: a bi-encoder (folder, alias or hub id of one) is a
    :class:`~crossdistill.teachers.dense.DenseKind`, anything else must be a one-label cross-encoder
    (:func:`~crossdistill.models.teacher_folder.inspect_teacher` refuses the rest in one line). Nothing is loaded."""
    from crossdistill.models.resolve import ALIASES, resolve_model
    from crossdistill.models.teacher_folder import inspect_teacher, locate_teacher
    from crossdistill.teachers.cross_encoder import CrossEncoderKind
    from crossdistill.teachers.dense import DenseKind

    if name in ALIASES:
        return DenseKind(name, resolve_model(name), max_len=max_len, precision=precision, device=device)
    folder = locate_teacher(name)
    if is_bi_encoder_folder(folder):
        return DenseKind(name, resolve_model(folder), max_len=max_len, precision=precision, device=device)
    return CrossEncoderKind(name, inspect_teacher(folder), max_len=max_len)
