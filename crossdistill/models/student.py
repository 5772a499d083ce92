"""The bi-encoder student: a sentence-transformers model, optionally with LoRA, scored by exact cosine.

Loading goes through ``SentenceTransformer(path)`` so a model's own pooling/normalisation config is used
(a plain transformers folder gets mean pooling). The student's score for (q, d) is the exact cosine of
their embeddings, and its normalised score is ``(cos + 1) / 2``.

Queries and passages may be cut at different lengths (:mod:`crossdistill.models.sides`); sentence-transformers keeps
one ``max_seq_length`` per model, so the saved student holds the passage length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crossdistill.core.errors import UsageError
from crossdistill.models.resolve import (
    ResolvedModel,
    apply_lora,
    attention_dropout_kwargs,
    check_max_len,
    check_tokenizer,
    load_or_fail,
)
from crossdistill.models.sides import SIDES, Side, sequence_length


class BiEncoderStudent(torch.nn.Module):
    """Wraps a SentenceTransformer; :meth:`embed` encodes one side's texts with gradients, each side cut at its own
    length (``query_max_len`` / ``passage_max_len``; both the model's ``max_seq_length`` unless given)."""

    def __init__(self, st_model, query_prefix: str = "", passage_prefix: str = "", query_max_len: int | None = None,
                 passage_max_len: int | None = None):
        super().__init__()
        self.st = st_model
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.query_max_len = query_max_len or st_model.max_seq_length
        self.passage_max_len = passage_max_len or st_model.max_seq_length
        # (D, D) orthogonal, fixed: every embedding turned by it (fp32) before the loss sees it (``--matryoshka_pca_start``:
        # the Matryoshka prefixes are then those of its axes); not a state-dict entry, so a resumed run finds it again
        self.register_buffer("rotation", None, persistent=False)

    @classmethod
    def load(cls, resolved: ResolvedModel, max_len: int | None = None, device: str | None = "cpu",
             attention_dropout: float | None = None, query_max_len: int | None = None,
             passage_max_len: int | None = None) -> "BiEncoderStudent":
        """``max_len``: both sides' length, unless ``query_max_len`` / ``passage_max_len`` say otherwise;
        ``attention_dropout``: see :func:`~crossdistill.models.resolve.attention_dropout_kwargs` (None: the model's own)."""
        from sentence_transformers import SentenceTransformer

        overrides = attention_dropout_kwargs(resolved, attention_dropout)
        st = load_or_fail(lambda p: SentenceTransformer(p, device=device, config_kwargs=overrides or None), resolved,
                          "student model")
        if _transformer(st) is None:
            raise UsageError(f"{resolved.name} has no transformer module; the student must be a transformer bi-encoder")
        config = _transformer(st).model.config
        for flag, n in (("--max_len", max_len), ("--query_max_len", query_max_len), ("--passage_max_len", passage_max_len)):
            check_max_len(n, config, f"student {resolved.name}", flag)
        check_tokenizer(st.tokenizer, config, f"student {resolved.name}")
        q_len, p_len = query_max_len or max_len, passage_max_len or max_len
        if p_len:
            st.max_seq_length = p_len  # what the saved folder keeps: sentence-transformers has one length per model
        student = cls(st, resolved.query_prefix, resolved.passage_prefix, q_len, p_len)
        student.freeze_unused()
        return student

    def side(self, side: str) -> Side:
        """The prefix and length of ``side`` ('query' or 'passage')."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        return Side(self.query_prefix, self.query_max_len) if side == "query" else \
            Side(self.passage_prefix, self.passage_max_len)

    def freeze_unused(self) -> None:
        """Freeze the encoder's pooler: sentence embeddings never use it, and DDP insists every trainable
        parameter receives a gradient."""
        for name, p in self.auto_model.named_parameters():
            if "pooler." in name:
                p.requires_grad_(False)

    @property
    def auto_model(self):
        return _transformer(self.st).model

    def add_lora(self, r: int, alpha: int, dropout: float):
        """Replace the encoder by a peft LoRA model (feature extraction); returns the LoraConfig."""
        module = _transformer(self.st)
        module.model, cfg = apply_lora(module.model, r, alpha, dropout, "FEATURE_EXTRACTION")
        self.freeze_unused()
        return cfg

    def pretokenize(self, texts: list[str], side: str = "passage") -> None:
        """Tokenise one side's ``texts`` (prefixes applied) once, truncated to that side's length: :meth:`embed` then
        only pads the cached ids of each batch (``tokenizer.pad``: the very tensors the tokenizer would give), so a
        training step no longer tokenises the same passages again every epoch."""
        cache = self.__dict__.setdefault("_token_ids", {}).setdefault(side, {})
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            ids = self.st.tokenizer(new, truncation="longest_first", max_length=self.side(side).max_len)["input_ids"]
            cache.update(zip(new, ids))

    def _features(self, texts: list[str], side: str) -> dict:
        cache = self.__dict__.get("_token_ids", {}).get(side, {})
        if not cache or any(t not in cache for t in texts):
            with sequence_length(self.st, self.side(side).max_len):
                return self.st.preprocess(texts)
        tok = self.st.tokenizer
        features = dict(tok.pad({"input_ids": [cache[t] for t in texts]}, return_tensors="pt"))
        if "token_type_ids" in tok.model_input_names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        features["modality"] = "text"
        return features

    def embed(self, texts: list[str], side: str = "passage") -> torch.Tensor:
        """(N, D) L2-normalised embeddings of one side's ``texts`` (prefixes already applied), with gradients."""
        features = self._features(texts, side)
        device = next(self.parameters()).device
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        emb = F.normalize(self.st(features)["sentence_embedding"].float(), dim=-1)
        if self.rotation is None:
            return emb
        with torch.autocast(device_type=emb.device.type, enabled=False):  # the turn in fp32: it keeps every cosine
            return emb @ self.rotation.T

    def forward(self, text_lists: list[list[str]], sides: list[str]) -> list[torch.Tensor]:
        """Embeddings of each list of (already prefixed) texts, ``sides[i]`` the side of ``text_lists[i]`` — one call,
        so a DDP wrapper sees one forward."""
        return [self.embed(texts, side) for texts, side in zip(text_lists, sides, strict=True)]

    @torch.no_grad()
    def encode(self, texts: list[str], side: str, batch_size: int, on_progress=None, precision: str = "fp32") -> np.ndarray:
        """(N, D) normalised embeddings of raw ``texts`` of one ``side`` (its prefix and length applied here), each
        text encoded once (:func:`encode_texts`); the module's train/eval mode is restored after."""
        was_training = self.training
        self.eval()
        prefix, max_len = self.side(side)
        with sequence_length(self.st, max_len):
            out = encode_texts(self.st, [prefix + t for t in texts], batch_size, precision, next(self.parameters()).device,
                               on_progress=on_progress)
        self.train(was_training)
        return out if self.rotation is None else out @ self.rotation.cpu().numpy().T

    def cosines(self, queries: list[str], passages: list[str], batch_size: int, on_progress=None,
                precision: str = "fp32") -> np.ndarray:
        """(Q, P) cosines of raw ``queries`` and ``passages``, each text encoded once (:meth:`encode`)."""
        q = self.encode(queries, "query", batch_size, precision=precision)
        return q @ self.encode(passages, "passage", batch_size, on_progress, precision).T

    def save(self, folder: str | Path, rotation: np.ndarray | None = None) -> None:
        """Save a plain sentence-transformers folder (LoRA merged) and, with LoRA, the adapter in ``adapter/``;
        ``rotation`` (D, D): the output turned onto those axes (:func:`crossdistill.models.rotation.with_rotation`),
        after the student's own :attr:`rotation` (the two saved as one ``Dense``), so the folder gives what
        :meth:`encode` gives, turned by ``rotation``."""
        import copy

        from peft import PeftModel

        folder = Path(folder)
        module = _transformer(self.st)
        encoder = module.model
        if isinstance(encoder, PeftModel):
            encoder.save_pretrained(folder / "adapter")
            st = copy.deepcopy(self.st)
            _transformer(st).model = copy.deepcopy(encoder).merge_and_unload()
        else:
            st = self.st
        st.prompts = {"query": self.query_prefix, "passage": self.passage_prefix}
        if self.rotation is not None:
            own = self.rotation.detach().cpu().double().numpy()
            rotation = own if rotation is None else np.asarray(rotation, dtype=np.float64) @ own
        if rotation is not None:
            from crossdistill.models.rotation import with_rotation

            st = with_rotation(st, rotation)
        st.save(str(folder))


def encode_texts(st, texts: list[str], batch_size: int, precision: str = "fp32", device=None, on_progress=None,
                 chunk: int = 2048) -> np.ndarray:
    """(N, D) L2-normalised float32 embeddings of ``texts`` (prefixes already applied) by the SentenceTransformer
    ``st``, without gradients: the one encoding path of the guard, validation, mining, the evaluation and dense
    teachers. sentence-transformers sorts each call's texts by length (little padding); at most ``chunk`` texts per call,
    then a progress event (:func:`~crossdistill.core.events.report_progress`) and ``on_progress(done, total)``;
    ``precision`` ``bf16``: under bf16 autocast (:func:`~crossdistill.core.training.encoding_precision` decides when)."""
    from crossdistill.core.events import report_progress
    from crossdistill.core.training import autocast_for

    if not texts:
        dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else \
            st.get_sentence_embedding_dimension()
        return np.zeros((0, dim or 0), dtype=np.float32)
    device = device or next(st.parameters()).device
    parts = []
    step = min(chunk, max(batch_size * 8, 256))  # texts per encode call (sorted by length inside it); progress after each
    with torch.no_grad(), autocast_for(precision, str(device)):
        for s in range(0, len(texts), step):
            parts.append(np.asarray(st.encode(texts[s:s + step], batch_size=batch_size, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False), dtype=np.float32))
            report_progress("encoding", min(s + step, len(texts)), len(texts))
            if on_progress is not None:
                on_progress(min(s + step, len(texts)), len(texts))
    return np.concatenate(parts)


def _transformer(st):
    from sentence_transformers.base.modules import Transformer

    for module in st:
        if isinstance(module, Transformer):
            return module
    return None
