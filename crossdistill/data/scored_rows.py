"""Scored sources: FlagEmbedding lists with scores, or ``positive_score``/``negative_score``/``score`` columns beside
pairs or triplets, read into rows and the teacher scores prepare_data.py keeps."""

from __future__ import annotations

import pandas as pd

from crossdistill.core.errors import UsageError
from crossdistill.data.tables import ROLES, labelled_rows, text_cell
from crossdistill.data.teacher_scores import check_score

# a teacher's scores carried by your rows: FlagEmbedding's layout (list columns pos/neg with pos_scores/neg_scores), or one
# score column per passage column of flat pairs/triplets
POSITIVE_SCORE_NAMES = ("positive_score", "pos_score", "score")
NEGATIVE_SCORE_NAMES = ("negative_score", "neg_score")


def _listish(value) -> bool:
    return isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, (str, bytes)))


def _plain(value):
    """A cell as plain Python (Parquet gives numpy arrays for list columns; a key a JSONL row lacks is NaN: None)."""
    if isinstance(value, float) and value != value:
        return None
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def _score(value, where: str) -> float:
    """A score cell (CSV cells are strings) as a checked number (:func:`~crossdistill.data.teacher_scores.check_score`)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass  # refused below, naming the cell
    return check_score(value, where)


def _add_score(scored: dict, query: str, role: str, text: str, score: float, where: str) -> None:
    entry = scored.setdefault(query, {"pos": {}, "neg": {}})
    other = entry["neg" if role == "pos" else "pos"]
    if text in other:
        raise UsageError(f"{where}: the same passage is scored as both a positive and a negative of its query; fix that row")
    if entry[role].get(text, score) != score:
        raise UsageError(f"{where}: the pair (query, passage) was scored {entry[role][text]} in an earlier row and {score} "
                         "here; give each pair one score")
    entry[role][text] = score


def _flagembedding_rows(df: pd.DataFrame, source: str, pos_col: str) -> tuple[pd.DataFrame, dict | None]:
    from crossdistill.data.teacher_scores import check_record

    lower = {str(c).lower(): c for c in df.columns}
    q_col = next((lower[n] for n in ROLES["anchor"] if n in lower), None)
    if q_col is None:
        raise UsageError(f"{source} has list columns pos/neg (FlagEmbedding's layout) but no query column; name it query")
    has_scores = "pos_scores" in lower
    rows, scored = [], ({} if has_scores else None)
    for i, raw in enumerate(df.to_dict("records")):
        where = f"{source} row {i + 1}"
        # a record without pos_scores in a scored file is a query with labels only (split like any; never a teacher)
        row_scored = has_scores and _plain(raw.get(lower["pos_scores"])) is not None
        obj = {"query": text_cell(raw.get(q_col), f"{where}, column {q_col!r}"),
               "pos": _plain(raw.get(pos_col)), "neg": _plain(raw.get(lower.get("neg"))) if "neg" in lower else [],
               **({"pos_scores": _plain(raw.get(lower["pos_scores"])),
                   "neg_scores": _plain(raw.get(lower["neg_scores"])) if "neg_scores" in lower else None}
                  if row_scored else {})}
        if obj["neg"] is None:
            obj["neg"] = []
        if row_scored and not obj["neg"] and obj["neg_scores"] is None:
            obj["neg_scores"] = []
        rec = check_record(obj, where, scored=row_scored)
        pos = [text_cell(t, f"{where}, column 'pos'") for t in rec.pos]
        neg = [text_cell(t, f"{where}, column 'neg'") for t in rec.neg]
        for p in pos:
            rows += [(rec.query, p, n) for n in neg] or [(rec.query, p, None)]
        if scored is not None and row_scored:
            for role, texts, scores in (("pos", pos, rec.pos_scores), ("neg", neg, rec.neg_scores)):
                for t, v in zip(texts, scores):
                    _add_score(scored, rec.query, role, t, v, where)
    out = pd.DataFrame(rows, columns=["anchor", "positive", "negative"])
    if out["negative"].isna().any():  # some queries come without negatives: pairs (the scores keep every negative)
        out = out[["anchor", "positive"]].drop_duplicates().reset_index(drop=True)
    return out, scored


def _role_column(lower: dict, role: str, mapping: dict, source: str, found: list) -> str:
    if role in mapping:
        return mapping[role]
    hit = next((lower[n] for n in ROLES[role] if n in lower), None)
    if hit is None:
        raise UsageError(f"{source} looks like sentence-transformers' mine_hard_negatives output but has no {role} column "
                         f"(found: {', '.join(found)}); map it with --columns {role}=<your column>")
    return hit


def st_mined_format(df: pd.DataFrame) -> str | None:
    """Which of sentence-transformers' ``mine_hard_negatives`` output formats a table is (``triplet``, ``n-tuple``,
    ``labeled-pair``, ``labeled-list``; ``+scores`` with ``output_scores=True``), or None. A plain triplet without
    scores is an ordinary triplet table and is not named here."""
    lower = {str(c).lower(): c for c in df.columns}
    scores = "+scores" if "scores" in lower else ""
    if any(c.startswith("negative_") and c[9:].isdigit() for c in lower):
        return "n-tuple" + scores
    if "negative" in lower:
        return "triplet" + scores if scores else None
    if "labels" in lower:
        return "labeled-list"
    lists = len(df) > 0 and any(_listish(df[c].iloc[0]) for n, c in lower.items() if n != "scores")
    if scores and lists:
        return "labeled-list+scores"
    if "label" in lower:
        return "labeled-pair"
    return None


def _st_mined_records(df: pd.DataFrame, source: str, columns: str | None, fmt: str) -> pd.DataFrame:
    """``mine_hard_negatives`` rows as FlagEmbedding records (``query``, ``pos``, ``neg`` and, with scores,
    ``pos_scores``/``neg_scores``; one record per row, a query's rows merged by :func:`_flagembedding_rows`). Its
    negatives are kept as they were mined; its scores are the teacher's scores of those pairs."""
    from crossdistill.data.tables import parse_columns, unambiguous_columns

    mapping, found = parse_columns(columns), unambiguous_columns(df, source)
    lower = {c.lower(): c for c in found}
    q_col = _role_column(lower, "anchor", mapping, source, found)
    d_col = _role_column(lower, "positive", mapping, source, found)
    negs = sorted((c for c in found if c.lower().startswith("negative_") and c[9:].isdigit()), key=lambda c: int(c[9:]))
    recs = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{source} row {i + 1}"
        q, d = row[q_col], _plain(row[d_col])
        scores = _plain(row.get(lower.get("scores"))) if "scores" in lower else None
        if scores is not None and not _listish(scores):
            raise UsageError(f"{where}: 'scores' holds {scores!r}, not a list of numbers; fix that row")
        if fmt.startswith(("n-tuple", "triplet")):
            neg = [row[c] for c in negs] if negs else [row[lower["negative"]]]
            rec = {"query": q, "pos": [d], "neg": neg}
            if scores is not None:
                if len(scores) != 1 + len(neg):
                    raise UsageError(f"{where}: 'scores' holds {len(scores)} numbers for {1 + len(neg)} passages; fix "
                                     "that row")
                rec.update(pos_scores=scores[:1], neg_scores=scores[1:])
        elif fmt.startswith("labeled-list"):
            if not _listish(d):
                raise UsageError(f"{where}: column {d_col!r} holds {type(d).__name__}, not the list of documents "
                                 "labeled-list has")
            if "labels" in lower:
                labels = _plain(row[lower["labels"]])
                if not _listish(labels) or len(labels) != len(d) or any(x not in (0, 1) for x in labels):
                    raise UsageError(f"{where}: 'labels' must be one 0/1 per document; fix that row")
                rec = {"query": q, "pos": [t for t, y in zip(d, labels) if y], "neg": [t for t, y in zip(d, labels) if not y]}
            else:  # output_scores=True drops the labels; mine_hard_negatives writes the positive first
                if scores is None or len(scores) != len(d):
                    raise UsageError(f"{where}: 'scores' must hold one number per document; fix that row")
                rec = {"query": q, "pos": d[:1], "neg": d[1:], "pos_scores": scores[:1], "neg_scores": scores[1:]}
        else:  # labeled-pair: one (query, document, label) row each
            label = _plain(row[lower["label"]])
            if label not in (0, 1):
                raise UsageError(f"{where}: 'label' is {label!r}; labeled-pair rows hold 1 (positive) or 0 (negative)")
            rec = {"query": q, "pos": [d] if label else [], "neg": [] if label else [d]}
        recs.append(rec)
    if fmt == "labeled-pair":  # a query's rows in one record: its positives and its negatives
        merged: dict = {}
        for r in recs:
            m = merged.setdefault(r["query"], {"query": r["query"], "pos": [], "neg": []})
            m["pos"] += r["pos"]
            m["neg"] += r["neg"]
        lone = [q for q, m in merged.items() if not m["pos"]]
        if lone:
            raise UsageError(f"{source}: the query {str(lone[0])[:60]!r} has rows labelled 0 only ({len(lone)} such "
                             "queries); every query needs a positive (label 1)")
        recs = list(merged.values())
    return pd.DataFrame(recs)


def scored_rows(df: pd.DataFrame, source: str, columns: str | None = None) -> tuple[pd.DataFrame, dict | None]:
    """:func:`labelled_rows`, and the teacher's scores the table carries, as ``{query: {"pos": {text: score}, "neg":
    {...}}}`` (None when it carries none): FlagEmbedding's JSONL layout (``query``, ``pos``/``neg`` lists,
    ``pos_scores``/``neg_scores``), or a score column beside flat pairs (``score``/``positive_score``) or triplets
    (``positive_score``, ``negative_score``). A missing, non-numeric or non-finite score is refused, naming the row."""
    lower = {str(c).lower(): c for c in df.columns}
    if "pos" in lower and len(df) and any(_listish(v) for v in df[lower["pos"]].tolist()):
        return _flagembedding_rows(df, source, lower["pos"])
    fmt = st_mined_format(df)
    if fmt is not None and len(df):
        print(f"{source}: sentence-transformers' mine_hard_negatives output ({fmt}): its negatives are read as they "
              "were mined" + (" and its scores kept as the teacher's (teacher_scores.jsonl)" if "scores" in fmt else "")
              + "; --negatives keep trains on them as they are", flush=True)
        return _flagembedding_rows(_st_mined_records(df, source, columns, fmt), source, "pos")
    rows = labelled_rows(df, source, columns)
    pos_col = next((lower[n] for n in POSITIVE_SCORE_NAMES if n in lower), None)
    neg_col = next((lower[n] for n in NEGATIVE_SCORE_NAMES if n in lower), None)
    if pos_col is None and neg_col is None:
        return rows, None
    if "negative" in rows.columns and (pos_col is None or neg_col is None):
        raise UsageError(f"{source} holds triplets with a score for only one passage column; give both positive_score and "
                         "negative_score (the teacher's logits), or neither")
    if "negative" not in rows.columns and neg_col is not None:
        raise UsageError(f"{source} has {neg_col!r} but no negative column; drop it, or add the negatives")
    if "negative" not in rows.columns and str(pos_col).lower() == "score" and rows["anchor"].duplicated().any():
        raise UsageError(f"{source} holds (query, passage, score) rows with several rows per query: that is how "
                         "sentence-transformers' mine_hard_negatives(output_format='labeled-pair', output_scores=True) "
                         "writes positives and negatives alike, without their labels, so its negatives cannot be told "
                         "from its positives; mine with output_scores=False (labels) or with output_format='n-tuple' or "
                         "'labeled-list', or, if every row is a positive with its teacher score, name the column "
                         "positive_score")
    scored: dict = {}
    records = df.to_dict("records")
    for i, row in enumerate(rows.itertuples(index=False)):
        where = f"{source} row {i + 1}"
        _add_score(scored, row.anchor, "pos", row.positive, _score(records[i][pos_col], f"{where}, column {pos_col!r}"), where)
        if neg_col is not None:
            _add_score(scored, row.anchor, "neg", row.negative, _score(records[i][neg_col], f"{where}, column {neg_col!r}"),
                       where)
    return rows, scored
