"""Data: triplet CSVs (``anchor,positive,negative``) and the sources they are prepared from.

A *retrieval set* is the common shape every source is turned into: a passage corpus, queries, and
for each query the ids of its relevant (positive) passages. ``prepare_data.py`` splits it by query
(or by article), mines negatives (:mod:`crossdistill.mining`) and writes triplet CSVs.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import UsageError

COLUMNS = ("anchor", "positive", "negative")
# texts are cut to this many characters when read: far more than any max_len in tokens needs (a token is at
# least one character), and it keeps a pathological cell (a 50 MB pasted file) from costing gigabytes and
# minutes in the tokenizer, which tokenises the whole text before it truncates
MAX_TEXT_CHARS = 32_768
_BLANK = {"", "nan", "none", "null", "<na>"}


def clip_text(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS]
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


# --------------------------------------------------------------------------- triplet CSVs
def read_triplets(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate an ``anchor,positive,negative`` CSV (UTF-8). Raises UsageError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist; run prepare_data.py first or check the path/--data_version")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path} is empty; it needs a header 'anchor,positive,negative' and at least one row") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise UsageError(f"{path} is not a well-formed CSV ({str(exc).strip()}); fix the quoting or the column count") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UsageError(f"{path} lacks column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))}); "
                         "the header must be 'anchor,positive,negative'")
    if len(df) == 0:
        raise UsageError(f"{path} has a header but no rows; add triplets or re-run prepare_data.py")
    df = df[list(COLUMNS)]
    blank = df.apply(lambda col: col.str.strip().str.lower().isin(_BLANK))
    if blank.any().any():
        rows = blank.any(axis=1).to_numpy()
        first = [int(i) + 1 for i in rows.nonzero()[0][:5]]  # 1-based data rows (a quoted cell may span lines)
        raise UsageError(f"{path} has {int(rows.sum())} row(s) with an empty or NaN cell (first at row(s) "
                         f"{', '.join(map(str, first))} after the header); drop or fill those rows")
    return df.apply(lambda col: col.map(clip_text)).reset_index(drop=True)


def write_triplets(df: pd.DataFrame, path: str | os.PathLike) -> None:
    df[list(COLUMNS)].to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL, encoding="utf-8")


def subsample(df: pd.DataFrame, max_samples: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of the *queries* (anchors), each with every one of its rows, at most ``max_samples``
    rows in all (at least one query), file order kept; ``df`` itself when it has no more rows than that.

    Rows are never sampled one by one: a query that kept some of its rows would see its other positives become
    "non-relevant" passages of a val pool, or be mined as its hard negatives in training."""
    if not max_samples or max_samples >= len(df):
        return df
    counts = df["anchor"].value_counts(sort=False)
    order = list(counts.index)
    random.Random(seed).shuffle(order)
    chosen, total = set(), 0
    for anchor in order:
        if chosen and total + counts[anchor] > max_samples:
            break
        chosen.add(anchor)
        total += int(counts[anchor])
    return df[df["anchor"].isin(chosen)].reset_index(drop=True)


_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_version_name(name: str) -> str:
    """A data version is a folder *name* under its root, never a path: ``../../etc`` or ``/tmp/x`` would write (or
    read) outside ``--output_root``/``--data_root``."""
    if not isinstance(name, str) or not _VERSION_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"--data_version must be a name (letters, digits, '.', '_', '-', starting with a letter or digit), "
                         f"not a path; got {name!r}: put the folder where you want with --output_root / --data_root")
    return name


def data_file(data_version: str, split: str, root: str | os.PathLike = "preprocessed") -> Path:
    """``preprocessed/<data_version>/<split>.csv``, with a clear error when the version is missing."""
    folder = Path(root) / check_version_name(data_version)
    if not folder.is_dir():
        have = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise UsageError(f"data version '{data_version}' not found in {root}/ (have: {', '.join(have) or 'none'}); "
                         f"create it with: python prepare_data.py --source ... --data_version {data_version}")
    return folder / f"{split}.csv"


def version_fingerprint(data_root: str | os.PathLike, data_version: str) -> dict[str, str]:
    """sha256 of each file of a prepared version a run reads (train, val, test, corpus): recorded by every run, so a
    version prepared again under the same name (a new split) is told apart from the one a model was trained on."""
    from .fsutil import file_sha256

    folder = Path(data_root) / data_version
    return {name: file_sha256(folder / name) for name in ("train.csv", "val.csv", "test.csv", "corpus.jsonl")
            if (folder / name).is_file()}


# --------------------------------------------------------------------------- a prepared version's corpus
CORPUS_FILE = "corpus.jsonl"  # in a prepared version: the passages its val and test queries are ranked against


def write_corpus(corpus: dict[str, str], path: str | os.PathLike) -> None:
    """One JSON line per passage, ``{"_id", "text"}`` (BEIR's layout, the title already joined to the text)."""
    with open(path, "w", encoding="utf-8") as f:
        for pid, text in corpus.items():
            f.write(json.dumps({"_id": pid, "text": text}, ensure_ascii=False) + "\n")


def read_corpus_texts(path: str | os.PathLike) -> list[str]:
    """The passage texts of a corpus file written by :func:`write_corpus`, in file order."""
    return list(_beir_records(Path(path), "passage").values())


# --------------------------------------------------------------------------- triplets as a ranking task
@dataclass
class TripletPool:
    """A triplet CSV as a ranking task (the student's val pool, the evaluation's test pool): its distinct queries,
    its distinct passages (the pool; optionally widened by a whole corpus) and the triplets as indices into them.

    The triplets are the one source of each query's positives: :meth:`relevant` (indices) and :attr:`qrels`
    (ids ``q{i}``/``d{j}``, the shape ranx and :func:`crossdistill.metrics.ranking_metrics` read) derive from them."""

    df: pd.DataFrame
    queries: list[str]
    passages: list[str]
    triplets: list[tuple[int, int, int]]  # (query index, positive index, negative index), one per CSV row

    @classmethod
    def from_df(cls, df: pd.DataFrame, extra_passages: list[str] | None = None) -> "TripletPool":
        queries = list(dict.fromkeys(df["anchor"]))
        passages = list(dict.fromkeys(list(df["positive"]) + list(df["negative"]) + list(extra_passages or [])))
        qi = {q: i for i, q in enumerate(queries)}
        pi = {p: i for i, p in enumerate(passages)}
        triplets = [(qi[a], pi[p], pi[n]) for a, p, n in df[list(COLUMNS)].itertuples(index=False)]
        return cls(df, queries, passages, triplets)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "TripletPool":
        return cls.from_df(read_triplets(path))

    def query_ids(self) -> list[str]:
        return [f"q{i}" for i in range(len(self.queries))]

    def passage_ids(self) -> list[str]:
        return [f"d{j}" for j in range(len(self.passages))]

    def relevant(self) -> list[set[int]]:
        """Per query (in order), the indices of its relevant passages."""
        out: list[set[int]] = [set() for _ in self.queries]
        for q, p, _ in self.triplets:
            out[q].add(p)
        return out

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {f"q{q}": {f"d{p}": 1 for p in sorted(ps)} for q, ps in enumerate(self.relevant()) if ps}


# --------------------------------------------------------------------------- retrieval sets
@dataclass
class RetrievalSet:
    """A corpus, queries, and each query's positive passage ids (``qrels``).

    ``groups`` maps a passage id to a group (e.g. its article) used by the false-negative guard;
    ``query_groups`` maps a query id to the group it is split by (its article; default its own id).
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, list[str]]
    groups: dict[str, str] = field(default_factory=dict)
    query_groups: dict[str, str] = field(default_factory=dict)

    def subset(self, query_ids) -> "RetrievalSet":
        ids = [q for q in query_ids if q in self.qrels]
        return RetrievalSet(self.corpus, {q: self.queries[q] for q in ids}, {q: self.qrels[q] for q in ids},
                            self.groups, {q: self.query_groups.get(q, q) for q in ids})


def warn(message: str) -> None:
    """A warning for the user: one line on stderr (the data is usable, but not as given)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line; a line that is not a JSON object is refused, naming it."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise UsageError(f"{path} line {n} is not valid JSON; fix that line") from None
                if not isinstance(obj, dict):
                    raise UsageError(f"{path} line {n} is a JSON {type(obj).__name__}, not an object with named fields; "
                                     "fix that line")
                rows.append((n, obj))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    return rows


def _beir_records(path: Path, what: str) -> dict[str, str]:
    """``{_id: text}`` of a BEIR corpus or queries file (corpus text = ``title + " " + text``), each record checked:
    ``_id`` a string or number, ``text`` (and ``title``) strings. A repeated ``_id`` keeps its first record, with a
    warning that counts them."""
    out: dict[str, str] = {}
    duplicates = 0
    for n, d in read_jsonl(path):
        pid, text, title = d.get("_id"), d.get("text"), d.get("title", "")
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid).strip() == "":
            raise UsageError(f"{path} line {n}: the {what} has no \"_id\" (a string or number); fix that line")
        if not isinstance(text, str):
            raise UsageError(f"{path} line {n}: the {what} {pid!r} has no \"text\" string (found "
                             f"{type(text).__name__ if text is not None else 'null'}); fix that line")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise UsageError(f"{path} line {n}: the {what} {pid!r} has a \"title\" that is not a string; fix that line")
        if str(pid) in out:
            duplicates += 1
            continue
        out[str(pid)] = clip_text((title + " " + text).strip()) if what == "passage" else text
    if duplicates:
        warn(f"{path}: {duplicates} line(s) repeat an earlier \"_id\"; kept the first record of each")
    return out


def _read_qrels(path: Path) -> list[tuple[str, str, float]]:
    """(query id, passage id, score) of a BEIR qrels TSV, with or without its header line (a first line whose score
    column is a number is a pair, kept, with a warning); malformed lines are refused, naming them."""
    try:
        lines = [(n, line.rstrip("\n\r")) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if line.strip()]
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    if not lines:
        raise UsageError(f"{path} is empty; qrels need lines 'query-id<TAB>corpus-id<TAB>score'")
    out = []
    for i, (n, line) in enumerate(lines):
        parts = line.split("\t")
        if len(parts) < 3:
            raise UsageError(f"{path} line {n} has {len(parts)} tab-separated column(s); qrels need query-id, corpus-id "
                             "and score")
        try:
            score = float(parts[2])
        except ValueError:
            if i == 0:
                continue  # the header
            raise UsageError(f"{path} line {n}: the score {parts[2]!r} is not a number; fix that line") from None
        if i == 0:
            warn(f"{path} has no header line; its first line is read as a pair ({parts[0]}, {parts[1]})")
        out.append((parts[0].strip(), parts[1].strip(), score))
    if not out:
        raise UsageError(f"{path} holds a header but no pairs; add 'query-id<TAB>corpus-id<TAB>score' lines")
    return out


def _beir_root(source: str, cache_dir: Path) -> Path:
    """A BEIR folder path, or a dataset name downloaded (online only) into ``cache_dir``."""
    path = Path(source)
    if path.exists():
        return path
    if "/" in source or os.sep in source:
        raise UsageError(f"source {source} does not exist; pass a BEIR folder, a SQuAD JSON or a triplet CSV")
    target = cache_dir / source
    if (target / "corpus.jsonl").is_file():
        return target
    url = BEIR_URL.format(name=source)
    cache_dir.mkdir(parents=True, exist_ok=True)
    zpath = cache_dir / f".{source}.zip.part"
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(zpath, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        zpath.unlink(missing_ok=True)
        raise UsageError(f"'{source}' is not a local path and downloading the BEIR dataset from {url} failed ({exc}); "
                         "offline, download it elsewhere and pass its folder (e.g. ../shared/data/scifact)") from None
    with zipfile.ZipFile(zpath) as z:
        z.extractall(cache_dir)
    zpath.unlink()
    return target


def load_beir_corpus(source: str, cache_dir: str | os.PathLike = ".cache/beir") -> list[str]:
    """Every passage text of a BEIR folder's ``corpus.jsonl`` (``title + " " + text``), in file order."""
    root = _beir_root(source, Path(cache_dir))
    if not (root / "corpus.jsonl").is_file():
        raise UsageError(f"BEIR folder {root} lacks corpus.jsonl")
    return list(_beir_records(root / "corpus.jsonl", "passage").values())


def load_beir(source: str, split: str, cache_dir: str | os.PathLike = ".cache/beir") -> RetrievalSet:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

    Passage text is ``title + " " + text`` as BEIR uses it; only qrels with score > 0 are positives.
    Queries with identical text (SciFact has a few) become one query holding all their positives.
    Every record is checked (file and line named on error); repeated ids and a qrels file without header are warned
    about, with counts.
    """
    root = _beir_root(source, Path(cache_dir))
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / name).is_file():
            raise UsageError(f"BEIR folder {root} lacks {name}; a BEIR folder needs corpus.jsonl, queries.jsonl "
                             f"and qrels/{split}.tsv")
    corpus = _beir_records(root / "corpus.jsonl", "passage")
    queries = _beir_records(root / "queries.jsonl", "query")
    first_id: dict[str, str] = {}  # queries with identical text are merged into the first id
    alias = {q: first_id.setdefault(text, q) for q, text in queries.items()}
    qrels: dict[str, list[str]] = {}
    for qid, did, score in _read_qrels(root / "qrels" / f"{split}.tsv"):
        if score > 0 and qid in queries and did in corpus and did not in qrels.get(alias[qid], []):
            qrels.setdefault(alias[qid], []).append(did)
    if not qrels:
        raise UsageError(f"{root}/qrels/{split}.tsv has no positive pair whose query and passage exist; check the split name")
    return RetrievalSet(corpus, {q: queries[q] for q in qrels}, qrels)


def load_squad(path: str | os.PathLike) -> RetrievalSet:
    """Load a SQuAD-v1-style JSON (KorQuAD too): question → the paragraph it was asked about.

    Paragraph ids are ``p<article>_<paragraph>``; both passages and questions are grouped by article
    title, which is what splits are made by and what the same-article guard uses. Every record is checked; an error
    names the file and the record (``data[3].paragraphs[1].qas[0]``).
    """
    path = Path(path)
    if not path.is_file():  # a FIFO or a device (/dev/zero) would block or read without end
        raise UsageError(f"{path} is not a regular file; pass a SQuAD/KorQuAD .json file")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a SQuAD-style JSON ({exc}); pass a SQuAD/KorQuAD file") from None
    articles = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(articles, list):
        raise UsageError(f"{path} is not a SQuAD-style JSON: it needs a \"data\" list of articles "
                         f"(found {type(articles).__name__ if articles is not None else 'none'}); pass a SQuAD/KorQuAD file")

    def need(obj, key: str, kind: type, where: str):
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "nothing" if value is None else type(value).__name__
            raise UsageError(f"{path}: {where} needs \"{key}\" as a {kind.__name__ if kind is not list else 'list'} "
                             f"(found {found}); fix that record")
        return value

    corpus, queries, qrels, groups, qgroups = {}, {}, {}, {}, {}
    for ai, article in enumerate(articles):
        if not isinstance(article, dict):
            raise UsageError(f"{path}: data[{ai}] is not an article object; fix that record")
        title = article.get("title") if isinstance(article.get("title"), str) else f"article{ai}"
        for pi, para in enumerate(need(article, "paragraphs", list, f"data[{ai}]")):
            where = f"data[{ai}].paragraphs[{pi}]"
            pid = f"p{ai}_{pi}"
            corpus[pid] = clip_text(need(para, "context", str, where).strip())
            groups[pid] = title
            for qi, qa in enumerate(need(para, "qas", list, where)):
                qwhere = f"{where}.qas[{qi}]"
                raw_id = qa.get("id") if isinstance(qa, dict) else None
                if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                    raise UsageError(f"{path}: {qwhere} needs an \"id\" (a string or number); fix that record")
                qid = str(raw_id)
                queries[qid] = clip_text(need(qa, "question", str, qwhere).strip())
                qrels.setdefault(qid, []).append(pid)
                qgroups[qid] = title
    if not qrels:
        raise UsageError(f"{path} holds no questions; pass a SQuAD/KorQuAD file with paragraphs and qas")
    return RetrievalSet(corpus, queries, qrels, groups, qgroups)


def _stable_id(prefix: str, text: str) -> str:
    import hashlib

    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def retrieval_set_from_rows(df: pd.DataFrame, corpus: dict[str, str] | None = None, bodies: dict[str, str] | None = None
                            ) -> tuple[RetrievalSet, dict[tuple[str, str], list[str]], dict]:
    """Labelled rows (``anchor, positive[, negative]``: pairs or triplets) as a retrieval set: one query per distinct
    anchor holding all its positives, and the given negatives per (query id, positive id), so they can be kept.

    Query ids come from the anchor's text (``q`` + a hash), so the same queries split the same way whether they come as
    pairs or triplets, in any order. With ``corpus`` ({id: text}) the passages are its ids, and a positive or negative
    the corpus lacks joins it (counted in the returned stats); without one the passages are the rows' own texts.
    ``bodies`` ({id: text without title}): a row's passage that is a titled corpus passage's body alone is that passage
    (counted as ``matched_by_body``), never a second copy of it.
    """
    given_corpus = corpus or {}
    by_text: dict[str, str] = {}
    for pid, text in given_corpus.items():  # a text under several ids is one passage (never a negative of itself)
        by_text.setdefault(text, pid)
    corpus = {pid: text for text, pid in by_text.items()}
    stats = {"corpus_passages": len(corpus), "passages_added_to_corpus": 0,
             "corpus_duplicate_texts": len(given_corpus) - len(corpus), "matched_by_body": 0}
    by_body = {}
    for pid, body in (bodies or {}).items():
        if pid in given_corpus:
            by_body.setdefault(body, by_text.get(given_corpus[pid], pid))

    def passage_id(text: str) -> str:
        if text not in by_text and text in by_body:
            stats["matched_by_body"] += 1
            return by_body[text]
        if text not in by_text:
            pid = _stable_id("d" if not stats["corpus_passages"] else "added-", text)
            by_text[text] = pid
            corpus[pid] = text
            stats["passages_added_to_corpus"] += bool(stats["corpus_passages"])
        return by_text[text]

    queries: dict[str, str] = {}
    qrels: dict[str, list[str]] = {}
    given: dict[tuple[str, str], list[str]] = {}
    has_negative = "negative" in df.columns
    for row in df.itertuples(index=False):
        q = _stable_id("q", row.anchor)
        queries[q] = row.anchor
        p = passage_id(row.positive)
        if p not in qrels.setdefault(q, []):
            qrels[q].append(p)
        if has_negative:
            given.setdefault((q, p), []).append(passage_id(row.negative))
    # a passage that is some row's positive for this query is never its negative
    for (q, p), negs in given.items():
        given[(q, p)] = [n for n in dict.fromkeys(negs) if n not in qrels[q]]
    stats.update(queries=len(queries), positives=sum(map(len, qrels.values())))
    return RetrievalSet(corpus, queries, qrels), given, stats


def retrieval_set_from_triplets(df: pd.DataFrame) -> tuple[RetrievalSet, dict[tuple[str, str], list[str]]]:
    """Triplets as a retrieval set (passages = every distinct positive and negative), with their given negatives."""
    rs, given, _ = retrieval_set_from_rows(df[list(COLUMNS)])
    return rs, given


def split_groups(keys: list[str], fractions: tuple[float, ...], seed: int) -> list[list[str]]:
    """Shuffle distinct ``keys`` with ``seed`` and cut them into len(fractions) parts.

    Every part with a non-zero fraction gets at least one key when there are enough keys.
    """
    keys = sorted(set(keys))
    random.Random(seed).shuffle(keys)
    n = len(keys)
    sizes = [int(round(f * n)) for f in fractions]
    sizes[0] = n - sum(sizes[1:])
    for i in range(1, len(sizes)):
        if fractions[i] > 0 and sizes[i] == 0 and sizes[0] > 1:
            sizes[i], sizes[0] = 1, sizes[0] - 1
    parts, start = [], 0
    for s in sizes:
        parts.append(keys[start:start + s])
        start += s
    return parts
