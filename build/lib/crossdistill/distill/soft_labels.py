"""The student's soft labels: what each candidate list teaches beyond its labels.

Per list, the teachers' (combined) logits (:class:`~crossdistill.teachers.ensemble.Teachers`, computed once through
their caches) or a scores file's; fused with other rankers' scores when ``--teacher_fusion`` asks
(:func:`~crossdistill.teachers.fusion.build_soft_labels`, the one builder the guard shares); then, with
``--positives_first``, each labelled list's values reassigned so its positives hold the highest.
"""

from __future__ import annotations

import numpy as np
import torch

from crossdistill.core.errors import UsageError
from crossdistill.data.candidates import CandidateList
from crossdistill.data.teacher_scores import as_logits, lists_from_scores, score_kind_of
from crossdistill.teachers.fusion import build_soft_labels, parse_fusion


def scored_lists(inputs, log) -> tuple[list[CandidateList], list[np.ndarray], dict, dict]:
    """The lists of a scores file (its scored passages, K at most) and their logits; training queries without a record
    are left out and counted."""
    from crossdistill.teachers.scores_file import ScoresFileKind

    cfg = inputs.cfg
    kind, why = score_kind_of(inputs.scores, cfg.score_kind)
    log(f"teacher scores from {inputs.scores_path} taken as {'probabilities' if kind == 'probability' else 'logits'}: "
        f"{why}")
    records = as_logits(inputs.scores, kind)
    lists, _, cstats = lists_from_scores(records, list(dict.fromkeys(inputs.train["anchor"])), cfg.K)
    lone = cstats["one_passage_lists"]
    if lone == len(lists):  # a softmax over one passage is 1 whatever the teacher said: the distillation term is 0
        raise UsageError(f"every one of the {lone} scored lists in {inputs.scores_path} holds a single passage (records "
                         "without 'neg' passages), so the teacher's scores cannot teach the student anything; write "
                         "records with scored negatives (teacher_scores.py), or train on the labels alone with "
                         "--soft_weight 0")
    if lone:
        log(f"{lone} of {len(lists)} scored lists hold a single passage (records without 'neg'): their distillation "
            "term is 0, only the labels' loss teaches on those queries")
    scores, _ = ScoresFileKind(inputs.scores_path, records).score([(c.query, p) for c in lists for p in c.passages])
    bounds = np.cumsum([0] + [len(c.passages) for c in lists])
    logits = [scores[bounds[i]:bounds[i + 1]] for i in range(len(lists))]
    log(f"teacher scores from {inputs.scores_path}: {cstats['queries']} training queries x up to K={cfg.K} scored "
        f"passages ({cstats['train_queries_without_scores']} training queries without a record are left out, "
        f"{cstats['records_not_in_train']} records of other queries unused); loss recipe {cfg.recipe}, similarity "
        f"scale {cfg.scale:g}")
    return lists, logits, cstats, {"source": "scores file", "file": str(inputs.scores_path), "score_kind": kind,
                                   "score_kind_why": why}


def list_cosines(student, queries: list[str], lists: list[list[str]], batch_size: int) -> list[np.ndarray]:
    """A bi-encoder student's cosine of each query with each passage of its list (each distinct text encoded once)."""
    passages = list(dict.fromkeys(p for ps in lists for p in ps))
    where = {p: i for i, p in enumerate(passages)}
    cos = student.cosines(queries, passages, batch_size)
    return [cos[i, [where[p] for p in ps]] for i, ps in enumerate(lists)]


def dense_cosines(dense, queries: list[str], lists: list[list[str]], batch_size: int, log=print) -> list[np.ndarray]:
    """The fusion's ``dense`` source: a :class:`~crossdistill.teachers.dense.DenseKind`'s cosines over the lists."""
    logits, _ = dense.score([(q, p) for q, ps in zip(queries, lists) for p in ps], batch_size=batch_size, log=log)
    bounds = np.cumsum([0] + [len(ps) for ps in lists])
    return [logits[bounds[i]:bounds[i + 1]] / dense.scale for i in range(len(lists))]


def list_soft_labels(inputs, lists: list[CandidateList], logits, tstats, student, device, log,
                     phase) -> tuple[list[np.ndarray], dict]:
    """The soft labels of ``lists`` (``logits``: a scores file's, else the teachers' are computed here; no teacher:
    zeros, which the loss weighs 0), and the stats of the teacher's work."""
    cfg = inputs.cfg
    queries, passages = [c.query for c in lists], [c.passages for c in lists]
    if logits is None and inputs.teachers is None:  # labels only: the soft-label term is weighted 0
        logits, tstats = [np.zeros(len(c.passages), dtype=np.float32) for c in lists], {"source": "none"}
    elif logits is None:
        logits, tstats = inputs.teachers.logits(
            queries, passages, batch_size=cfg.eval_batch_size, device=device, log=log,
            on_progress=lambda done, total: phase("phase", phase="teacher_scoring", done=done, total=total))
    weights = parse_fusion(cfg.teacher_fusion)
    soft = build_soft_labels(
        logits, queries, passages, cfg.soft_labels, weights,
        bm25_pool=inputs.corpus or list(dict.fromkeys([*inputs.train["positive"], *inputs.train["negative"]])),
        student_cos=list_cosines(student, queries, passages, cfg.eval_batch_size) if "student" in weights else None,
        dense_cos=dense_cosines(inputs.fusion_dense, queries, passages, cfg.eval_batch_size, log)
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
        for c, lo in zip(lists, logits):
            c.positive = [bool(x > 0.5) for x in torch.sigmoid(torch.from_numpy(np.asarray(lo, dtype=np.float32)))]
    return soft, tstats


def positives_first(scores: np.ndarray, positive: list[bool]) -> np.ndarray:
    """One labelled list's soft labels with the labelled positives moved to the top: the list's own score values are
    reassigned, the highest ones to the positives and the rest to the negatives, each group keeping the teacher's order.
    The teacher's judgement among the negatives (and among several positives) stays; where it ranks a negative above a
    positive, that disagreement with the labels is dropped instead of fighting the label term. A list the teacher
    already orders this way, or one with no positive (a pseudo-query) or no negative, is returned unchanged.

    The listwise form of Wen et al. 2019's "knowledge adjustment" ("Preparing Lessons: Improve Knowledge Distillation
    with Better Supervision"), which swaps a wrong teacher's top class with the true one.
    """
    scores = np.asarray(scores, dtype=np.float32)
    pos = np.flatnonzero(np.asarray(positive, dtype=bool))
    neg = np.setdiff1d(np.arange(len(scores)), pos)
    if len(pos) == 0 or len(neg) == 0:
        return scores.copy()
    values = np.sort(scores)[::-1]
    out = np.empty_like(scores)
    out[pos[np.argsort(-scores[pos], kind="stable")]] = values[:len(pos)]
    out[neg[np.argsort(-scores[neg], kind="stable")]] = values[len(pos):]
    return out
