"""The student run's inputs and data: every input checked before anything is written (:func:`read_inputs`), then the
candidate lists, their soft labels (:mod:`~crossdistill.distill.soft_labels`) and the val pool (:func:`prepare_run`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import pandas as pd
import torch

from crossdistill.core.errors import UsageError
from crossdistill.core.ownership import refuse_overlap
from crossdistill.data import eval_sets
from crossdistill.data.candidates import CandidateList, build_candidates
from crossdistill.data.pseudo_queries import pseudo_query_lists
from crossdistill.data.teacher_scores import SCORES_FILE, read_scores_file, scores_fingerprint
from crossdistill.data.versions import DataVersion, subsample
from crossdistill.distill.config import StudentConfig
from crossdistill.distill.validation import val_pool_passages
from crossdistill.models.export import missing_packages, parse_formats
from crossdistill.models.folders import model_folder_kind
from crossdistill.models.resolve import ResolvedModel, resolve_model, similarity_scale
from crossdistill.models.student import BiEncoderStudent
from crossdistill.teachers.cache import default_cache_path
from crossdistill.teachers.config import open_run_teachers
from crossdistill.teachers.dense import DenseKind
from crossdistill.teachers.ensemble import Teachers

LABELS_ONLY = "labels-only"  # the teacher fingerprint of a run with no teacher (--soft_weight 0, no teacher named)


# --------------------------------------------------------------------------- inputs
@dataclass
class StudentInputs:
    """Every input of a student run, read and checked before anything is written (:func:`read_inputs`)."""

    cfg: StudentConfig            # with the run's resolved values (scale, score cache)
    teachers: Teachers | None     # the teacher model(s), checked and fingerprinted; None: scores from a file, or none
    scores: list | None           # the scores file's records (no teacher model)
    scores_path: str | None
    teacher_fingerprint: str      # hashed once per run (the teachers', or the scores file's)
    student: ResolvedModel
    train: pd.DataFrame
    val: pd.DataFrame
    corpus: list[str] | None      # the val pool's corpus (None: the val CSV's passages)
    pool_info: dict
    fusion_dense: DenseKind | None = None  # the --fusion_model (the fusion's ``dense`` source), embeddings cached


def _teacher_source(cfg: StudentConfig, device: str) -> tuple[Teachers | None, list | None, str | None, str]:
    """(teachers, score records, scores file, fingerprint): the teacher models named by --teacher_path, else the scores
    of --teacher_scores or of the data version's own teacher_scores.jsonl; neither: a labels-only run when the
    soft-label term is weighted 0 (``--soft_weight 0``: the teacher would be read for nothing), else refused."""
    if cfg.teacher_path:
        teachers = open_run_teachers(cfg, device)
        return teachers, None, None, teachers.fingerprint
    own = None if cfg.teacher_scores else DataVersion.of(cfg).own_scores_file()
    path = cfg.teacher_scores or (str(own) if own else None)
    if path is None and cfg.soft_weight == 0:
        return None, None, None, LABELS_ONLY  # the labels alone: no teacher is read, none is needed
    if path is None:
        raise UsageError(f"no teacher: pass --teacher_path (a cross-encoder or bi-encoder folder, alias or hub id), or "
                         f"--teacher_scores FILE (teacher scores in FlagEmbedding's JSONL layout), or --soft_weight 0 to "
                         f"learn the labels alone; data version {cfg.data_version} carries no {SCORES_FILE} of its own")
    return None, read_scores_file(path), path, scores_fingerprint(path)


def _fusion_model(cfg: StudentConfig, device: str) -> DenseKind | None:
    """The ``--fusion_model`` as a dense source, refused when it is not a bi-encoder (one rule: is_bi_encoder_folder)."""
    if not cfg.fusion_model:
        return None
    dense = resolve_model(cfg.fusion_model)
    if dense.is_local and model_folder_kind(dense.path) == "cross-encoder":
        raise UsageError(f"--fusion_model {cfg.fusion_model} is a cross-encoder (a sequence classifier), not a bi-encoder: "
                         "its cosines would be of a mean-pooled classifier; pass a bi-encoder as --fusion_model, and a "
                         "cross-encoder as --teacher_path")
    return DenseKind(cfg.fusion_model, dense, max_len=max(cfg.query_len, cfg.passage_len), precision=cfg.teacher_precision, device=device)


def training_passages(cfg: StudentConfig) -> list[str]:
    """The distinct passages of the data version's training rows (positives, then negatives; all of them, whatever
    --max_samples draws), in order."""
    train = DataVersion.of(cfg).split("train")
    return list(dict.fromkeys([*train["positive"], *(train["negative"] if "negative" in train.columns else [])]))


def training_queries(cfg: StudentConfig) -> list[str]:
    """The distinct labelled queries of the data version's training rows (all of them, whatever --max_samples draws),
    in order."""
    return list(dict.fromkeys(DataVersion.of(cfg).split("train")["anchor"]))


#: how a side's texts are named in logs, messages and the published config
SIDE_TEXTS = {"passage": "passages", "query": "queries"}


def rotation_texts(cfg: StudentConfig) -> dict[str, list[str]]:
    """What a PCA rotation is fit on, by side: the training passages, and with ``--pca_fit both`` (the default) the
    training queries too (:func:`crossdistill.distill.publish.pca_rotation`)."""
    return {"passage": training_passages(cfg), **({"query": training_queries(cfg)} if cfg.pca_fit == "both" else {})}


def read_inputs(cfg: StudentConfig, device: str = "cpu") -> StudentInputs:
    """Check and read every input of the run: nothing is written, nothing moved."""
    teachers, scores, scores_path, fingerprint = _teacher_source(cfg, device)
    if cfg.pseudo_queries and teachers is None and fingerprint != LABELS_ONLY:
        raise UsageError(f"--pseudo_queries {cfg.pseudo_queries} needs a teacher model to score the new lists, but the "
                         f"teacher here is a scores file ({scores_path}); pass --teacher_path, or leave --pseudo_queries out")
    if cfg.in_batch_kl_weight and (teachers is None or not teachers.dense):
        raise UsageError("--in_batch_kl_weight distils the teacher's scores of every query with every passage of a batch, "
                         "which needs bi-encoder teachers (--teacher_path a bi-encoder folder or alias): "
                         + ("this run has no teacher model" if teachers is None else
                            f"{teachers.describe()} holds a cross-encoder") + "; or leave the flag at 0")
    student = resolve_model(cfg.student_name, cfg.query_prefix, cfg.passage_prefix)
    dense = _fusion_model(cfg, device)  # a missing fusion model is refused now
    paths = teachers.paths if teachers else []
    refuse_overlap(cfg.output_dir, "--output_dir", {
        **{"--teacher_path" + (f" #{i + 1}" if len(paths) > 1 else ""): p for i, p in enumerate(paths)},
        "--teacher_scores": scores_path,
        "--fusion_model": dense.path if dense else None,
        "--student_name": student.path if student.is_local else None})
    version = DataVersion.of(cfg)
    train = version.split("train")
    if scores is not None and cfg.max_samples:  # draw the subset from the queries the file scored, not before it
        have = {r.query for r in scores}
        scored = train[train["anchor"].isin(have)].reset_index(drop=True)
        train = scored if len(scored) else train  # none scored: refused with its own message (lists_from_scores)
    train = subsample(train, cfg.max_samples, cfg.seed)
    val = version.split("val", cfg.max_val_samples, cfg.seed)
    corpus, pool_info = val_pool_passages(version, cfg.val_pool)
    if parse_formats(cfg.export) and missing_packages():  # refused now, not after the training
        raise UsageError(f"--export {cfg.export} needs {' and '.join(missing_packages())}: pip install onnx onnxruntime "
                         "(or leave --export out)")
    one_teacher = teachers is not None and len(teachers.members) == 1 and teachers.members[0].kind == "cross-encoder"
    cfg = replace(cfg,  # the run's resolved settings (a new config; the one given is never changed)
                  score_cache=cfg.score_cache or (str(default_cache_path(fingerprint)) if one_teacher else None),
                  scale=cfg.scale if cfg.scale is not None else similarity_scale(student))
    if one_teacher:
        teachers.members[0].cache_path = cfg.score_cache
    return StudentInputs(cfg, teachers, scores, scores_path, fingerprint, student, train, val, corpus, pool_info, dense)


# --------------------------------------------------------------------------- setup
@dataclass
class DistillData:
    """Everything the loop reads, built once by :func:`prepare_run`: candidate lists, soft labels, val pool."""

    lists: list[CandidateList]
    soft_labels: list[torch.Tensor]   # per list: (K,) the teacher's scores (prob or logit), or their fusion
    val: eval_sets.TripletPool
    stats: dict
    teacher_matrix: object = None     # (queries, passages) -> (Q, P) teacher logits, for in-batch distillation


def candidate_lists(inputs: StudentInputs, log, phase) -> tuple[list[CandidateList], dict]:
    """K candidates per training query (:func:`~crossdistill.data.candidates.build_candidates`), then the
    pseudo-queries' lists (``--pseudo_queries``)."""
    cfg = inputs.cfg
    phase("phase", phase="candidates", detail=f"building {cfg.K} candidates per query ({cfg.negative_source} mining)")
    lists, cstats = build_candidates(inputs.train, cfg.K, cfg.negative_source, cfg.seed, cfg.mining_model)
    if cfg.pseudo_queries:
        pseudo, cstats["pseudo"] = pseudo_query_lists([*inputs.train["positive"], *inputs.train["negative"]],
                                                      cfg.pseudo_queries, cfg.K, cfg.seed, {c.query for c in lists})
        lists = lists + pseudo
        log(f"pseudo-queries: {len(pseudo)} of {cfg.pseudo_queries} asked, cut from the training passages, each "
            f"with its remainder and {cfg.K - 1} BM25 negatives; the teacher labels them (soft-label term only)")
    log(f"candidates: {cstats['queries']} queries x K={cfg.K} ({cstats['short_lists']} with fewer than K, "
        f"{cstats['mined_negatives']} mined {cfg.negative_source} negatives); loss recipe {cfg.recipe}, "
        f"similarity scale {cfg.scale:g}; teacher "
        + (inputs.teachers.describe() if inputs.teachers else "none: the labels alone (--soft_weight 0)"))
    return lists, cstats


def prepare_run(inputs: StudentInputs, log, device=None, student: BiEncoderStudent | None = None,
                events=None) -> DistillData:
    """Candidate lists, their soft labels (teacher scores, cached; fused with other rankers when asked), the val pool."""
    from crossdistill.distill.soft_labels import list_soft_labels, scored_lists

    cfg = inputs.cfg
    val = eval_sets.TripletPool.from_df(inputs.val, inputs.corpus)
    pool = {**inputs.pool_info, "queries": len(val.queries), "passages": len(val.passages)}
    log(f"val pool (--val_pool {cfg.val_pool}): {pool['queries']} queries ranked against {pool['passages']} passages "
        + (f"(the corpus {pool['source']})" if pool["kind"] == "corpus" else "(the val CSV's own)"))
    phase = events.log if events is not None else (lambda *a, **k: None)
    if inputs.scores is not None:  # the teacher's judgement from a file: its scored passages are the lists
        lists, logits, cstats, tstats = scored_lists(inputs, log)
    else:
        lists, cstats = candidate_lists(inputs, log, phase)
        logits, tstats = None, None
    if student is not None:  # every text the steps will encode, tokenised once
        student.pretokenize([student.query_prefix + c.query for c in lists], "query")
        student.pretokenize([student.passage_prefix + p for c in lists for p in c.passages], "passage")
    soft, tstats = list_soft_labels(inputs, lists, logits, tstats, student, device, log, phase)
    matrix = None
    if cfg.in_batch_kl_weight:  # every text of the lists encoded now, so a batch's matrix is a product of cached rows
        inputs.teachers.encode([c.query for c in lists], list(dict.fromkeys(p for c in lists for p in c.passages)),
                               batch_size=cfg.eval_batch_size, log=log)
        matrix = inputs.teachers.matrix
    if inputs.teachers is not None:
        inputs.teachers.release()  # the loaded teacher models go; their work is cached
    return DistillData(lists, [torch.from_numpy(s) for s in soft], val,
                       {"candidates": cstats, "teacher_scores": tstats, "val_pool": pool}, matrix)


def run_settings(inputs: StudentInputs) -> dict:
    """What a checkpoint records of the run, and a resume must match: the settings, the data and the teacher."""
    version = DataVersion.of(inputs.cfg)
    train_file = version.split_file("train")
    fp = version.fingerprint()
    return {**inputs.cfg.to_dict(), "train_data_sha256": hashlib.sha256(train_file.read_bytes()).hexdigest(),
            "val_data_sha256": fp.get("val.csv"), "corpus_sha256": fp.get("corpus.jsonl"),
            "teacher_fingerprint": inputs.teacher_fingerprint}
