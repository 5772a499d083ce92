"""Your own data: labelled pairs or triplets, a corpus, queries and qrels, as CSV, TSV, JSONL, Parquet, a folder saved
by Hugging Face ``datasets`` (``save_to_disk``) or, online, a hub dataset id.

Column names are recognised (:data:`ROLES`: ``query``/``question``/``anchor``, ``positive``/``passage``/``context``/
``document``, ``negative``; ``id``/``_id``/``doc_id`` ... and ``text``/``passage`` ... for a corpus) or mapped with
``--columns anchor=q,positive=doc``. Every bad input is one :class:`~crossdistill.core.errors.UsageError` that names the
file, the row or column, and the fix: an unknown column, an empty text, an id repeated with another text, a binary file
under a text suffix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from crossdistill.core.errors import UsageError

TABLE_KINDS = ("csv", "tsv", "jsonl", "parquet", "hf")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}
# the column names recognised for each role, in order of preference
ROLES = {"anchor": ("anchor", "query", "question", "queries", "questions"),
         "positive": ("positive", "passage", "context", "document", "positive_passage", "pos"),
         "negative": ("negative", "negative_passage", "hard_negative", "neg")}
ID_NAMES = ("_id", "id", "doc_id", "docid", "corpus_id", "pid", "passage_id", "query_id", "qid")
TEXT_NAMES = ("text", "passage", "document", "content", "contents", "body", "question", "query")
QRELS_NAMES = {"query": ("query-id", "query_id", "qid", "query"), "doc": ("corpus-id", "corpus_id", "doc_id", "docid",
                                                                          "pid", "passage_id", "doc"),
               "score": ("score", "label", "relevance", "rel")}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def table_kind(source: str) -> str | None:
    """The table kind a path names (by suffix, or a ``datasets`` folder), ``"hf"`` for a hub id, or None."""
    p = Path(source)
    if p.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        return "hf" if any((p / m).is_file() for m in markers) else None
    if p.suffix.lower() in SUFFIXES:
        return SUFFIXES[p.suffix.lower()]
    if not p.exists() and _HUB_ID.fullmatch(source):
        return "hf"
    return None


def _check_text_file(path: Path) -> None:
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file; check the path")
    with open(path, "rb") as f:
        head = f.read(8192)
    if b"\x00" in head:
        at = head.index(b"\x00")
        raise UsageError(f"{path} is not a text file (binary data at byte {at}); pass a UTF-8 {path.suffix or 'text'} file, "
                         "or name the file by what it holds")


def read_table(source: str, kind: str) -> pd.DataFrame:
    """A table of ``kind`` as a DataFrame (cells as read: strings, numbers or None)."""
    path = Path(source)
    try:
        if kind in ("csv", "tsv"):
            _check_text_file(path)
            import csv

            # TSV has no quoting: a cell that starts with '"' is text, not the start of a quoted run of rows
            quoting = {} if kind == "csv" else {"quoting": csv.QUOTE_NONE}
            header = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str, nrows=1, header=None,
                                 encoding="utf-8", **quoting)
            names = [str(c) for c in header.iloc[0]] if len(header) else []  # as written: pandas renames a twin x.1
            dup = next((c for c in names if names.count(c) > 1), None)
            if dup is not None:
                raise UsageError(f"{path} has the column {dup!r} twice: which one to read would depend on their order; "
                                 "rename or drop one")
            return pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False, na_values=[],
                               encoding="utf-8", **quoting)
        if kind == "jsonl":
            from crossdistill.data.sources import read_jsonl

            _check_text_file(path)
            return pd.DataFrame([obj for _, obj in read_jsonl(path)])
        if kind == "parquet":
            if not path.is_file():
                raise UsageError(f"{path} does not exist or is not a file; check the path")
            return pd.read_parquet(path)
        if kind == "hf":
            return _read_hf(source)
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path} is empty; it needs a header line and rows") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise UsageError(f"{path} is not a well-formed {kind.upper()} ({str(exc).strip()}); fix the quoting or the column "
                         "count") from None
    except (OSError, ValueError) as exc:  # pyarrow: not a Parquet file, ...
        raise UsageError(f"cannot read {path} as {kind} ({str(exc).splitlines()[0][:160]}); check the file and its "
                         "suffix") from None
    raise UsageError(f"unknown table kind {kind!r}; use one of {', '.join(TABLE_KINDS)}")


def _read_hf(source: str) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise UsageError("reading a Hugging Face dataset needs the datasets package: pip install datasets") from None
    try:
        ds = datasets.load_from_disk(source) if Path(source).is_dir() else datasets.load_dataset(source)
    except Exception as exc:  # noqa: BLE001 - offline, missing, not a dataset: one message
        raise UsageError(f"cannot load the dataset {source} ({str(exc).splitlines()[0][:160]}); pass a folder written by "
                         "datasets' save_to_disk, or (online) a hub dataset id") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise UsageError(f"the dataset {source} has splits {', '.join(ds)} and none is 'train'; save the split with "
                             "your labelled rows on its own")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ds.to_pandas()


def text_cell(value, where: str) -> str:
    if value is None or (isinstance(value, float) and value != value) or not isinstance(value, str):
        found = "nothing" if value is None or (isinstance(value, float) and value != value) else type(value).__name__
        raise UsageError(f"{where} holds {found} where a text is needed; fill or drop that row")
    text = value.strip()
    if not text or text.lower() in ("nan", "none", "null", "<na>"):
        raise UsageError(f"{where} is an empty text; fill or drop that row")
    from crossdistill.data.versions import clip_text

    return clip_text(text)


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"anchor=question,positive=answer"`` → {"anchor": "question", "positive": "answer"}."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        role, sep, column = (x.strip() for x in part.partition("="))
        if not sep or role not in ROLES or not column:
            raise UsageError(f"--columns takes role=column pairs with roles {', '.join(ROLES)} (e.g. "
                             f"anchor=question,positive=answer); got {spec!r}")
        out[role] = column
    twice = sorted({c for c in out.values() if list(out.values()).count(c) > 1})
    if twice:
        roles = [r for r, c in out.items() if c == twice[0]]
        raise UsageError(f"--columns maps the column {twice[0]!r} to {' and '.join(roles)}: each role needs its own column "
                         f"(a positive that is the query itself teaches nothing); got {spec!r}")
    return out


def unambiguous_columns(df: pd.DataFrame, source: str) -> list[str]:
    """The table's column names, refused when two are the same name or the same name in another case (``query`` and
    ``Query``): which one a role reads would depend on the column order."""
    found = [str(c) for c in df.columns]
    by_lower: dict[str, list[str]] = {}
    for c in found:
        by_lower.setdefault(c.lower(), []).append(c)
    clash = next((names for names in by_lower.values() if len(names) > 1), None)
    if clash:
        what = "twice" if len(set(clash)) == 1 else "in two cases"
        raise UsageError(f"{source} has the column {clash[0]!r} {what} ({', '.join(map(repr, clash))}): which one to read "
                         "would depend on their order; rename or drop one")
    return found


def labelled_rows(df: pd.DataFrame, source: str, columns: str | None = None) -> pd.DataFrame:
    """The labelled rows of a table as ``anchor, positive[, negative]`` texts: pairs or triplets, the columns named by
    ``--columns`` or recognised by their common names."""
    mapping = parse_columns(columns)
    found = unambiguous_columns(df, source)
    lower = {c.lower(): c for c in found}
    chosen = {}
    for role, names in ROLES.items():
        if role in mapping:
            if mapping[role] not in found:
                raise UsageError(f"--columns names {mapping[role]!r} for {role}, but {source} has no such column (found: "
                                 f"{', '.join(found) or 'none'})")
            chosen[role] = mapping[role]
        else:
            hit = next((lower[n] for n in names if n in lower), None)
            if hit is not None:
                chosen[role] = hit
    shared = sorted({c for c in chosen.values() if list(chosen.values()).count(c) > 1})
    if shared:
        raise UsageError(f"{source}: the column {shared[0]!r} would be read as "
                         f"{' and '.join(r for r, c in chosen.items() if c == shared[0])}; map each role to its own "
                         "column with --columns")
    for role in ("anchor", "positive"):
        if role not in chosen:
            raise UsageError(f"{source} has no {role} column (found: {', '.join(found) or 'none'}); name it "
                             f"{' or '.join(ROLES[role][:4])}, or map yours with --columns {role}=<your column>")
    if len(df) == 0:
        raise UsageError(f"{source} has a header but no rows; add labelled pairs")
    out = {}
    for role, column in chosen.items():
        out[role] = [text_cell(v, f"{source} row {i + 1}, column {column!r}") for i, v in enumerate(df[column].tolist())]
    return pd.DataFrame(out)


def _id_and_text(df: pd.DataFrame, source: str, what: str) -> tuple[str, str, str | None]:
    found = unambiguous_columns(df, source)
    lower = {c.lower(): c for c in found}
    id_col = next((lower[n] for n in ID_NAMES if n in lower), None)
    text_col = next((lower[n] for n in TEXT_NAMES if n in lower), None)
    if id_col is None or text_col is None:
        raise UsageError(f"{source} needs an id and a text column for the {what} (found: {', '.join(found) or 'none'}); "
                         f"name them _id/id and text")
    return id_col, text_col, lower.get("title")


def read_id(raw, where: str, what: str = "passage") -> str:
    """One id cell as text: a string, or a whole number (``7`` and ``7.0`` both read ``"7"``, as a CSV and a JSONL of the
    same ids must match); a missing value, NaN, a list, an object or a fractional number is refused, naming it."""
    import math

    if raw is None or isinstance(raw, bool) or (isinstance(raw, float) and not math.isfinite(raw)):
        raise UsageError(f"{where} has no id ({raw!r}); give every {what} an id")
    if isinstance(raw, (list, tuple, dict, set)) or getattr(raw, "ndim", 0):
        raise UsageError(f"{where} holds a {type(raw).__name__} ({str(raw)[:40]}) where an id is needed; ids are texts or "
                         "whole numbers")
    if isinstance(raw, float):
        if not raw.is_integer():
            raise UsageError(f"{where} holds the number {raw!r}; ids are texts or whole numbers")
        raw = int(raw)
    pid = str(raw).strip()
    if not pid or pid.lower() in ("nan", "none", "null", "<na>"):
        raise UsageError(f"{where} has no id ({raw!r}); give every {what} an id")
    return pid


def read_texts(source: str, what: str = "passage", bodies: dict | None = None) -> dict[str, str]:
    """``{id: text}`` of a corpus (``what="passage"``, ``title + " " + text`` when there is a title) or of queries:
    JSONL/CSV/TSV/Parquet/``datasets`` with an id and a text column, or a ``.txt`` with one text per non-empty line
    (ids ``line<N>``). An id repeated with the same text is read once; with another text it is refused. ``bodies``: a
    dict to fill with ``{id: text without its title}`` for the passages that have a title (pairs often hold the body
    alone)."""
    path = Path(source)
    if path.suffix.lower() == ".txt":
        _check_text_file(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
        out = {f"line{n}": text_cell(line, f"{path} line {n}") for n, line in enumerate(lines, 1) if line.strip()}
        if not out:
            raise UsageError(f"{path} holds no {what}; one {what} per line")
        return out
    kind = table_kind(source)
    if kind is None:
        raise UsageError(f"cannot tell what {source} is; pass a .jsonl, .csv, .tsv, .parquet or .txt file")
    df = read_table(source, kind)
    if len(df) == 0:
        raise UsageError(f"{source} holds no {what}")
    id_col, text_col, title_col = _id_and_text(df, source, what)
    out: dict[str, str] = {}
    for i, row in enumerate(df.to_dict("records")):
        where = f"{source} row {i + 1}"
        raw_id = row[id_col]
        pid = read_id(raw_id, f"{where}, column {id_col!r}", what)
        text = text_cell(row[text_col], f"{where}, column {text_col!r}")
        title = row.get(title_col) if title_col else None
        if isinstance(title, str) and title.strip() and what == "passage":
            if bodies is not None:
                bodies[pid] = text
            text = f"{title.strip()} {text}"
        if pid in out and out[pid] != text:
            raise UsageError(f"{where}: the id {pid!r} is used twice with different texts; give each {what} its own id")
        out[pid] = text
    return out


def read_qrels_file(source: str) -> list[tuple[str, str, float]]:
    """(query id, passage id, score) pairs: a BEIR-style TSV (header optional) or a CSV/JSONL/Parquet table with
    query-id, corpus-id and optionally score columns (1 when absent)."""
    from crossdistill.data.sources import read_qrels

    path = Path(source)
    if path.suffix.lower() in (".tsv", ".tab"):
        _check_text_file(path)
        return read_qrels(path)
    kind = table_kind(source)
    if kind is None:
        raise UsageError(f"cannot tell what {source} is; pass qrels as .tsv, .csv, .jsonl or .parquet")
    df = read_table(source, kind)
    lower = {str(c).lower(): c for c in df.columns}
    q = next((lower[n] for n in QRELS_NAMES["query"] if n in lower), None)
    d = next((lower[n] for n in QRELS_NAMES["doc"] if n in lower), None)
    s = next((lower[n] for n in QRELS_NAMES["score"] if n in lower), None)
    if q is None or d is None:
        raise UsageError(f"{source} needs query-id and corpus-id columns (found: {', '.join(map(str, df.columns))})")
    out = []
    for i, row in enumerate(df.to_dict("records")):
        try:
            score = float(row[s]) if s is not None else 1.0
        except (TypeError, ValueError):
            raise UsageError(f"{source} row {i + 1}: the score {row[s]!r} is not a number; fix that row") from None
        out.append((str(row[q]).strip(), str(row[d]).strip(), score))
    if not out:
        raise UsageError(f"{source} holds no pairs")
    return out


__all__ = ["TABLE_KINDS", "table_kind", "read_table", "labelled_rows", "read_texts", "read_qrels_file", "parse_columns"]
