"""One record per query, grouped once: the shape every stage reads a prepared version in.

The prepared CSV stays the user-facing format (SPEC.md's ``anchor,positive,negative``, one row per (query, positive,
negative)); :func:`group_rows` reads it into :class:`QueryRecord`s — FlagEmbedding's record (``query``, ``pos``,
``neg``) plus the rows as index pairs — and the teacher's training groups, the student's candidate lists and the
val/test pools are all built from those records. (prepare_data.py's own reader of raw sources stays apart: it turns
pairs without negatives and corpus ids into a version, and its order defines the version's bytes.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class QueryRecord:
    query: str
    pos: list[str] = field(default_factory=list)  # its positives, each once, in first-seen order
    neg: list[str] = field(default_factory=list)  # its negatives, each once, in first-seen order (a positive may be one)
    rows: list[tuple[int, int]] = field(default_factory=list)  # each CSV row as (index in pos, index in neg)

    def negatives_of(self, i: int) -> list[str]:
        """The negatives the rows give ``pos[i]``, each once, in row order, never ``pos[i]`` itself."""
        out = dict.fromkeys(self.neg[j] for p, j in self.rows if p == i and self.neg[j] != self.pos[i])
        return list(out)


def group_rows(df: pd.DataFrame) -> list[QueryRecord]:
    """The rows of a prepared CSV (``anchor, positive[, negative]``) as one record per distinct anchor, in first-seen
    order. A version's rows come grouped by query, so the records keep the rows' order."""
    records: dict[str, QueryRecord] = {}
    has_negative = "negative" in df.columns
    for row in df.itertuples(index=False):
        rec = records.setdefault(row.anchor, QueryRecord(row.anchor))
        i = _index(rec.pos, row.positive)
        if has_negative:
            rec.rows.append((i, _index(rec.neg, row.negative)))
    return list(records.values())


def _index(items: list[str], text: str) -> int:
    try:
        return items.index(text)
    except ValueError:
        items.append(text)
        return len(items) - 1
