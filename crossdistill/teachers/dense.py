"""A bi-encoder teacher: any sentence-transformers embedding model — a student this toolkit trained (e.g. a bigger
model fine-tuned on the labels alone), an offline alias such as ``nomic-embed-text-v1.5``, a hub id — whose logit of
(query, passage) is ``scale · cos``, ``scale`` the inverse temperature it was trained at
(:func:`~crossdistill.models.resolve.similarity_scale`: its ``distillation_config.json``, 100 for e5, else 20), so that
``softmax(logits)`` over a list is its own contrastive distribution.

It encodes each distinct text once, ever: embeddings live in an
:class:`~crossdistill.teachers.cache.EmbeddingCache` keyed by the model's fingerprint (weights, max length, prefixes,
precision), so the training lists, the guard, the evaluation's and the bench's reranking all read the same vectors,
and any (query, passage) pair — a whole in-batch matrix (:meth:`DenseKind.matrix`) — costs one dot product. Encoding
runs under bf16 autocast where the hardware multiplies bf16 natively
(:func:`~crossdistill.core.training.encoding_precision`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from crossdistill.models.resolve import ResolvedModel, similarity_scale
from crossdistill.teachers.cache import EmbeddingCache, folder_fingerprint, open_cache
from crossdistill.teachers.kinds import TeacherKind


class DenseKind(TeacherKind):
    kind = "bi-encoder"

    def __init__(self, name: str, resolved: ResolvedModel, *, max_len: int | None = None, precision: str = "auto",
                 device: str = "cpu", cache_path: str | Path | None = None, scale: float | None = None):
        from crossdistill.core.training import encoding_precision

        self.name, self.resolved, self.device = name, resolved, str(device)
        self.path = resolved.path if resolved.is_local else None
        self.max_len = max_len or _saved_max_len(resolved)
        self.precision, self.precision_why = encoding_precision(precision, self.device)
        self.scale = float(scale) if scale is not None else similarity_scale(resolved)
        self.query_prefix, self.passage_prefix = resolved.query_prefix, resolved.passage_prefix
        self.base_model = name
        self.fingerprint = folder_fingerprint(resolved.path, self.max_len, self.query_prefix, self.passage_prefix,
                                              self.precision) if resolved.is_local else \
            f"hub-{resolved.path.replace('/', '--')}-{self.max_len}-{self.precision}"
        self.cache_path = cache_path
        self._model = None
        self._memory: dict[str, np.ndarray] = {}  # this run's vectors, by prefixed text

    def describe(self) -> str:
        return (f"{self.name} (bi-encoder, scale {self.scale:g} x cosine, {self.max_len} tokens, "
                f"{self.precision}: {self.precision_why})")

    def model(self):
        """The loaded SentenceTransformer (loaded once, in eval mode)."""
        if self._model is None:
            from crossdistill.models.student import BiEncoderStudent

            self._model = BiEncoderStudent.load(self.resolved, self.max_len, device=self.device).st.eval()
        return self._model

    def encode(self, texts: list[str], side: str, *, batch_size: int = 64, log=print, on_progress=None) -> np.ndarray:
        """(N, D) normalised embeddings of raw ``texts`` as queries (``side="query"``) or passages, each distinct text
        encoded once (this run's memory, then the cache, then the model)."""
        from crossdistill.models.student import encode_texts

        prefix = self.query_prefix if side == "query" else self.passage_prefix
        texts = [prefix + t for t in texts]
        todo = [t for t in dict.fromkeys(texts) if t not in self._memory]
        if todo:
            cache = open_cache(EmbeddingCache, self.cache_path, self.fingerprint, log)
            found = cache.get(todo)
            self._memory.update({todo[i]: v for i, v in found.items()})
            missing = [t for i, t in enumerate(todo) if i not in found]
            if missing:
                log(f"{self.name}: encoding {len(missing)} new texts ({len(todo) - len(missing)} of {len(todo)} cached; "
                    f"{self.precision})")
                vectors = encode_texts(self.model(), missing, batch_size, self.precision, self.device,
                                       on_progress=on_progress)
                cache.put(missing, vectors)
                self._memory.update(zip(missing, vectors))
            cache.close()
        return np.stack([self._memory[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def score(self, pairs, *, batch_size=64, device=None, log=print, on_progress=None):
        t0 = time.time()
        queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
        before = len(self._memory)
        q = self.encode(queries, "query", batch_size=batch_size, log=log)
        p = self.encode(passages, "passage", batch_size=batch_size, log=log, on_progress=on_progress)
        logits = (self.scale * np.einsum("nd,nd->n", q, p)).astype(np.float32)
        unique = len(set(pairs))
        return logits, {"distinct_pairs": unique, "texts_encoded_or_read": len(self._memory) - before,
                        "seconds": round(time.time() - t0, 2)}

    def matrix(self, queries: list[str], passages: list[str], batch_size: int = 64, log=print) -> np.ndarray:
        """(Q, P) logits of every query with every passage: ``scale · cos``."""
        q = self.encode(queries, "query", batch_size=batch_size, log=log)
        p = self.encode(passages, "passage", batch_size=batch_size, log=log)
        return (self.scale * (q @ p.T)).astype(np.float32)

    def release(self) -> None:
        self._model = None


def _saved_max_len(resolved: ResolvedModel) -> int | None:
    """The max length a bi-encoder folder was saved with, 512 at most: ``sentence_bert_config.json``'s
    ``max_seq_length`` (sentence-transformers up to 5), else its tokenizer's ``model_max_length`` (where
    sentence-transformers 6 keeps it); None when neither says."""
    import json

    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        f = Path(resolved.path) / name
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get(key) if f.is_file() else None
        except (OSError, ValueError, AttributeError):
            value = None
        if isinstance(value, int) and value >= 8:
            return min(value, 512)
    return None
