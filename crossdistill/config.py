"""Each entry point's settings as one typed, frozen dataclass that owns its flags: name, default, help and check.

:class:`PrepareConfig`, :class:`TeacherConfig`, :class:`StudentConfig`, :class:`EvalConfig` and :class:`MonitorConfig`
each generate their script's parser (:meth:`Config.parser`) and are built by :meth:`Config.parse`: parse → the
class's own resolution of defaults that depend on other flags (:meth:`Config.resolve`, e.g. a loss recipe) → every
check (:meth:`Config.check`) → a frozen value the library reads (``cfg.max_len``) and nobody mutates. Below the five
scripts there is no argparse Namespace. A setting several entry points share is declared once, in a base class
(``--seed``, ``--data_root``/``--data_version``, ``--mining_model``, ``--overwrite``); a value a run resolves later (the
student's similarity scale, its score-cache path) is set with :func:`dataclasses.replace`, giving a new config.

A flag whose name misled is renamed with its old spelling kept as a deprecated alias that warns (for example
``--gradient_accumulation_steps``, which here splits a batch into exact micro-batches instead of enlarging it as in
Hugging Face: now ``--micro_batches``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import ClassVar

from .errors import UsageError

_REQUIRED = dataclasses.MISSING


def setting(default=_REQUIRED, help: str = "", *, choices=None, check: tuple | None = None,
            aliases: dict[str, str] | None = None, flag: bool = True, repeatable: bool = False):
    """A field that is also a flag: its default, ``help``, argparse ``choices``, ``check`` = (predicate, "requirement")
    applied to non-None values, ``aliases`` = {old spelling: deprecation note}; ``flag=False``: resolved by the run,
    not given on the command line; ``repeatable``: the flag may be given several times, its values joined by commas."""
    meta = {"help": help, "choices": choices, "check": check, "aliases": aliases or {}, "flag": flag,
            "repeatable": repeatable}
    return field(default=default, metadata=meta)


# checks, as (predicate, requirement)
POSITIVE = (lambda v: math.isfinite(v) and v > 0, "> 0 and finite")
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, ">= 0 and finite")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
PROBABILITY = (lambda v: 0 <= v < 1, "in [0, 1)")
TEMPERATURE = (lambda v: math.isfinite(v) and 1e-3 <= v <= 1e3, "> 0, at least 0.001 and at most 1000")
SEED = (lambda v: 0 <= v <= 2**32 - 1, "between 0 and 4294967295 (numpy's and Python's seed range)")
MAX_LEN = (lambda v: v >= 8, ">= 8")
# bounded where an absurd value would only surface later as "loss became nan" (and the monitor would halve the lr)
LOSS_WEIGHT = (lambda v: math.isfinite(v) and 0 <= v <= 1000, "between 0 and 1000")
SCALE = (lambda v: math.isfinite(v) and 0 < v <= 1000, "> 0 and at most 1000 (MiniLM trained at 20, e5 at 100)")
WEIGHT_DECAY = (lambda v: math.isfinite(v) and 0 <= v <= 10, "between 0 and 10 (AdamW's default is 0.01)")


def _flag_type(annotation: str):
    a = str(annotation)
    return bool if a == "bool" else int if "int" in a.split("|")[0] else float if "float" in a else str


class _DeprecatedAlias(argparse.Action):
    def __init__(self, *args, note: str = "", **kw):
        self.note = note
        super().__init__(*args, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated: {self.note}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values if values is not None else True)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Machinery every entry point's config shares: parser generation, parsing, checks, the settings as a dict."""

    description: ClassVar[str] = ""

    @classmethod
    def parser(cls, description: str | None = None) -> argparse.ArgumentParser:
        """The script's parser: one flag per field (defaults shown in ``--help``, no abbreviations)."""
        from .cli import make_parser

        p = make_parser(description or cls.description or cls.__doc__ or "")
        for f in fields(cls):
            m = f.metadata
            if not m.get("flag", False):
                continue
            kind = _flag_type(f.type)
            kw: dict = {"help": m["help"], "dest": f.name}
            if kind is bool:
                kw["action"] = "store_true"
            elif m.get("repeatable"):
                kw.update(action="append", type=kind)
            else:
                kw["type"] = kind
                if m["choices"]:
                    kw["choices"] = m["choices"]
                if f.default is _REQUIRED:
                    kw["required"] = True
                else:
                    kw["default"] = f.default
            p.add_argument(f"--{f.name}", **kw)
            for old, note in m["aliases"].items():
                extra = {"nargs": 0} if kind is bool else {"type": kind}
                p.add_argument(old, dest=f.name, action=_DeprecatedAlias, note=note, help=argparse.SUPPRESS, **extra)
        return p

    @classmethod
    def parse(cls, argv=None, description: str | None = None, **extra):
        """Parse ``argv`` (plus ``extra`` settings that are not flags), resolve, check: the config, or a UsageError
        naming the first bad flag."""
        values = vars(cls.parser(description).parse_args(argv))
        for f in fields(cls):  # a repeatable flag given several times: one comma-joined value
            if f.metadata.get("repeatable") and isinstance(values.get(f.name), list):
                values[f.name] = ",".join(values[f.name])
        return cls(**values, **extra).resolve().checked()

    def resolve(self):
        """Defaults that depend on other flags (a new config); the base class has none."""
        return self

    def checked(self):
        """Every field's check, then the class's own (:meth:`check`); returns self."""
        for f in fields(self):
            rule, value = f.metadata.get("check"), getattr(self, f.name)
            if rule and value is not None and not rule[0](value):
                raise UsageError(f"--{f.name} must be {rule[1]} (got {value!r}); pass a value that is {rule[1]}")
        self.check()
        return self

    def check(self) -> None:
        """Checks across flags; the base class has none."""

    def to_dict(self) -> dict:
        """Every setting, as written to a run's settings file."""
        return dataclasses.asdict(self)

    @classmethod
    def default(cls, name: str):
        """The default of setting ``name`` (what a flag left out means)."""
        return next(f.default for f in fields(cls) if f.name == name)


# --------------------------------------------------------------------------- settings several entry points share
@dataclass(frozen=True, kw_only=True)
class DataLocation(Config):
    data_root: str = setting("preprocessed", "folder holding the prepared data versions",
                             aliases={"--output_root": "it is the same folder the training scripts call --data_root; "
                                                       "use --data_root"})
    data_version: str = setting("scifact", "name of a prepared data version: the folder <data_root>/<data_version>")

    def check(self) -> None:
        from .data import check_version_name

        if self.data_version is not None:
            check_version_name(self.data_version)
        super().check()


@dataclass(frozen=True, kw_only=True)
class Seeded(Config):
    seed: int = setting(42, "seed of every random choice (same inputs and seed give the same result)", check=SEED)


@dataclass(frozen=True, kw_only=True)
class Mining(Config):
    mining_model: str = setting("minilm-l6", "bi-encoder that ranks passages for model-mined negatives")


@dataclass(frozen=True, kw_only=True)
class Replaceable(Config):
    overwrite: bool = setting(False, "replace an existing output, only one this toolkit wrote (of the same kind), and "
                                     "only once every input checked out")


# --------------------------------------------------------------------------- prepare_data.py
@dataclass(frozen=True, kw_only=True)
class PrepareConfig(DataLocation, Seeded, Mining, Replaceable):
    """``prepare_data.py``'s settings."""

    source: str = setting(help="labelled data: a BEIR folder (or BEIR dataset name, online), a SQuAD/KorQuAD .json, "
                               "triplets or pairs as .csv/.tsv/.jsonl/.parquet, a `datasets` folder (save_to_disk) or, "
                               "online, a Hugging Face dataset id")
    source_type: str | None = setting(None, "override the detected source type",
                                      choices=["beir", "squad", "csv", "tsv", "jsonl", "parquet", "hf"])
    data_version: str = setting(help="name of the prepared data version: the folder <data_root>/<data_version>")
    columns: str | None = setting(None, "map your column names: 'anchor=question,positive=answer[,negative=...]' "
                                        "(common names are recognised without it)")
    corpus: str | None = setting(None, "passages to mine negatives from and to rank val/test queries against: .jsonl, "
                                       ".csv/.tsv or .parquet with id and text, or a .txt with one passage per line")
    negatives: str = setting("bm25", "how negatives are mined (keep: the triplets' own negatives)",
                             choices=["bm25", "model", "random", "keep"])
    num_negatives: int = setting(4, "mined (hard) negatives per (query, positive)", check=AT_LEAST_1)
    random_negatives: int | None = setting(
        None, "extra random (easy) negatives per (query, positive), after the mined ones (default: 3 with --negatives "
              "bm25/model, 0 with random/keep); a teacher trained from scratch on hard negatives alone learned far less "
              "here (docs/experiments.md, 'Teacher recipe')", check=NON_NEGATIVE)
    rank_window: str = setting("0:100", "START:END ranks of the miner's list to take negatives from")
    fn_margin: float | None = setting(None, "false-negative guard: skip candidates scoring >= (1 - margin) x the "
                                            "positive's score", check=PROBABILITY)
    same_group_negatives: str = setting("exclude", "SQuAD/KorQuAD: may a paragraph of the question's own article be its "
                                                   "negative?", choices=["exclude", "allow"])
    val_fraction: float = setting(0.1, "share of queries (or articles) held out for val when the source has no val split",
                                  check=PROBABILITY)
    test_fraction: float = setting(0.1, "share held out for test when the source has no test split", check=PROBABILITY)

    @property
    def rank_range(self) -> tuple[int, int]:
        start, end = (int(x) for x in self.rank_window.split(":"))
        return start, end

    def resolve(self):
        if self.random_negatives is None:  # easy negatives beside mined hard ones; kept or random ones stay as asked
            return dataclasses.replace(self, random_negatives=3 if self.negatives in ("bm25", "model") else 0)
        return self

    def check(self) -> None:
        try:
            start, end = self.rank_range
            if not 0 <= start < end:
                raise ValueError
        except ValueError:
            raise UsageError(f"--rank_window must be START:END with 0 <= START < END (got {self.rank_window!r}); "
                             "e.g. 0:100") from None
        if self.val_fraction + self.test_fraction >= 1:
            raise UsageError("--val_fraction + --test_fraction must be < 1; lower them")
        super().check()


# --------------------------------------------------------------------------- the two training stages
_MICRO = ("it splits each batch into N exact micro-batches (the same result, less memory), unlike Hugging Face's "
          "gradient accumulation, which enlarges the batch; the new name is --micro_batches")


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(DataLocation, Seeded, Replaceable):
    """The settings both training stages share; each stage declares the ones whose meaning or default differ
    (``--output_dir``, ``--batch_size``, ``--lr``, ``--max_len``)."""

    epochs: int = setting(3, "passes over the training data", check=AT_LEAST_1)
    use_lora: bool = setting(False, "train LoRA adapters (peft) instead of all weights")
    lora_r: int = setting(32, "LoRA rank (with --use_lora)", check=AT_LEAST_1)
    lora_alpha: int = setting(64, "LoRA scaling alpha (with --use_lora)", check=POSITIVE)
    lora_dropout: float = setting(0.1, "LoRA dropout (with --use_lora)", check=PROBABILITY)
    max_samples: int | None = setting(None, "seeded random subset of the training queries, each with all its rows, up to "
                                            "this many rows", check=AT_LEAST_1)
    attention_dropout: float | None = setting(
        None, "dropout on attention probabilities while training (default: the model's own, 0.1 for MiniLM and e5); 0 lets "
              "PyTorch use its fused attention kernel: on CPU 1.2-1.3x faster steps and about a third less memory",
        check=PROBABILITY)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and LayerNorm)", check=WEIGHT_DECAY)
    warmup_ratio: float = setting(0.1, "fraction of the steps spent warming the learning rate up", check=PROBABILITY)
    max_grad_norm: float = setting(1.0, "gradient clipping norm", check=POSITIVE)
    eval_batch_size: int = setting(64, "batch size for validation, teacher scoring and encoding", check=AT_LEAST_1)
    max_val_samples: int | None = setting(None, "seeded subset of the val queries, each with all its rows, up to this many "
                                                "rows (faster validation)", check=AT_LEAST_1)
    query_prefix: str | None = setting(None, "text put before each query (default: the model's prompts or family "
                                             "convention)")
    passage_prefix: str | None = setting(None, "text put before each passage (default: the model's prompts or family "
                                               "convention)")
    log_steps: int = setting(5, "write a step event (read by the monitor) every N steps", check=AT_LEAST_1)
    save_steps: int = setting(50, "checkpoint every N steps (and at every epoch end); 0: epoch ends only",
                              check=NON_NEGATIVE)
    resume: bool = setting(False, "continue from the last complete checkpoint in --output_dir")
    mixed_precision: str = setting("auto", "auto: bf16 on GPUs that have it, fp16 on other GPUs, full precision on CPU",
                                   choices=["auto", "no", "fp16", "bf16"])
    gradient_checkpointing: bool = setting(False, "trade compute for activation memory")
    micro_batches: int = setting(1, "run each batch as N exact micro-batches: the same result, less memory",
                                 check=AT_LEAST_1, aliases={"--gradient_accumulation_steps": _MICRO})
    report_to: str = setting("none", "training curves (loss, lr, val metrics) for TensorBoard in <output_dir>/runs (pip "
                                     "install tensorboard)", choices=["none", "tensorboard"])
    device: str = setting("auto", "auto: GPU when there is one; cpu: force the CPU", choices=["auto", "cpu"])

    def check(self) -> None:
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other; pass one")
        super().check()


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(TrainingConfig):
    """``train_teacher_model.py``'s settings."""

    model_name: str = setting("minilm-l6", "base encoder: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) "
                                           "or alias (minilm-l6, multilingual-e5-small)")
    output_dir: str = setting("./models/cross_encoder_teacher", "folder of the published teacher (checkpoints while "
                                                                "training)")
    batch_size: int = setting(16, "pairs (bce) or lists (listwise) per step and process", check=AT_LEAST_1)
    lr: float = setting(5e-5, "learning rate of the encoder (or of its LoRA adapters)", check=POSITIVE)
    max_len: int = setting(256, "max tokens of the (query, passage) pair", check=MAX_LEN)
    loss: str = setting("bce", "bce: pointwise with pos_weight; listwise: softmax cross-entropy of each positive against "
                               "its negatives (localised contrastive estimation)", choices=["bce", "listwise"])
    pooling: str = setting("auto", "what the head reads: 'auto' keeps a base model's trained one-label classification "
                                    "head (a reranker: 'cls') and gives a bare encoder 'mean'; 'mean' appends one encoder "
                                    "layer initialised to mean pooling (the saved model stays a standard "
                                    "*ForSequenceClassification); 'cls' = the first token, as is",
                           choices=["auto", "mean", "cls"])
    pos_weight: str = setting("auto", "bce weight of positives: a number or 'auto' (negatives per positive)")
    head_lr: float | None = setting(None, "learning rate of the classification head (default: 1e-3 for a new head, --lr "
                                          "for a trained one that --pooling keeps)", check=POSITIVE)

    def check(self) -> None:
        if self.pos_weight != "auto":
            try:
                if not math.isfinite(float(self.pos_weight)) or float(self.pos_weight) <= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(f"--pos_weight must be 'auto' or a finite number > 0 (got {self.pos_weight!r})") from None
        super().check()


@dataclass(frozen=True, kw_only=True)
class StudentConfig(TrainingConfig, Mining):
    """``train_distillation_pipeline.py``'s settings. The loss settings a flag leaves unset (None) are filled by the
    recipe (:meth:`resolve`); the scale and the score cache are resolved by the run."""

    teacher_path: str | None = setting(None, "the teacher: a cross-encoder folder (train_teacher_model.py's, a "
                                              "sentence-transformers CrossEncoder, a one-label transformers classifier) "
                                              "or hub id; several teachers: repeat the flag or give a comma list (their "
                                              "scores standardised per query and averaged, --teacher_weights)",
                                       repeatable=True)
    teacher_weights: str | None = setting(None, "with several --teacher_path: one weight per teacher, e.g. 2,1 "
                                                "(default equal)")
    teacher_scores: str | None = setting(None, "train on teacher scores instead of a teacher model: a JSONL in "
                                               "FlagEmbedding's layout (query, pos, neg, pos_scores, neg_scores), e.g. "
                                               "written by teacher_scores.py; default without --teacher_path: the data "
                                               "version's teacher_scores.jsonl (prepared from a scored source)")
    student_name: str = setting("minilm-l6", "student: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) or "
                                             "alias (minilm-l6, multilingual-e5-small)")
    output_dir: str = setting(help="folder of the published student (checkpoints while training)")
    batch_size: int = setting(16, "queries per step and process (each with K candidates); global batch = this x "
                                  "processes", check=AT_LEAST_1)
    lr: float = setting(2e-5, "learning rate (AdamW, linear warm-up and decay)", check=POSITIVE)
    max_len: int = setting(256, "max tokens per query/passage for the student", check=MAX_LEN)
    K: int = setting(16, "candidates per query: positives, CSV negatives, mined negatives", check=(lambda v: v >= 2, ">= 2"))
    recipe: str = setting("ranking", "loss settings every unset loss flag takes: 'ranking' = KL from teacher logits to "
                                     "scale*cos + in-batch InfoNCE (measured best); 'original' = SPEC.md's KL(prob/0.2) + "
                                     "0.3 contrastive + 0.4 negative penalty", choices=["ranking", "original"])
    tau: float | None = setting(None, "teacher temperature of the listwise KL (ranking 1.0, original 0.2)",
                                check=TEMPERATURE)
    contrastive_weight: float | None = setting(None, "weight of the margin term (ranking 0, original 0.3)",
                                               check=LOSS_WEIGHT)
    negative_penalty_weight: float | None = setting(None, "weight of the negative-score penalty (ranking 0, original 0.4)",
                                                    check=LOSS_WEIGHT)
    negative_source: str = setting("bm25", "how lists are filled up to K beyond the CSV's negatives",
                                   choices=["bm25", "model", "random"])
    soft_labels: str | None = setting(None, "teacher scores fed to softmax(./tau): sigmoid probabilities (original) or "
                                            "logits (ranking)", choices=["prob", "logit"])
    soft_loss: str | None = setting(None, "soft-label term: listwise KL, or MarginMSE (Hofstaetter et al.) on scale*cos "
                                          "(default kl)", choices=["kl", "margin_mse"])
    soft_weight: float | None = setting(None, "weight of the soft-label term (default 1)", check=LOSS_WEIGHT)
    kl_student: str | None = setting(None, "the KL's student side: 'scaled' = softmax(scale*cos) (ranking), 'tau' = "
                                           "softmax(((cos+1)/2)/tau) (original)", choices=["scaled", "tau"])
    infonce_weight: float | None = setting(None, "weight of the in-batch InfoNCE on labelled positives, every other "
                                                 "passage of the batch a negative (ranking 1, original 0)",
                                           check=LOSS_WEIGHT)
    kl_tau_squared: bool = setting(False, "multiply the KL by tau^2 (Hinton et al.; sentence-transformers' "
                                          "DistillKLDivLoss), so its weight against InfoNCE does not move with --tau")
    scale: float | None = setting(None, "inverse temperature on cosines for InfoNCE, MarginMSE and the scaled KL "
                                        "(default: the student's own, 100 for e5 models, 20 otherwise)", check=SCALE)
    teacher_fusion: str | None = setting(None, "soft labels = z(teacher logit) + sum of w*z(source) per query, e.g. "
                                               "'bm25=0.5' or 'bm25=0.5,student=0.2'; 'none' = the teacher alone")
    fusion_model: str | None = setting(None, "with --teacher_fusion dense=W: the bi-encoder (folder or alias) whose cosines "
                                             "are the dense source, e.g. a student trained on the labels alone")
    val_pool: str = setting("auto", "passages the val queries are ranked against: 'corpus' = the corpus prepared with "
                                    "the data (BEIR, or prepare_data.py --corpus), 'csv' = the val CSV's passages, "
                                    "'auto' = corpus when the data has one, else csv", choices=["auto", "csv", "corpus"])
    positive_definition: str = setting("label", "which candidates count as positives in the contrastive, InfoNCE and "
                                                "MarginMSE terms: ground-truth labels, or teacher prob > 0.5 (original)",
                                       choices=["label", "teacher"])
    cross_device_negatives: bool = setting(False, "every other passage of the global batch is also a negative of each "
                                                  "query, in the contrastive term and the in-batch InfoNCE: gathered "
                                                  "from all processes with gradients (one process: the batch's own)")
    allow_weaker_teacher: bool = setting(False, "distil even when the teacher ranks the val pool worse than the starting "
                                                "student")
    keep: str = setting("best", "which model to publish: 'best' = highest val MRR@10, the starting student included; "
                                "'last' = the last epoch's (e.g. when calibrated scores matter more than ranking)",
                        choices=["best", "last"])
    guard_k: int = setting(20, "teacher reranks the student's top-k of the val pool for the guard", check=AT_LEAST_1)
    micro_batch_size: int | None = setting(None, "max texts per forward pass (gradients combined exactly); set "
                                                 "automatically on out-of-memory", check=AT_LEAST_1)
    score_cache: str | None = setting(None, "SQLite file of teacher scores (default: per-teacher file in the cache)")
    export: str | None = setting(None, "also export the published student for serving: 'onnx', 'onnx-int8' or both "
                                       "('onnx,onnx-int8'); see export_student.py")

    def resolve(self):
        from .recipes import STUDENT_RECIPES

        unset = {k: v for k, v in STUDENT_RECIPES[self.recipe].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset)

    def check(self) -> None:
        from .export import parse_formats
        from .fusion import parse_fusion

        if self.teacher_path and self.teacher_scores:
            raise UsageError("--teacher_path and --teacher_scores both name the teacher; pass one: the model (its scores "
                             "are computed and cached) or the scores file (no model needed)")
        if self.teacher_weights is not None:
            from .teacher_scores import parse_weights, split_paths

            parse_weights(self.teacher_weights, len(split_paths(self.teacher_path)) or 1)
        if not any((self.soft_weight, self.infonce_weight, self.contrastive_weight, self.negative_penalty_weight)):
            raise UsageError("every loss term is weighted 0 (--soft_weight, --infonce_weight, --contrastive_weight, "
                             "--negative_penalty_weight), so the student would train at loss 0 and learn nothing; give one "
                             "a weight > 0")
        if ("dense" in parse_fusion(self.teacher_fusion)) != bool(self.fusion_model):
            raise UsageError("--teacher_fusion dense=W and --fusion_model go together: the dense source is the cosine of "
                             "the --fusion_model bi-encoder")
        if parse_fusion(self.teacher_fusion) and self.soft_labels == "prob":  # a malformed spec is refused there
            raise UsageError("--teacher_fusion fuses the teacher's logits (per-query z-scores), so it cannot be combined "
                             "with --soft_labels prob (the original recipe's default); pass --soft_labels logit, or leave "
                             "fusion out")
        parse_formats(self.export)
        super().check()


# --------------------------------------------------------------------------- evaluate_final_model.py
@dataclass(frozen=True, kw_only=True)
class EvalConfig(DataLocation, Replaceable):
    """``evaluate_final_model.py``'s settings."""

    model_path: str = setting(help="student folder (or alias/hub id of any bi-encoder)")
    test_data: str | None = setting(None, "test CSV with anchor,positive,negative (default: <data_root>/<data_version>/"
                                          "test.csv when --data_version is given)")
    output_dir: str = setting(help="folder for bi_encoder_evaluation_results.json, report.md and the figures")
    data_version: str | None = setting(None, "a prepared data version: its test.csv, and its corpus (corpus.jsonl) as the "
                                             "full-corpus retrieval pool")
    batch_size: int = setting(32, "texts per encoding batch", check=AT_LEAST_1)
    beir_dir: str | None = setting(None, "BEIR folder: also retrieve over its full corpus")
    split: str = setting("test", "qrels split of --beir_dir")
    corpus: str | None = setting(None, "your corpus (.jsonl/.csv/.tsv/.parquet with id and text, or .txt): retrieve the "
                                       "test queries over it; with --queries and --qrels, or the test CSV's queries")
    queries: str | None = setting(None, "with --corpus: your queries (.jsonl/.csv/.tsv/.parquet with id and text)")
    qrels: str | None = setting(None, "with --corpus and --queries: relevance pairs (query-id, corpus-id[, score]) as "
                                      ".tsv/.csv/.jsonl")
    base_model: str | None = setting(None, "baseline bi-encoder (e.g. the student before distillation)")
    bm25: bool = setting(False, "add BM25 as a baseline")
    teacher_path: str | None = setting(None, "add the teacher reranking the student's top-k")
    rerank_k: int = setting(30, "with --teacher_path: how many of the student's top passages the teacher reranks",
                            check=AT_LEAST_1)
    max_len: int | None = setting(None, "override the model's max sequence length", check=MAX_LEN)
    num_samples: int = setting(8, "sample pairs printed and put in the report", check=AT_LEAST_1)
    backend: str = setting("torch", "how the student runs: its PyTorch weights, or the ONNX model (fp32 or int8) that "
                                    "export_student.py / --export wrote into it", choices=["torch", "onnx", "onnx-int8"])

    def resolve(self):
        if self.test_data is None and self.data_version:
            from pathlib import Path

            return dataclasses.replace(self, test_data=str(Path(self.data_root) / self.data_version / "test.csv"))
        return self

    def check(self) -> None:
        if self.test_data is None:
            raise UsageError("pass --test_data (a test CSV) or --data_version (a prepared version's test.csv)")
        if (self.queries or self.qrels) and not (self.corpus and self.queries and self.qrels):
            raise UsageError("--queries and --qrels go together with --corpus (all three), or leave them out")
        if self.corpus and self.beir_dir:
            raise UsageError("pass one full corpus: --beir_dir or --corpus, not both")
        super().check()


# --------------------------------------------------------------------------- export_student.py
@dataclass(frozen=True, kw_only=True)
class ScoresConfig(DataLocation, Seeded, Mining, Replaceable):
    """``teacher_scores.py``'s settings: the candidate lists the student would build, and the teacher's scores of them."""

    teacher_path: str = setting(help="the teacher: a cross-encoder folder or hub id; several: repeat the flag or give a "
                                     "comma list (combined as the student combines them)", repeatable=True)
    teacher_weights: str | None = setting(None, "with several --teacher_path: one weight per teacher, e.g. 2,1")
    output: str = setting(help="the JSONL file to write (FlagEmbedding's layout: query, pos, neg, pos_scores, neg_scores; "
                               "the scores are the teacher's logits)")
    K: int = setting(StudentConfig.default("K"), "candidates per query, as the student's --K",
                     check=(lambda v: v >= 2, ">= 2"))
    negative_source: str = setting(StudentConfig.default("negative_source"), "as the student's --negative_source",
                                   choices=["bm25", "model", "random"])
    max_samples: int | None = setting(None, "as the student's --max_samples (the same queries)", check=AT_LEAST_1)
    eval_batch_size: int = setting(64, "pairs per teacher forward", check=AT_LEAST_1)
    score_cache: str | None = setting(None, "SQLite file of teacher scores (default: per-teacher file in the cache)")


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Config):
    """``export_student.py``'s settings."""

    model_path: str = setting(help="a student folder (sentence-transformers layout, e.g. written by "
                                   "train_distillation_pipeline.py)")
    formats: str = setting("onnx,onnx-int8", "what to write into it: onnx (fp32), onnx-int8 (int8 weights), or both")
    output_dir: str | None = setting(None, "export into a copy of the model at this new folder instead (needed for a "
                                           "model this toolkit did not write: an installed alias, a hub cache, your "
                                           "own folder)")

    def check(self) -> None:
        from .export import parse_formats

        if not parse_formats(self.formats):
            raise UsageError("--formats needs at least one of onnx, onnx-int8")
        super().check()


# --------------------------------------------------------------------------- realtime_monitor.py
@dataclass(frozen=True, kw_only=True)
class MonitorConfig(DataLocation):
    """``realtime_monitor.py``'s settings (the command after ``--`` is :attr:`command`)."""

    output_dir: str | None = setting(None, "the supervised run's --output_dir (events.jsonl, checkpoints, done.json)")
    pipeline: str | None = setting(None, "run teacher, student and evaluation: 'default' = the measured recipe (every "
                                         "script's defaults), 'cpu' = the same cut to ~20 min on 2 CPU cores, "
                                         "'quick'/'full' = the original's settings",
                                   choices=["default", "cpu", "quick", "full"])
    data_version: str | None = setting(None, "with --pipeline: the prepared data version")
    models_dir: str = setting("models", "with --pipeline: the teacher and student folders go in <models_dir>/<data_version>/")
    teacher_model: str | None = setting(None, "with --pipeline: base model of the teacher")
    student_name: str | None = setting(None, "with --pipeline: the student model")
    teacher_args: str = setting("", "with --pipeline: extra teacher flags, one quoted string")
    student_args: str = setting("", "with --pipeline: extra student flags, one quoted string")
    stall_timeout: float = setting(900.0, "seconds without progress before a run counts as stalled", check=POSITIVE)
    startup_timeout: float = setting(1800.0, "seconds a (re)started run may take to its first event before it counts as "
                                             "stalled", check=POSITIVE)
    max_restarts: int = setting(5, "give up after this many restarts within --restart_window", check=NON_NEGATIVE)
    restart_window: float = setting(3600.0, "seconds over which --max_restarts is counted", check=POSITIVE)
    backoff: float = setting(10.0, "first restart delay in seconds (doubles each time)", check=NON_NEGATIVE)
    poll: float = setting(2.0, "seconds between checks of the run", check=(lambda v: math.isfinite(v) and 0 < v <= 3600,
                                                                          "> 0 and at most 3600"))
    status_every: float = setting(30.0, "seconds between status lines when not on a terminal", check=POSITIVE)
    no_evaluate: bool = setting(False, "do not run evaluate_final_model.py at the end")
    eval_output_dir: str | None = setting(None, "default: evaluation_results/<data_version>/<run folder name>")
    eval_args: str = setting("", "extra evaluate_final_model.py flags, one quoted string")
    eval_timeout: float = setting(7200.0, "seconds the final evaluation may take before it is stopped", check=POSITIVE)
    command: tuple[str, ...] = setting((), flag=False)  # the command after --

    def split(self, name: str) -> list[str]:
        """``--teacher_args`` / ``--student_args`` / ``--eval_args`` as a list of flags."""
        return shlex.split(getattr(self, name))

    def check(self) -> None:
        for name in ("teacher_args", "student_args", "eval_args"):
            try:
                self.split(name)
            except ValueError as exc:
                raise UsageError(f"--{name} {getattr(self, name)!r} cannot be split into flags ({exc}); check its "
                                 "quotes") from None
        if self.pipeline and self.command:
            raise UsageError("give either --pipeline or a command after --, not both")
        extra = self.split("eval_args")
        if any(a == "--output_dir" or a.startswith("--output_dir=") for a in extra):
            raise UsageError("--eval_args sets --output_dir, so the monitor would read another folder's results; name the "
                             "evaluation's folder with --eval_output_dir")
        if self.command and self.output_dir:
            from .monitor_commands import flag_value

            theirs = flag_value(list(self.command), "--output_dir")
            if theirs is not None and Path(theirs).expanduser().resolve() != Path(self.output_dir).expanduser().resolve():
                raise UsageError(f"the command writes --output_dir {theirs} but the monitor watches --output_dir "
                                 f"{self.output_dir}: its progress and its done.json would never be seen; pass the same folder "
                                 "to both")
        if self.pipeline and not self.data_version:
            raise UsageError("--pipeline needs --data_version (prepare one with prepare_data.py)")
        if not self.pipeline and not self.output_dir:
            raise UsageError("pass --output_dir (the run's output folder) with a command after --, or use --pipeline")
        super().check()


def flags_of(cls) -> list[str]:
    """The command-line flags of a config class (what its generated parser accepts), aliases aside."""
    return [f"--{f.name}" for f in fields(cls) if f.metadata.get("flag", False)]


__all__ = ["Config", "PrepareConfig", "TrainingConfig", "TeacherConfig", "StudentConfig", "EvalConfig", "ExportConfig",
           "MonitorConfig", "ScoresConfig",
           "setting", "flags_of"]
