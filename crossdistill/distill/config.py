"""``train_distillation_pipeline.py``'s settings. The loss settings a flag leaves unset are filled by the recipe
(:data:`crossdistill.distill.recipes.STUDENT_RECIPES`), whose values the help texts show."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import (
    AT_LEAST_1,
    DEFAULT_MAX_LEN,
    LOSS_WEIGHT,
    MAX_LEN,
    POSITIVE,
    SCALE,
    TEMPERATURE,
    TrainingConfig,
    setting,
)
from crossdistill.data.teacher_scores import SCORE_KINDS
from crossdistill.distill.recipes import DEFAULT_RECIPE, STUDENT_RECIPES, recipe_summary, recipe_values
from crossdistill.losses.total import WEIGHTS
from crossdistill.teachers.config import ListSettings
from crossdistill.teachers.fusion import NORMS


@dataclass(frozen=True, kw_only=True)
class StudentConfig(TrainingConfig, ListSettings):
    """``train_distillation_pipeline.py``'s settings. The loss settings a flag leaves unset (None) are filled by the
    recipe (:meth:`resolve`); the scale and the score cache are resolved by the run."""

    teacher_scores: str | None = setting(None, "train on teacher scores instead of a teacher model: a JSONL in "
                                               "FlagEmbedding's layout (query, pos, neg, pos_scores, neg_scores), e.g. "
                                               "written by teacher_scores.py; default without --teacher_path: the data "
                                               "version's teacher_scores.jsonl (prepared from a scored source)")
    score_kind: str = setting("auto", "what the numbers of --teacher_scores (or the version's teacher_scores.jsonl) are: "
                                      "'logit', 'probability' (CrossEncoder.predict's default sigmoid; turned into logits "
                                      "before use) or 'auto' (probabilities when every score lies in [0, 1]; the log "
                                      "says what was assumed)", choices=list(SCORE_KINDS))
    student_name: str = setting("minilm-l6", "student: folder, hub id (e.g. intfloat/multilingual-e5-large-instruct) or "
                                             "alias (minilm-l6, multilingual-e5-small)")
    output_dir: str = setting(help="folder of the published student (checkpoints while training)")
    batch_size: int = setting(16, "queries per step and process (each with K candidates); global batch = this x "
                                  "processes", check=AT_LEAST_1)
    lr: float = setting(2e-5, "learning rate (AdamW, linear warm-up and decay)", check=POSITIVE)
    max_len: int = setting(DEFAULT_MAX_LEN, "max tokens per query/passage for the student (the shorthand for both "
                                            "--query_max_len and --passage_max_len)", check=MAX_LEN)
    query_max_len: int | None = setting(None, "max tokens per query for the student (default: --max_len); queries are "
                                              "short, e.g. 64 where passages keep 256", check=MAX_LEN)
    passage_max_len: int | None = setting(None, "max tokens per passage for the student (default: --max_len); the saved "
                                                "model keeps it as its max_seq_length", check=MAX_LEN)
    recipe: str = setting(DEFAULT_RECIPE, "loss settings every unset loss flag takes: " + "; ".join(
        f"'{r}' = {recipe_summary(r)}" for r in STUDENT_RECIPES) + " ('ranking': measured best; 'original': SPEC.md's)",
        choices=list(STUDENT_RECIPES))
    tau: float | None = setting(None, f"teacher temperature of the listwise KL {recipe_values('tau')}",
                                check=TEMPERATURE)
    contrastive_weight: float | None = setting(None, f"weight of the margin term {recipe_values('contrastive_weight')}",
                                               check=LOSS_WEIGHT)
    negative_penalty_weight: float | None = setting(None, f"weight of the negative-score penalty {recipe_values('negative_penalty_weight')}",
                                                    check=LOSS_WEIGHT)
    pseudo_queries: int = setting(0, "unlabelled queries cut from the training passages (one sentence each, the rest "
                                     "of its passage and K-1 BM25 negatives its list) that the teacher labels: they "
                                     "teach through the soft-label term only (GPL-style); 0 = none",
                                  check=(lambda v: 0 <= v <= 1_000_000, "between 0 and 1000000"))
    soft_labels: str | None = setting(None, f"teacher scores fed to softmax(./tau): sigmoid probabilities or logits "
                                            f"{recipe_values('soft_labels')}", choices=["prob", "logit"])
    soft_loss: str | None = setting(None, f"soft-label term: listwise KL, or MarginMSE (Hofstaetter et al.) on scale*cos "
                                          f"{recipe_values('soft_loss')}", choices=["kl", "margin_mse"])
    soft_weight: float | None = setting(None, f"weight of the soft-label term {recipe_values('soft_weight')}", check=LOSS_WEIGHT)
    kl_student: str | None = setting(None, "the KL's student side: 'scaled' = softmax(scale*cos), 'tau' = "
                                           f"softmax(((cos+1)/2)/tau) {recipe_values('kl_student')}", choices=["scaled", "tau"])
    infonce_weight: float | None = setting(None, "weight of the in-batch InfoNCE on labelled positives, every other "
                                                 f"passage of the batch a negative {recipe_values('infonce_weight')}",
                                           check=LOSS_WEIGHT)
    in_batch_kl_weight: float | None = setting(None, "weight of in-batch distillation: the KL from the teacher's "
                                                     "distribution over every passage of the batch to the student's "
                                                     "(bi-encoder teachers only: one product of cached embeddings) "
                                                     f"{recipe_values('in_batch_kl_weight')}", check=LOSS_WEIGHT)
    kl_tau_squared: bool = setting(False, "multiply the KL by tau^2 (Hinton et al.; sentence-transformers' "
                                          "DistillKLDivLoss), so its weight against InfoNCE does not move with --tau")
    scale: float | None = setting(None, "inverse temperature on cosines for InfoNCE, MarginMSE and the scaled KL "
                                        "(default: the student's own, 100 for e5 models, 20 otherwise)", check=SCALE)
    teacher_fusion: str | None = setting(None, "soft labels = z(teacher logit) + sum of w*z(source) per query, e.g. "
                                               "'bm25=0.5' or 'bm25=0.5,student=0.2'; 'none' = the teacher alone (z: see "
                                               "--fusion_norm)")
    fusion_norm: str = setting("list", "how --teacher_fusion puts each source on a common scale: 'list' = z-scores "
                                       "within each query's list (a list whose scores barely differ is stretched to unit "
                                       "spread); 'run' = each source centred per list and divided by its within-list "
                                       "standard deviation pooled over all lists (a source unsure of a list stays flat "
                                       "there)", choices=list(NORMS))
    fusion_model: str | None = setting(None, "with --teacher_fusion dense=W: the bi-encoder (folder or alias) whose cosines "
                                             "are the dense source, e.g. a student trained on the labels alone")
    positives_first: bool = setting(False, "in each labelled list, give the labelled positives the highest soft labels "
                                           "(the list's own values reassigned, the teacher's order kept among the "
                                           "negatives): the teacher teaches how the negatives rank, never against a "
                                           "label")
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
    matryoshka_dims: str | None = setting(None, "Matryoshka: also train every loss term at these prefix dimensions of the "
                                                "embedding, re-normalised, e.g. 384,256,128,64 (the largest first; "
                                                "vectors can then be cut to any of them: SentenceTransformer(folder, "
                                                "truncate_dim=D))")
    matryoshka_weights: str | None = setting(None, "with --matryoshka_dims: one weight per dimension (default: 1 each)")
    pca_rotation: bool = setting(False, "publish the student with its vectors turned onto the principal axes of its "
                                        "embeddings of the training passages (a Dense layer; every cosine unchanged): "
                                        "the first dimensions then carry the most, so vectors cut to "
                                        "SentenceTransformer(folder, truncate_dim=D) rank far better "
                                        "(models/rotation.py)")
    matryoshka_pca_start: bool = setting(False, "with --matryoshka_dims: take the Matryoshka prefixes on the principal "
                                                "axes of the starting student's embeddings of the training passages "
                                                "(a fixed rotation found before the first step, kept in the published "
                                                "model; every cosine unchanged) instead of its raw coordinates, so the "
                                                "prefixes start with the most of each vector (models/rotation.py)")
    pca_fit: str = setting("both", "what --pca_rotation and --matryoshka_pca_start find their axes on: the training "
                                   "passages and queries, each side weighing the same ('both': a prefix keeps what a "
                                   "query-passage cosine needs), or the passages alone ('passages': before 2026-12-08)",
                           choices=["both", "passages"])
    export: str | None = setting(None, "also export the published student for serving: 'onnx', 'onnx-int8' or both "
                                       "('onnx,onnx-int8'); see export_student.py")

    def resolve(self):
        unset = {k: v for k, v in STUDENT_RECIPES[self.recipe].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset)

    @property
    def query_len(self) -> int:
        """The tokens a query keeps: --query_max_len, else --max_len."""
        return self.query_max_len or self.max_len

    @property
    def passage_len(self) -> int:
        """The tokens a passage keeps: --passage_max_len, else --max_len."""
        return self.passage_max_len or self.max_len

    @property
    def matryoshka_dims_list(self) -> tuple[int, ...]:
        """``--matryoshka_dims`` as numbers, largest first (empty without it)."""
        return parse_matryoshka(self.matryoshka_dims, self.matryoshka_weights)[0]

    @property
    def matryoshka_weights_list(self) -> tuple[float, ...]:
        return parse_matryoshka(self.matryoshka_dims, self.matryoshka_weights)[1]

    def check(self) -> None:
        from crossdistill.models.export import parse_formats
        from crossdistill.teachers.fusion import parse_fusion

        if self.teacher_path and self.teacher_scores:
            raise UsageError("--teacher_path and --teacher_scores both name the teacher; pass one: the model (its scores "
                             "are computed and cached) or the scores file (no model needed)")
        if self.teacher_weights is not None:
            from crossdistill.teachers.ensemble import parse_weights, split_paths

            parse_weights(self.teacher_weights, len(split_paths(self.teacher_path)) or 1)
        if not any(getattr(self, w) for w in WEIGHTS):
            raise UsageError(f"every loss term is weighted 0 ({', '.join('--' + w for w in WEIGHTS)}), so the student "
                             "would train at loss 0 and learn nothing; give one a weight > 0")
        if self.in_batch_kl_weight and self.cross_device_negatives:
            raise UsageError("--in_batch_kl_weight and --cross_device_negatives do not go together (the teacher scores "
                             "each process's own batch); pass one")
        if ("dense" in parse_fusion(self.teacher_fusion)) != bool(self.fusion_model):
            raise UsageError("--teacher_fusion dense=W and --fusion_model go together: the dense source is the cosine of "
                             "the --fusion_model bi-encoder")
        if self.fusion_norm != "list" and not parse_fusion(self.teacher_fusion):
            raise UsageError(f"--fusion_norm {self.fusion_norm} sets how --teacher_fusion scales its sources, but no "
                             "fusion is asked; add --teacher_fusion (e.g. bm25=1), or leave --fusion_norm out")
        if parse_fusion(self.teacher_fusion) and self.soft_labels == "prob":  # a malformed spec is refused there
            raise UsageError("--teacher_fusion fuses the teacher's logits (per-query z-scores), so it cannot be combined "
                             "with --soft_labels prob (the original recipe's default); pass --soft_labels logit, or leave "
                             "fusion out")
        parse_formats(self.export)
        parse_matryoshka(self.matryoshka_dims, self.matryoshka_weights)
        if self.matryoshka_pca_start and not self.matryoshka_dims:
            raise UsageError("--matryoshka_pca_start sets where the Matryoshka prefixes are taken, but no --matryoshka_dims "
                             "is given (without them a rotation changes no cosine, so nothing); add --matryoshka_dims "
                             "(e.g. 384,256,128,64), or leave --matryoshka_pca_start out")
        super().check()


def parse_matryoshka(dims: str | None, weights: str | None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``--matryoshka_dims 384,256,128,64`` and ``--matryoshka_weights`` as (dims, weights), checked: whole numbers >= 8,
    distinct, largest first; finite weights >= 0, not all 0, one per dimension (default 1 each)."""
    import math

    if not dims:
        if weights:
            raise UsageError("--matryoshka_weights weighs the dimensions of --matryoshka_dims; give --matryoshka_dims too")
        return (), ()
    try:
        ds = tuple(int(x) for x in str(dims).split(","))
    except ValueError:
        raise UsageError(f"--matryoshka_dims takes whole numbers, comma-separated (e.g. 384,256,128,64); got {dims!r}") from None
    if any(d < 8 for d in ds) or len(set(ds)) != len(ds) or list(ds) != sorted(ds, reverse=True):
        raise UsageError(f"--matryoshka_dims must be distinct whole numbers >= 8, largest first (e.g. 384,256,128,64); "
                         f"got {dims!r}")
    if weights is None:
        return ds, tuple(1.0 for _ in ds)
    try:
        ws = tuple(float(x) for x in str(weights).split(","))
    except ValueError:
        raise UsageError(f"--matryoshka_weights takes numbers, comma-separated; got {weights!r}") from None
    if len(ws) != len(ds) or any(not math.isfinite(w) or w < 0 or w > 1e6 for w in ws) or not sum(ws):
        raise UsageError(f"--matryoshka_weights needs one finite weight >= 0 per dimension of --matryoshka_dims "
                         f"({len(ds)}), not all 0; got {weights!r}")
    return ds, ws

