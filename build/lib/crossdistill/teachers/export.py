"""``teacher_scores.py``: the teachers' scores of the student's candidate lists, written as a FlagEmbedding-layout JSONL
(one record per query: ``query``, ``pos``, ``neg``, ``pos_scores``, ``neg_scores``; the scores are the teachers'
(combined) logits) that the student trains on with no teacher model (``--teacher_scores``)."""

from __future__ import annotations

from pathlib import Path

from crossdistill.core.errors import UsageError
from crossdistill.data.teacher_scores import read_scores_file, record, write_scores_file


def export_scores(cfg, log=print) -> Path:
    """The student's candidate lists over ``cfg.data_version`` (built as
    :func:`~crossdistill.data.candidates.build_candidates` builds them for the student with the same list settings,
    :class:`~crossdistill.teachers.config.ListSettings`, and --max_samples) and the teachers' (combined) logits, written
    to ``cfg.output``. An existing file is replaced only with ``--overwrite`` and only when it is a scores file; every
    input is checked first."""
    import torch

    from crossdistill.data.candidates import build_candidates
    from crossdistill.data.versions import DataVersion
    from crossdistill.teachers.config import open_run_teachers

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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.input_file:
        if out.resolve() == Path(cfg.input_file).resolve():
            raise UsageError(f"--output {out} is --input_file itself; write the scores to another file")
        lists = input_lists(cfg.input_file, log)
        teachers = open_run_teachers(cfg, device)
        log(f"{len(lists)} records of {cfg.input_file}, {sum(len(c.passages) for c in lists)} (query, passage) pairs; "
            f"teacher {teachers.describe()}")
    else:
        teachers = open_run_teachers(cfg, device)
        train = DataVersion.of(cfg).split("train", cfg.max_samples, cfg.seed)
        lists, stats = build_candidates(train, cfg.K, cfg.negative_source, cfg.seed, cfg.mining_model)
        log(f"{stats['queries']} training queries x K={cfg.K} candidates ({stats['mined_negatives']} mined "
            f"{cfg.negative_source} negatives); teacher {teachers.describe()}")
    logits, _ = teachers.logits([c.query for c in lists], [c.passages for c in lists], batch_size=cfg.eval_batch_size,
                                device=torch.device(device) if device == "cuda" else None, log=log)
    write_scores_file([record(c.query, c.passages, c.positive, lo) for c, lo in zip(lists, logits)], out)
    log(f"wrote {out}: {len(lists)} records, {sum(len(c.passages) for c in lists)} scored pairs")
    return out


def input_lists(path: str, log=print) -> list:
    """The lists of a user's FlagEmbedding-layout JSONL (``query``, ``pos``, ``neg``; scores in it are ignored): one
    candidate list per query, positives first; records of the same query merged (said), a passage listed twice kept once."""
    from crossdistill.data.candidates import CandidateList
    from crossdistill.data.sources import read_jsonl
    from crossdistill.data.teacher_scores import check_record, flagembedding_keys_note

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--input_file {p} does not exist or is not a file; pass a JSONL with query, pos and neg per line")
    merged: dict[str, tuple[list, list]] = {}
    records = 0
    rows = read_jsonl(p)
    note = flagembedding_keys_note([obj for _, obj in rows])
    if note:
        log(f"{p}: {note}")
    for line, obj in rows:
        rec = check_record(obj, f"{p} line {line}", scored=False)
        pos, neg = merged.setdefault(rec.query, ([], []))
        pos += [t for t in rec.pos if t not in pos]
        neg += [t for t in rec.neg if t not in neg and t not in pos]
        records += 1
    if not merged:
        raise UsageError(f"--input_file {p} holds no records; one JSON object per line with query, pos and neg")
    if records > len(merged):
        log(f"{records - len(merged)} records repeat a query of an earlier record: merged, one record per query")
    return [CandidateList(q, pos + neg, [True] * len(pos) + [False] * len(neg)) for q, (pos, neg) in merged.items()]
