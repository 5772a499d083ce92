"""The student run's inputs and data: every input checked before anything is written (:func:`read_inputs`), then the
candidate lists, the teacher's logits computed once, the soft labels and the val pool (:func:`prepare_run`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crossdistill.core.errors import UsageError
from crossdistill.core.ownership import refuse_overlap
from crossdistill.data import eval_sets
from crossdistill.data import versions as data
from crossdistill.data.candidates import CandidateList, build_candidates
from crossdistill.data.pseudo_queries import pseudo_query_lists
from crossdistill.data.teacher_scores import SCORES_FILE, lists_from_scores, read_scores_file, scores_fingerprint
from crossdistill.distill.config import StudentConfig
from crossdistill.distill.fusion import build_soft_labels, parse_fusion, positives_first
from crossdistill.distill.guard import student_similarities, val_pool_passages
from crossdistill.models.export import missing_packages, parse_formats
from crossdistill.models.resolve import ResolvedModel, resolve_model, similarity_scale
from crossdistill.models.student import BiEncoderStudent
from crossdistill.teach.score_cache import default_cache_path
from crossdistill.teach.scores import Teachers, list_logits, open_teachers


# --------------------------------------------------------------------------- inputs
@dataclass
class StudentInputs:
    """Every input of a student run, read and checked before anything is written (:func:`read_inputs`)."""

    cfg: StudentConfig            # with the run's resolved values (scale, score cache)
    teachers: Teachers | None     # the teacher model(s), checked and fingerprinted; None: scores from a file
    scores: list | None           # the scores file's records (no teacher model)
    scores_path: str | None
    teacher_fingerprint: str      # hashed once per run (the teachers', or the scores file's)
    student: ResolvedModel
    train: pd.DataFrame
    val: pd.DataFrame
    corpus: list[str] | None      # the val pool's corpus (None: the val CSV's passages)
    pool_info: dict


LABELS_ONLY = "labels-only"  # the teacher fingerprint of a run with no teacher (--soft_weight 0, no teacher named)


def _teacher_source(cfg: StudentConfig) -> tuple[Teachers | None, list | None, str | None, str]:
    """(teachers, score records, scores file, fingerprint): the teacher models named by --teacher_path, else the scores
    of --teacher_scores or of the data version's own teacher_scores.jsonl; neither: a labels-only run when the
    soft-label term is weighted 0 (``--soft_weight 0``: the teacher would be read for nothing), else refused."""
    if cfg.teacher_path:
        teachers = open_teachers(cfg.teacher_path, cfg.teacher_weights)
        return teachers, None, None, teachers.fingerprint
    path = cfg.teacher_scores or str(Path(cfg.data_root) / cfg.data_version / SCORES_FILE)
    if not cfg.teacher_scores and not Path(path).is_file() and cfg.soft_weight == 0:
        return None, None, None, LABELS_ONLY  # the labels alone: no teacher is read, none is needed
    if not cfg.teacher_scores and not Path(path).is_file():
        raise UsageError(f"no teacher: pass --teacher_path (a cross-encoder folder or hub id), or --teacher_scores FILE "
                         f"(teacher scores in FlagEmbedding's JSONL layout); data version {cfg.data_version} carries no "
                         f"{SCORES_FILE} of its own")
    return None, read_scores_file(path), path, scores_fingerprint(path)


def read_inputs(cfg: StudentConfig) -> StudentInputs:
    """Check and read every input of the run: nothing is written, nothing moved."""
    teachers, scores, scores_path, fingerprint = _teacher_source(cfg)
    if cfg.pseudo_queries and teachers is None and fingerprint != LABELS_ONLY:
        raise UsageError(f"--pseudo_queries {cfg.pseudo_queries} needs a teacher model to score the new lists, but the "
                         f"teacher here is a scores file ({scores_path}); pass --teacher_path, or leave --pseudo_queries out")
    student = resolve_model(cfg.student_name, cfg.query_prefix, cfg.passage_prefix)
    dense = resolve_model(cfg.fusion_model) if cfg.fusion_model else None  # a missing fusion model is refused now
    paths = teachers.paths if teachers else []
    refuse_overlap(cfg.output_dir, "--output_dir", {
        **{"--teacher_path" + (f" #{i + 1}" if len(paths) > 1 else ""): p for i, p in enumerate(paths)},
        "--teacher_scores": scores_path,
        "--fusion_model": dense.path if dense and dense.is_local else None,
        "--student_name": student.path if student.is_local else None})
    train = data.subsample(data.read_triplets(data.data_file(cfg.data_version, "train", cfg.data_root)), cfg.max_samples,
                           cfg.seed)
    val = data.subsample(data.read_triplets(data.data_file(cfg.data_version, "val", cfg.data_root)), cfg.max_val_samples,
                         cfg.seed)
    corpus, pool_info = val_pool_passages(cfg.data_root, cfg.data_version, cfg.val_pool)
    if parse_formats(cfg.export) and missing_packages():  # refused now, not after the training
        raise UsageError(f"--export {cfg.export} needs {' and '.join(missing_packages())}: pip install onnx onnxruntime "
                         "(or leave --export out)")
    one_teacher = teachers is not None and len(teachers.specs) == 1
    cfg = replace(cfg,  # the run's resolved settings (a new config; the one given is never changed)
                  score_cache=cfg.score_cache or (str(default_cache_path(fingerprint)) if one_teacher else None),
                  scale=cfg.scale if cfg.scale is not None else similarity_scale(student))
    return StudentInputs(cfg, teachers, scores, scores_path, fingerprint, student, train, val, corpus, pool_info)


# --------------------------------------------------------------------------- setup
@dataclass
class DistillData:
    """Everything the loop reads, built once by :func:`prepare_run`: candidate lists, soft labels, val pool."""

    lists: list[CandidateList]
    soft_labels: list[torch.Tensor]   # per list: (K,) the teacher's scores (prob or logit), or their fusion
    val: eval_sets.TripletPool
    stats: dict


def prepare_run(inputs: StudentInputs, log, device=None, student: BiEncoderStudent | None = None,
                events=None) -> DistillData:
    """Candidate lists, their soft labels (teacher scores, cached; fused with other rankers when asked), the val pool."""
    cfg = inputs.cfg
    val = eval_sets.TripletPool.from_df(inputs.val, inputs.corpus)
    pool = {**inputs.pool_info, "queries": len(val.queries), "passages": len(val.passages)}
    log(f"val pool (--val_pool {cfg.val_pool}): {pool['queries']} queries ranked against {pool['passages']} passages "
        + (f"(the corpus {pool['source']})" if pool["kind"] == "corpus" else "(the val CSV's own)"))
    phase = events.log if events is not None else (lambda *a, **k: None)
    if inputs.scores is not None:  # the teacher's judgement from a file: its scored passages are the lists
        lists, per_list_logits, cstats = lists_from_scores(inputs.scores, list(dict.fromkeys(inputs.train["anchor"])), cfg.K)
        tstats = {"source": "scores file", "file": str(inputs.scores_path)}
        log(f"teacher scores from {inputs.scores_path}: {cstats['queries']} training queries x up to K={cfg.K} scored "
            f"passages ({cstats['train_queries_without_scores']} training queries without a record are left out, "
            f"{cstats['records_not_in_train']} records of other queries unused); loss recipe {cfg.recipe}, similarity "
            f"scale {cfg.scale:g}")
    else:
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
    if inputs.scores is None and inputs.teachers is None:  # labels only: the soft-label term is weighted 0
        per_list_logits, tstats = [np.zeros(len(c.passages), dtype=np.float32) for c in lists], {"source": "none"}
    elif inputs.scores is None:
        per_list_logits, tstats = list_logits(inputs.teachers, [c.query for c in lists], [c.passages for c in lists],
                                              cfg.score_cache, cfg.eval_batch_size, device=device, log=log,
                                              on_progress=lambda done, total: phase("phase", phase="teacher_scoring",
                                                                                    done=done, total=total))
    if student is not None:  # every text the steps will encode, tokenised once
        student.pretokenize([student.query_prefix + c.query for c in lists] +
                            [student.passage_prefix + p for c in lists for p in c.passages])
    weights = parse_fusion(cfg.teacher_fusion)
    soft = build_soft_labels(
        per_list_logits, [c.query for c in lists], [c.passages for c in lists], cfg.soft_labels, weights,
        bm25_pool=inputs.corpus or list(dict.fromkeys([*inputs.train["positive"], *inputs.train["negative"]])),
        student_cos=_student_list_scores(student, lists, cfg.eval_batch_size) if "student" in weights else None,
        dense_cos=fusion_model_scores(cfg, [c.query for c in lists], [c.passages for c in lists], device)
        if "dense" in weights else None, norm=cfg.fusion_norm)
    if weights:
        log(f"soft labels: teacher fused with {', '.join(f'{k} x{v:g}' for k, v in weights.items())} ("
            + ("per-query z-scores)" if cfg.fusion_norm == "list" else "each source on one scale for the whole run)"))
    if cfg.positives_first:
        before = soft
        soft = [positives_first(s, c.positive) for s, c in zip(soft, lists)]
        labelled = sum(any(c.positive) and not all(c.positive) for c in lists)
        moved = sum(not np.array_equal(a, b) for a, b in zip(before, soft))
        tstats["positives_first"] = {"labelled_lists": labelled, "reordered": moved}
        log(f"soft labels: positives first in {moved} of {labelled} labelled lists (the teacher ranked a negative above "
            "a labelled positive there)")
    if cfg.positive_definition == "teacher":
        for c, lo in zip(lists, per_list_logits):
            c.positive = [bool(x > 0.5) for x in torch.sigmoid(torch.from_numpy(np.asarray(lo, dtype=np.float32)))]
    return DistillData(lists, [torch.from_numpy(s) for s in soft], val,
                       {"candidates": cstats, "teacher_scores": tstats, "val_pool": pool})


def _student_list_scores(student: BiEncoderStudent, lists: list[CandidateList], batch_size: int) -> list[np.ndarray]:
    """The starting student's cosine of each query with each of its candidates (each text encoded once)."""
    return list_cosines(student, [c.query for c in lists], [c.passages for c in lists], batch_size)


def list_cosines(model: BiEncoderStudent, queries: list[str], lists: list[list[str]], batch_size: int) -> list[np.ndarray]:
    """A bi-encoder's cosine of each query with each passage of its list (each distinct text encoded once)."""
    passages = list(dict.fromkeys(p for ps in lists for p in ps))
    where = {p: i for i, p in enumerate(passages)}
    cos = student_similarities(model, queries, passages, batch_size)
    return [cos[i, [where[p] for p in ps]] for i, ps in enumerate(lists)]


def fusion_model_scores(cfg: StudentConfig, queries: list[str], lists: list[list[str]], device=None) -> list[np.ndarray]:
    """The ``--fusion_model``'s cosines over the lists (the ``dense`` fusion source), at the student's --max_len."""
    model = BiEncoderStudent.load(resolve_model(cfg.fusion_model), cfg.max_len, device=str(device) if device else None)
    try:
        return list_cosines(model, queries, lists, cfg.eval_batch_size)
    finally:
        del model


def run_settings(inputs: StudentInputs) -> dict:
    """What a checkpoint records of the run, and a resume must match: the settings, the data and the teacher."""
    train_file = data.data_file(inputs.cfg.data_version, "train", inputs.cfg.data_root)
    fp = data.version_fingerprint(inputs.cfg.data_root, inputs.cfg.data_version)
    return {**inputs.cfg.to_dict(), "train_data_sha256": hashlib.sha256(train_file.read_bytes()).hexdigest(),
            "val_data_sha256": fp.get("val.csv"), "corpus_sha256": fp.get("corpus.jsonl"),
            "teacher_fingerprint": inputs.teacher_fingerprint}
