"""The cross-encoder teacher: one pair encoding for training and scoring, saving, loading.

A teacher is ``AutoModelForSequenceClassification(num_labels=1)``; its relevance is ``sigmoid(logit)``.
Query and passage are always encoded as a tokenizer *pair* (``[CLS] q [SEP] p [SEP]``), truncated
longest-first to ``max_len`` — exactly what ``sentence_transformers.CrossEncoder.predict`` does, so the
saved folder scores the same everywhere.

Saved folder (``save_teacher``): a standard transformers model (LoRA merged, loads without peft),
tokenizer, ``adapter/`` (the peft adapter, when LoRA was used), ``teacher_config.json`` (LoRA settings,
base model, max_len, prefixes) — everything stage 2 needs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from crossdistill.core.errors import UsageError
from crossdistill.models.folders import TEACHER_CONFIG_NAMES, teacher_config_file
from crossdistill.models.resolve import (
    ResolvedModel,
    attention_dropout_kwargs,
    check_max_len,
    check_prefixes,
    check_tokenizer,
    load_or_fail,
)
from crossdistill.models.teacher_folder import inspect_teacher

TEACHER_CONFIG = TEACHER_CONFIG_NAMES[0]
HEAD_NAMES = ("classifier", "pooler", "score")
MEAN_LAYER_SCALE = 1000.0


def add_mean_pooling_layer(model, scale: float = MEAN_LAYER_SCALE) -> None:
    """Append one encoder layer, initialised so that its first-token output is LayerNorm(mean of all tokens).

    A standard sequence-classification head reads the first token ([CLS]/<s>). Encoders trained with mean
    pooling (all-MiniLM-L6-v2, e5) never trained that token to summarise a pair, and a teacher built on it learns
    slowly or collapses (README, "Teacher recipe"). This layer moves mean pooling *inside* the standard
    architecture, so the saved teacher is still a plain ``*ForSequenceClassification`` with one more layer that
    ``AutoModelForSequenceClassification`` and ``CrossEncoder`` load as is. Its initial weights:

    - query = 0: every attention score is 0, so each token attends uniformly to the non-padding tokens;
    - value = I, attention output = ``scale`` * I: the attention output is ``scale * mean(h)``, and the
      residual LayerNorm(scale * mean(h) + h_0) equals LayerNorm(mean(h)) up to ``|h_0| / (scale |mean(h)|)``
      (LayerNorm is scale-invariant), with unit gain and zero bias;
    - feed-forward output = 0: the second residual LayerNorm leaves that unchanged.

    The layer then trains with the encoder like any other. Works for BERT-family layers (BERT, RoBERTa,
    XLM-R, e5); other architectures raise :class:`UsageError`.
    """
    try:
        layers = model.base_model.encoder.layer
        layer = copy.deepcopy(layers[-1])
        q, v, o, ln1, ffn_out, ln2 = (layer.attention.self.query, layer.attention.self.value, layer.attention.output.dense,
                                      layer.attention.output.LayerNorm, layer.output.dense, layer.output.LayerNorm)
    except (AttributeError, IndexError, TypeError):
        raise UsageError(f"--pooling mean needs a BERT-family encoder (BERT, RoBERTa, XLM-R, e5); "
                         f"{type(model).__name__} is not one; use --pooling cls") from None
    if v.weight.shape[0] != v.weight.shape[1] or o.weight.shape[0] != o.weight.shape[1]:
        raise UsageError(f"--pooling mean needs attention projections of the hidden size; {type(model).__name__} "
                         f"has {tuple(v.weight.shape)}; use --pooling cls")
    with torch.no_grad():
        eye = torch.eye(v.weight.shape[0], dtype=v.weight.dtype)
        q.weight.zero_(); q.bias.zero_()
        v.weight.copy_(eye); v.bias.zero_()
        o.weight.copy_(eye * scale); o.bias.zero_()
        ffn_out.weight.zero_(); ffn_out.bias.zero_()
        for ln in (ln1, ln2):
            ln.weight.fill_(1.0); ln.bias.zero_()
    for m in layer.modules():
        if hasattr(m, "layer_idx"):
            m.layer_idx = len(layers)
    layers.append(layer)
    model.config.num_hidden_layers = len(layers)


def has_trained_head(resolved: ResolvedModel) -> bool:
    """Whether the base model already carries a trained one-label classification head (a reranker, a CrossEncoder, a
    teacher this toolkit saved): its config names a ``*ForSequenceClassification`` architecture with one label."""
    from transformers import AutoConfig

    config = load_or_fail(AutoConfig.from_pretrained, resolved, "base model")
    archs = getattr(config, "architectures", None) or []
    return any(str(a).endswith("ForSequenceClassification") for a in archs) and config.num_labels == 1


def resolve_pooling(pooling: str, resolved: ResolvedModel) -> tuple[str, str]:
    """``--pooling`` as the run applies it, and why: ``auto`` keeps a trained classification head as it is (``cls``: the
    head reads what it was trained on) and gives a bare encoder the mean-pooling layer (``mean``)."""
    if pooling != "auto":
        return pooling, f"--pooling {pooling}"
    if has_trained_head(resolved):
        return "cls", "auto: the base model has a trained one-label classification head, kept as it is"
    return "mean", "auto: the base model is a bare encoder; its new head reads the mean of the tokens"


class CrossEncoderTeacher:
    """A sequence-classification model plus its tokenizer, max length and prefixes."""

    def __init__(self, model, tokenizer, max_len: int, query_prefix: str = "", passage_prefix: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.activation = "sigmoid"  # what turns a logit into the teacher's relevance (a loaded folder says its own)

    @classmethod
    def from_base(cls, resolved: ResolvedModel, max_len: int, pooling: str = "mean",
                  attention_dropout: float | None = None) -> "CrossEncoderTeacher":
        """A new teacher on a base encoder; its classification head is freshly initialised (seed first).

        ``pooling="mean"`` appends :func:`add_mean_pooling_layer` so the head reads the mean of the tokens;
        ``"cls"`` keeps the architecture's own first-token head. A teacher folder written by this toolkit as
        base (continued training, e.g. at a longer max_len) keeps its trained layers and head as they are.
        ``attention_dropout``: see :func:`~crossdistill.models.resolve.attention_dropout_kwargs`.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = load_or_fail(AutoTokenizer.from_pretrained, resolved, "base model")
        overrides = attention_dropout_kwargs(resolved, attention_dropout)
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its load report lists the new head as "missing": expected, and said below
        try:
            model = load_or_fail(lambda p: AutoModelForSequenceClassification.from_pretrained(p, num_labels=1, **overrides),
                                 resolved, "base model")
        finally:
            hf_logging.set_verbosity(level)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.config.pad_token_id = tok.pad_token_id
        check_max_len(max_len, model.config, f"teacher base model {resolved.name}")
        check_tokenizer(tok, model.config, f"teacher base model {resolved.name}")
        check_prefixes(tok, max_len, resolved.query_prefix, resolved.passage_prefix, "teacher", pair=True)
        if pooling == "mean" and teacher_config_file(resolved.path) is None:
            add_mean_pooling_layer(model)  # a teacher folder as base (continued training) already has its head
        return cls(model, tok, max_len, resolved.query_prefix, resolved.passage_prefix)

    @classmethod
    def load(cls, path: str | Path, max_len: int | None = None) -> "CrossEncoderTeacher":
        """Load any one-label cross-encoder folder (:func:`inspect_teacher` says which kinds, and refuses the rest):
        a teacher this toolkit wrote, a sentence-transformers ``CrossEncoder`` folder, or a plain transformers one."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        spec = inspect_teacher(path, finished=False)  # whether a run may use it is decided before (open_teachers)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(spec.path, use_safetensors=True)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:  # a config.json that does not match the weights
            msg = next((x.strip() for x in str(exc).splitlines() if x.strip()), type(exc).__name__)[:240]
            raise UsageError(f"teacher {path} does not load ({msg}): its config.json does not describe its weights; "
                             "save the model again (save_pretrained / CrossEncoder.save) or pass another teacher") from None
        if model.config.num_labels != 1:
            raise UsageError(f"{path} is a classifier with {model.config.num_labels} labels, not a relevance teacher (num_labels=1)")
        tok = AutoTokenizer.from_pretrained(spec.path)
        check_max_len(max_len, model.config, f"teacher {path}")
        check_tokenizer(tok, model.config, f"teacher {path}")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        teacher = cls(model, tok, max_len or spec.max_len, spec.query_prefix, spec.passage_prefix)
        teacher.activation = spec.activation
        return teacher

    # ----------------------------------------------------------------- encoding and scoring
    def encode(self, queries: list[str], passages: list[str]):
        return self.tokenizer([self.query_prefix + q for q in queries], [self.passage_prefix + p for p in passages],
                              truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")

    def logits(self, batch) -> torch.Tensor:
        """(B,) logits for an encoded batch."""
        return self.model(**batch).logits.view(-1)

    @torch.no_grad()
    def score(self, pairs: list[tuple[str, str]], batch_size: int = 64, activation: str = "sigmoid",
              device: torch.device | None = None, show_progress: bool = False, on_progress=None,
              progress_every: float = 30.0) -> np.ndarray:
        """Scores of (query, passage) pairs: sigmoid probabilities (or raw logits), in input order.

        Each distinct pair is scored once; batches are formed from length-sorted pairs to limit padding.
        ``on_progress(done, total)`` is called at most every ``progress_every`` seconds and at the end.
        """
        import time

        from tqdm.auto import tqdm

        from crossdistill.core.events import report_progress

        unique = list(dict.fromkeys(pairs))
        order = sorted(range(len(unique)), key=lambda i: len(unique[i][0]) + len(unique[i][1]))
        device = device or next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = np.empty(len(unique), dtype=np.float32)
        last = time.time()
        for s in tqdm(range(0, len(order), batch_size), desc="teacher scoring", disable=not show_progress, leave=False):
            idx = order[s:s + batch_size]
            batch = self.encode([unique[i][0] for i in idx], [unique[i][1] for i in idx]).to(device)
            logit = self.logits(batch).float()
            out[idx] = (torch.sigmoid(logit) if activation == "sigmoid" else logit).cpu().numpy()
            done = min(s + batch_size, len(order))
            report_progress("teacher_scoring", done, len(order))
            if on_progress is not None and (time.time() - last > progress_every or done == len(order)):
                on_progress(done, len(order))
                last = time.time()
        self.model.train(was_training)
        where = {p: i for i, p in enumerate(unique)}
        return out[[where[p] for p in pairs]]


def merged_copy(model):
    """A plain transformers model with any LoRA adapters merged in (the input model is untouched)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model


def save_teacher(teacher: CrossEncoderTeacher, folder: Path, config: dict) -> None:
    """Write ``teacher`` into ``folder``: the standard model (LoRA merged, loads without peft), its tokenizer,
    ``adapter/`` when the model carries LoRA adapters, and ``teacher_config.json`` (an earlier name: :data:`crossdistill.core.legacy.TEACHER_CONFIG`)."""
    from peft import PeftModel

    from crossdistill.core.files import write_json

    folder = Path(folder)
    model = teacher.model
    if isinstance(model, PeftModel):
        model.save_pretrained(folder / "adapter")
    plain = merged_copy(model).to("cpu")
    plain.save_pretrained(folder, safe_serialization=True)
    tokenizer = copy.copy(teacher.tokenizer)
    tokenizer.model_max_length = teacher.max_len  # where CrossEncoder(folder) reads its max_length: it truncates alike
    tokenizer.save_pretrained(folder)
    write_json(folder / TEACHER_CONFIG, {**config, "max_len": teacher.max_len,
                                         "query_prefix": teacher.query_prefix, "passage_prefix": teacher.passage_prefix})
