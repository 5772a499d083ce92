"""Teacher scores as data: FlagEmbedding's JSONL layout, one record per query (``query``, ``pos``, ``neg``,
``pos_scores``, ``neg_scores``; the scores are logits), read with every value checked, written atomically, and turned
into the student's candidate lists."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.data.versions import SCORES_FILE  # noqa: F401 - a prepared version's scores (re-exported)

RECORD_KEYS = ("query", "pos", "neg", "pos_scores", "neg_scores")


# --------------------------------------------------------------------------- scores files
@dataclass
class ScoredList:
    query: str
    pos: list[str]
    neg: list[str]
    pos_scores: list[float]
    neg_scores: list[float]


def _texts(value, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or any(not isinstance(t, str) or not t.strip() for t in value):
        raise UsageError(f"{where}: {key!r} must be a list of non-empty texts (got {str(value)[:80]!r}); fix that row")
    return value


def _scores(value, n: int, where: str, key: str, texts_key: str) -> list[float]:
    if value is None:
        raise UsageError(f"{where} has no {key!r} but {n} {texts_key!r} text(s); every text needs its teacher score: add "
                         f"{key!r} (one number per text) or write the file with teacher_scores.py")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise UsageError(f"{where}: {key!r} must be a list of numbers (got {type(value).__name__}); fix that row")
    if len(value) != n:
        raise UsageError(f"{where}: {key!r} has {len(value)} score(s) for {n} {texts_key!r} text(s); give one score per "
                         "text, in the same order")
    return [check_score(v, f"{where}: {key!r}") for v in value]


def check_score(value, where: str) -> float:
    """One teacher score (a logit): a finite number of a sane size; anything else is refused, naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where} holds {value!r}, not a number; scores are the teacher's logits as numbers")
    if not math.isfinite(value) or abs(value) > 1e6:
        raise UsageError(f"{where} holds {value!r}; scores must be finite numbers (|score| <= 1e6)")
    return float(value)


def check_record(obj, where: str, scored: bool = True) -> ScoredList:
    """One FlagEmbedding-layout record, validated: texts are texts, one finite score per text (``scored`` False: a
    record of training data without scores, whose scores are left empty)."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where} is not a JSON object with {', '.join(RECORD_KEYS)}; fix that row")
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise UsageError(f"{where} has no query text ('query'); fix that row")
    pos = _texts(obj.get("pos", []), where, "pos")
    neg = _texts(obj.get("neg", []), where, "neg")
    if not pos:
        raise UsageError(f"{where} has no positive passage ('pos'); every query needs at least one")
    if not scored:
        return ScoredList(query.strip(), pos, neg, [], [])
    return ScoredList(query.strip(), pos, neg, _scores(obj.get("pos_scores"), len(pos), where, "pos_scores", "pos"),
                      _scores(obj.get("neg_scores", [] if not neg else None), len(neg), where, "neg_scores", "neg"))


def flagembedding_keys_note(objs: list) -> str | None:
    """What FlagEmbedding's ``prompt`` and ``type`` keys in these records mean here, or None when none carries them:
    they are not used (the student's query prefix comes from --query_prefix or its model's own prompts, one for every
    query; a task ``type`` changes nothing in how a list is learned)."""
    prompts = {o.get("prompt") for o in objs if isinstance(o, dict) and o.get("prompt")}
    types = {o.get("type") for o in objs if isinstance(o, dict) and o.get("type")}
    if not prompts and not types:
        return None
    parts = []
    if prompts:
        shown = next(iter(prompts))
        parts.append(f"the records' 'prompt' ({len(prompts)} distinct, e.g. {str(shown)[:50]!r}) is not used: the "
                     "student's query prefix is --query_prefix (or its model's own prompt), one for every query; pass "
                     "--query_prefix with that instruction if the student should read it")
    if types:
        parts.append(f"'type' ({', '.join(sorted(map(str, types))[:3])}) is not used: every list is learned alike")
    return "; ".join(parts)


def read_scores_file(path: str | Path) -> list[ScoredList]:
    """Every record of a scores file, validated (the first bad row is refused, named by its line)."""
    from crossdistill.data.sources import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--teacher_scores {path} does not exist or is not a file; write one with teacher_scores.py, or "
                         "prepare a scored source with prepare_data.py")
    rows = read_jsonl(path)
    records = [check_record(obj, f"{path} line {line}") for line, obj in rows]
    note = flagembedding_keys_note([obj for _, obj in rows])
    if note:
        from crossdistill.data.versions import warn

        warn(f"{path}: {note}")
    if not records:
        raise UsageError(f"--teacher_scores {path} holds no records; one JSON object per line: {', '.join(RECORD_KEYS)}")
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.query in seen:
            raise UsageError(f"{path}: the query {r.query[:60]!r} has two records (lines {seen[r.query] + 1} and {i + 1}); "
                             "merge them into one record per query")
        seen[r.query] = i
    return records


SCORE_KINDS = ("auto", "logit", "probability")
PROBABILITY_CLIP = 1e-6  # a probability of exactly 0 or 1 becomes the logit of 1e-6 / 1 - 1e-6 (±13.8)


def score_kind_of(records: list[ScoredList], kind: str = "auto") -> tuple[str, str]:
    """What a file's scores are — ``logit`` or ``probability`` — and why: ``kind`` when the user said (a probability
    outside [0, 1] refused), else ``auto``: probabilities when every score lies in [0, 1] and they are not all equal
    (sentence-transformers' ``CrossEncoder.predict`` applies a sigmoid by default, FlagEmbedding's ``compute_score``
    with ``normalize=True``), logits otherwise (FlagEmbedding's default, this toolkit's own files)."""
    scores = [s for r in records for s in (*r.pos_scores, *r.neg_scores)]
    outside = next((s for s in scores if not 0.0 <= s <= 1.0), None)
    if kind == "probability" and outside is not None:
        raise UsageError(f"--score_kind probability, but the file holds the score {outside:g}, outside [0, 1]; pass "
                         "--score_kind logit (or auto)")
    if kind != "auto":
        return kind, f"--score_kind {kind}"
    if outside is None and len(set(scores)) > 1:
        return "probability", (f"every one of its {len(scores)} scores lies in [0, 1] (CrossEncoder.predict's default "
                               "sigmoid, or a normalised compute_score); pass --score_kind logit if they are logits")
    return "logit", (f"a score lies outside [0, 1] ({outside:g})" if outside is not None else
                     "its scores are all equal") + "; pass --score_kind probability if they are probabilities"


def as_logits(records: list[ScoredList], kind: str) -> list[ScoredList]:
    """The records with logits: probabilities become log(p / (1 - p)) (clipped to [1e-6, 1 - 1e-6]), logits stay."""
    if kind != "probability":
        return records

    def logit(ps):
        p = np.clip(np.asarray(ps, dtype=np.float64), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
        return [float(x) for x in np.log(p / (1 - p))]

    return [ScoredList(r.query, r.pos, r.neg, logit(r.pos_scores), logit(r.neg_scores)) for r in records]


def scores_fingerprint(path: str | Path) -> str:
    from crossdistill.core.files import file_sha256

    return "scores-" + file_sha256(path)[:24]


def record(query: str, passages: list[str], positive: list[bool], logits) -> dict:
    """The FlagEmbedding-layout record of one candidate list (positives first, in list order)."""
    logits = [float(x) for x in logits]
    return {"query": query,
            "pos": [p for p, y in zip(passages, positive) if y], "neg": [p for p, y in zip(passages, positive) if not y],
            "pos_scores": [s for s, y in zip(logits, positive) if y], "neg_scores": [s for s, y in zip(logits, positive) if not y]}


def write_scores_file(records: list[dict], path: str | Path) -> None:
    """Write the records as JSONL, atomically (a temporary file renamed into place)."""
    from crossdistill.core.files import atomic_file

    with atomic_file(Path(path)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def lists_from_scores(records: list[ScoredList], queries: list[str], K: int) -> tuple[list, list[np.ndarray], dict]:
    """Candidate lists of the training ``queries`` (their order) from scored records: each query's positives (at most
    K - 1) then its negatives, K at most, with their scores; queries without a record are left out and counted."""
    from crossdistill.data.candidates import CandidateList

    by_query = {r.query: r for r in records}
    lists, logits, missing = [], [], 0
    for q in queries:
        r = by_query.get(q)
        if r is None:
            missing += 1
            continue
        pos, pos_s = r.pos[:K - 1], r.pos_scores[:K - 1]
        neg = [(n, s) for n, s in zip(r.neg, r.neg_scores) if n not in r.pos][:K - len(pos)]
        lists.append(CandidateList(q, pos + [n for n, _ in neg], [True] * len(pos) + [False] * len(neg)))
        logits.append(np.asarray(pos_s + [s for _, s in neg], dtype=np.float32))
    if not lists:
        raise UsageError(f"none of the {len(queries)} training queries has a record in the scores file (of "
                         f"{len(records)} records): the file was written for other data; write it over this data version "
                         "with teacher_scores.py")
    stats = {"queries": len(lists), "K": K, "short_lists": sum(len(c.passages) < K for c in lists),
             "one_passage_lists": sum(len(c.passages) < 2 for c in lists),
             "negative_source": "scores file", "mean_candidates": round(sum(len(c.passages) for c in lists) / len(lists), 3),
             "mined_negatives": 0, "train_queries_without_scores": missing,
             "records_not_in_train": len(set(by_query) - set(queries))}
    return lists, logits, stats
