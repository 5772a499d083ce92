"""Labelled sources read as retrieval sets: BEIR folders (or, online, a BEIR dataset name) and SQuAD/KorQuAD
JSON; the JSONL records both use."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from crossdistill.core.errors import UsageError
from crossdistill.data.eval_sets import RetrievalSet
from crossdistill.data.versions import clip_text, warn

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


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


def read_qrels(path: Path) -> list[tuple[str, str, float]]:
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
    for qid, did, score in read_qrels(root / "qrels" / f"{split}.tsv"):
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


def read_corpus_texts(path: str | os.PathLike) -> list[str]:
    """The passage texts of a corpus file written by :func:`write_corpus`, in file order."""
    return list(_beir_records(Path(path), "passage").values())
