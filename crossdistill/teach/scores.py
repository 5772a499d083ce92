"""The teacher's judgement as numbers: one or several cross-encoders' scores, or scores read from a file.

- **Several teachers** (``--teacher_path A --teacher_path B``, weights ``--teacher_weights 2,1``): each teacher's logits
  over a query's candidates are standardised per query (z-scores, so teachers on different scales add up), averaged
  with the weights, and put back on the teachers' own scale (the weighted mean of their per-query means and standard
  deviations), so one teacher, or several identical ones, give exactly that teacher's logits and the temperature of
  the soft labels keeps its meaning::

      combined = Σ w̃_i m_i + (Σ w̃_i s_i) · Σ w̃_i (t_i - m_i) / s_i,     w̃ = w / Σ w

  (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
  Distillation", average an ensemble of cross-encoders the same way, without the standardisation.)
- **Scores in and out**: a JSONL file in FlagEmbedding's layout, one record per query,
  ``{"query", "pos": [...], "neg": [...], "pos_scores": [...], "neg_scores": [...]}``; the scores are the teacher's
  logits (raw scores, before any sigmoid). ``teacher_scores.py`` writes one over a prepared version (the candidate
  lists exactly as the student builds them); ``prepare_data.py`` keeps a scored source's scores as the version's
  ``teacher_scores.jsonl``; the student trains on either with no teacher model (``--teacher_scores``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.data.teacher_scores import read_scores_file, record, write_scores_file
from crossdistill.models.teacher_folder import TeacherSpec, inspect_teacher, locate_teacher


# --------------------------------------------------------------------------- several teachers
def split_paths(value: str | None) -> list[str]:
    """``--teacher_path`` given once, several times or as a comma list: the teachers, in order."""
    return [p.strip() for p in str(value or "").split(",") if p.strip()]


def parse_weights(spec: str | None, n: int) -> list[float]:
    """``--teacher_weights "2,1"`` for ``n`` teachers (default: equal)."""
    if spec is None or not str(spec).strip():
        return [1.0] * n
    parts = [p.strip() for p in str(spec).split(",")]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"--teacher_weights takes one number per teacher, comma-separated (e.g. 2,1); got {spec!r}") from None
    if len(weights) != n:
        raise UsageError(f"--teacher_weights gives {len(weights)} weights for {n} teacher(s); give one per --teacher_path")
    if any(not math.isfinite(w) or w < 0 or w > 1e6 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"--teacher_weights must be finite, between 0 and 1e6, and not all 0; got {spec!r}")
    return weights


@dataclass(frozen=True)
class Teachers:
    """The run's teachers: what the user named, the local folders, what each is, its fingerprint, its weight."""

    names: tuple[str, ...]
    specs: tuple[TeacherSpec, ...]
    fingerprints: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.specs]

    @property
    def fingerprint(self) -> str:
        """One teacher's own fingerprint; several: a hash of theirs and their weights."""
        if len(self.specs) == 1:
            return self.fingerprints[0]
        return hashlib.sha256(json.dumps([self.fingerprints, self.weights]).encode()).hexdigest()[:24]

    def describe(self) -> str:
        return " + ".join(f"{n} ({s.kind}{f', weight {w:g}' if len(self.specs) > 1 else ''})"
                          for n, s, w in zip(self.names, self.specs, self.weights))


def open_teachers(teacher_path: str, teacher_weights: str | None = None) -> Teachers:
    """Every teacher checked (:func:`~crossdistill.teacher.inspect_teacher`) and fingerprinted; nothing is loaded."""
    from crossdistill.teach.score_cache import teacher_fingerprint

    names = split_paths(teacher_path)
    if not names:
        raise UsageError("--teacher_path is empty; pass a cross-encoder folder or hub id")
    if len(set(names)) != len(names):
        raise UsageError(f"--teacher_path names the same teacher twice ({teacher_path}); give each teacher once and weigh "
                         "it with --teacher_weights")
    weights = parse_weights(teacher_weights, len(names))
    specs = tuple(inspect_teacher(locate_teacher(n)) for n in names)
    return Teachers(tuple(names), specs, tuple(teacher_fingerprint(s.path) for s in specs), tuple(weights))


def combine(per_teacher: list[list[np.ndarray]], weights) -> list[np.ndarray]:
    """Per list, the teachers' logits standardised, averaged with ``weights`` and put back on their mean scale (see the
    module docstring). One teacher: its logits as they are."""
    if len(per_teacher) == 1:
        return [np.asarray(t, dtype=np.float32) for t in per_teacher[0]]
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    out = []
    for lists in zip(*per_teacher):
        x = np.stack([np.asarray(t, dtype=np.float64) for t in lists])      # (teachers, K)
        mean, sd = x.mean(axis=1), x.std(axis=1)
        z = np.where(sd[:, None] > 1e-12, (x - mean[:, None]) / np.where(sd > 1e-12, sd, 1.0)[:, None], 0.0)
        out.append((w @ mean + (w @ sd) * (w @ z)).astype(np.float32))
    return out


def list_logits(teachers: Teachers, queries: list[str], lists: list[list[str]], cache_path, batch_size: int,
                device=None, log=print, on_progress=None) -> tuple[list[np.ndarray], dict]:
    """Per list the (combined) teachers' logits of ``(queries[i], lists[i][j])``; each teacher scores each pair once
    (its fingerprinted cache: ``cache_path``, or the teacher's own file in the toolkit's cache when None)."""
    from crossdistill.teach.score_cache import cached_teacher_logits

    pairs = [(q, p) for q, ps in zip(queries, lists) for p in ps]
    bounds = np.cumsum([0] + [len(ps) for ps in lists])
    per_teacher, stats = [], []
    for spec, fp, name in zip(teachers.specs, teachers.fingerprints, teachers.names):
        if len(teachers.specs) > 1:
            log(f"teacher {name}:")
        logits, st = cached_teacher_logits(spec.path, pairs, cache_path, batch_size, device=device, log=log,
                                           on_progress=on_progress, fingerprint=fp)
        per_teacher.append([logits[bounds[i]:bounds[i + 1]] for i in range(len(lists))])
        stats.append({"teacher": name, **st})
    combined = combine(per_teacher, teachers.weights)
    if len(stats) == 1:
        return combined, stats[0]
    return combined, {"teachers": stats, "weights": list(teachers.weights),
                      "distinct_pairs": stats[0]["distinct_pairs"]}


# --------------------------------------------------------------------------- teacher_scores.py
def export_scores(cfg, log=print) -> Path:
    """``teacher_scores.py``: the student's candidate lists over ``cfg.data_version`` (built as
    :func:`~crossdistill.candidates.build_candidates` builds them for the student with the same --K, --negative_source,
    --seed and --max_samples) and the teachers' (combined) logits, written to ``cfg.output``. An existing file is
    replaced only with ``--overwrite`` and only when it is a scores file; every input is checked first."""
    import torch

    from crossdistill.data import versions as data
    from crossdistill.data.candidates import build_candidates

    out = Path(cfg.output)
    if out.is_dir():
        raise UsageError(f"--output {out} is a folder; pass a file path such as {out / 'teacher_scores.jsonl'}")
    if out.exists():
        if not cfg.overwrite:
            raise UsageError(f"--output {out} exists; pass --overwrite to replace it (only a teacher-scores file is "
                             "replaced), or another path")
        try:
            read_scores_file(out)
        except UsageError:
            raise UsageError(f"--output {out} exists and is not a teacher-scores file; it is left as it is: pass another "
                             "path") from None
    teachers = open_teachers(cfg.teacher_path, cfg.teacher_weights)
    train = data.subsample(data.read_triplets(data.data_file(cfg.data_version, "train", cfg.data_root)), cfg.max_samples,
                           cfg.seed)
    lists, stats = build_candidates(train, cfg.K, cfg.negative_source, cfg.seed, cfg.mining_model)
    log(f"{stats['queries']} training queries x K={cfg.K} candidates ({stats['mined_negatives']} mined "
        f"{cfg.negative_source} negatives); teacher {teachers.describe()}")
    device = torch.device("cuda") if torch.cuda.is_available() else None
    logits, _ = list_logits(teachers, [c.query for c in lists], [c.passages for c in lists], cfg.score_cache,
                            cfg.eval_batch_size, device=device, log=log)
    write_scores_file([record(c.query, c.passages, c.positive, lo) for c, lo in zip(lists, logits)], out)
    log(f"wrote {out}: {len(lists)} records, {sum(len(c.passages) for c in lists)} scored pairs")
    return out
