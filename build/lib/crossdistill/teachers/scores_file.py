"""A scores file as a teacher kind: FlagEmbedding's JSONL layout (one record per query: ``query``, ``pos``, ``neg``,
``pos_scores``, ``neg_scores``; the scores are a teacher's logits), read with every value checked. No model: the
teacher's judgement is only what the file holds, so its lists are the file's own
(:func:`~crossdistill.data.teacher_scores.lists_from_scores`) and a pair it never scored is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.data.teacher_scores import read_scores_file, scores_fingerprint
from crossdistill.teachers.kinds import TeacherKind


class ScoresFileKind(TeacherKind):
    kind = "scores file"

    def __init__(self, path: str | Path, records=None):
        self.path = self.name = str(path)
        self.records = records if records is not None else read_scores_file(path)
        self.fingerprint = scores_fingerprint(path)
        self._logit = {}  # a passage listed twice keeps its first score, a positive's over a negative's (as the lists)
        for r in self.records:
            for p, s in reversed([*zip(r.pos, r.pos_scores), *zip(r.neg, r.neg_scores)]):
                self._logit[(r.query, p)] = s

    def describe(self) -> str:
        return f"the scores of {self.name} (no teacher model)"

    def score(self, pairs, *, batch_size=64, device=None, log=print, on_progress=None):
        missing = [pair for pair in pairs if pair not in self._logit]
        if missing:
            q, p = missing[0]
            raise UsageError(f"{self.name} holds no score of {len(missing)} pair(s) asked for (first: query {q[:60]!r}, "
                             f"passage {p[:60]!r}); score them with teacher_scores.py, or use a teacher model")
        return np.asarray([self._logit[pair] for pair in pairs], dtype=np.float32), {"distinct_pairs": len(set(pairs)),
                                                                                      "from_file": len(set(pairs))}
