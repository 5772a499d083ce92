"""A cross-encoder teacher: a one-label ``*ForSequenceClassification`` model (this toolkit's, a sentence-transformers
``CrossEncoder`` folder, a plain transformers one, or a hub id of one) whose logit of a (query, passage) pair is its
score. Each pair is scored once (:class:`~crossdistill.teachers.cache.ScoreCache`); the model is loaded when a pair is
missing from the cache, once per run, and kept until :meth:`release`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from crossdistill.models.teacher_folder import TeacherSpec
from crossdistill.teachers.cache import ScoreCache, open_cache, teacher_fingerprint
from crossdistill.teachers.kinds import TeacherKind


class CrossEncoderKind(TeacherKind):
    kind = "cross-encoder"

    def __init__(self, name: str, spec: TeacherSpec, max_len: int | None = None, cache_path: str | Path | None = None):
        self.name, self.spec, self.path = name, spec, spec.path
        self.max_len = max_len  # None: the folder's own
        self.base_model = spec.base_model
        self.fingerprint = teacher_fingerprint(spec.path) + (f"-len{max_len}" if max_len else "")
        self.cache_path = cache_path
        self._model = None

    def describe(self) -> str:
        return f"{self.name} ({self.spec.kind} cross-encoder)"

    def model(self, device=None):
        """The loaded :class:`~crossdistill.models.teacher.CrossEncoderTeacher` (loaded once)."""
        if self._model is None:
            from crossdistill.models.teacher import CrossEncoderTeacher

            self._model = CrossEncoderTeacher.load(self.spec.path, self.max_len)
        if device is not None:
            self._model.model.to(device)
        return self._model

    def score(self, pairs, *, batch_size=64, device=None, log=print, on_progress=None):
        """Logits of ``pairs``; only pairs missing from the cache are scored (the cache: ``cache_path``, or this
        teacher's own file in the toolkit's cache folder)."""
        cache: ScoreCache = open_cache(ScoreCache, self.cache_path, self.fingerprint, log)
        logits = cache.get(pairs)
        missing = sorted({pairs[i] for i in np.flatnonzero(np.isnan(logits))})
        unique = len(set(pairs))
        t0 = time.time()
        if missing:
            log(f"teacher scoring {len(missing)} new pairs ({unique - len(missing)} of {unique} distinct pairs cached)")
            new = self.model(device).score(missing, batch_size=batch_size, activation="logit", device=device,
                                           show_progress=True, on_progress=on_progress)
            cache.put(missing, new)
            fresh = dict(zip(missing, new))
            gaps = np.flatnonzero(np.isnan(logits))
            logits[gaps] = [fresh[pairs[i]] for i in gaps]  # no second read of the cache
        cache.close()
        return logits, {"distinct_pairs": unique, "scored_now": len(missing), "from_cache": unique - len(missing),
                        "seconds": round(time.time() - t0, 2)}

    def release(self) -> None:
        self._model = None
