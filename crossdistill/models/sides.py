"""Queries and passages encoded each at its own length (FlagEmbedding's ``query_max_len`` / ``passage_max_len``).

Queries are short (a SciFact claim: about 20 tokens) and passages long, so one length for both either cuts passages
to what a query needs or pads queries to what a passage needs. A :class:`Side` is one side's prefix and length;
:func:`sequence_length` sets a model's length for one call (sentence-transformers keeps one ``max_seq_length`` per
model, read when it tokenises).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

SIDES = ("query", "passage")


class Side(NamedTuple):
    """How one side's texts are encoded: the prefix put before each, and the tokens kept (None: the model's own)."""

    prefix: str = ""
    max_len: int | None = None


@contextlib.contextmanager
def sequence_length(model, max_len: int | None):
    """``model.max_seq_length`` (a SentenceTransformer's or an ONNX encoder's) set to ``max_len`` for the block, then
    restored; None leaves it as it is."""
    if not max_len:
        yield
        return
    before = model.max_seq_length
    model.max_seq_length = max_len
    try:
        yield
    finally:
        model.max_seq_length = before
