"""Data: triplet CSVs (``anchor,positive,negative``) and the sources they are prepared from.

A *retrieval set* is the common shape every source is turned into: a passage corpus, queries, and
for each query the ids of its relevant (positive) passages. ``prepare_data.py`` splits it by query
(or by article), mines negatives (:mod:`crossdistill.data.mining`) and writes triplet CSVs.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crossdistill.core.errors import UsageError
from crossdistill.core.files import file_sha256
from crossdistill.core.settings import check_version_name

COLUMNS = ("anchor", "positive", "negative")
# texts are cut to this many characters when read: far more than any max_len in tokens needs (a token is at
# least one character), and it keeps a pathological cell (a 50 MB pasted file) from costing gigabytes and
# minutes in the tokenizer, which tokenises the whole text before it truncates
MAX_TEXT_CHARS = 32_768
_BLANK = {"", "nan", "none", "null", "<na>"}


def clip_text(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS]


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
    from crossdistill.core.files import file_sha256

    folder = Path(data_root) / data_version
    return {name: file_sha256(folder / name) for name in ("train.csv", "val.csv", "test.csv", "corpus.jsonl")
            if (folder / name).is_file()}


# --------------------------------------------------------------------------- a prepared version's corpus
CORPUS_FILE = "corpus.jsonl"  # in a prepared version: the passages its val and test queries are ranked against
SCORES_FILE = "teacher_scores.jsonl"  # a prepared version's teacher scores (prepare_data.py, from a scored source)
PREPARE_CONFIG = "prepare_config.json"


@dataclass(frozen=True)
class DataVersion:
    """A prepared data version: the folder ``<root>/<name>`` that prepare_data.py wrote, and every file a run reads
    of it — its split CSVs, its corpus, its teacher scores, its prepare config (and the source it names), its
    fingerprint. The one place that knows the layout; every stage asks it."""

    root: Path
    name: str

    @classmethod
    def of(cls, cfg) -> "DataVersion":
        """The version a run's settings name (``--data_root``, ``--data_version``); no name is refused: there is no
        default version."""
        if not getattr(cfg, "data_version", None):
            raise UsageError("--data_version is required: the name of a data version prepared by prepare_data.py (a "
                             f"folder under --data_root {getattr(cfg, 'data_root', 'preprocessed')})")
        return cls(Path(cfg.data_root), check_version_name(cfg.data_version))

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def split_file(self, split: str) -> Path:
        """``<folder>/<split>.csv``, refused clearly when the version does not exist."""
        return data_file(self.name, split, self.root)

    def split(self, split: str, max_samples: int | None = None, seed: int = 0) -> pd.DataFrame:
        """The ``split`` CSV's triplets, checked (:func:`read_triplets`), a seeded subset of its queries when asked."""
        return subsample(read_triplets(self.split_file(split)), max_samples, seed)

    @property
    def corpus_file(self) -> Path | None:
        """The version's ``corpus.jsonl`` (its val and test queries' retrieval pool), when it has one."""
        f = self.folder / CORPUS_FILE
        return f if f.is_file() else None

    @property
    def scores_file(self) -> Path:
        """Where the version's own teacher scores are (a scored source's; it may not exist)."""
        return self.folder / SCORES_FILE

    def own_scores_file(self) -> Path | None:
        """The version's teacher scores when prepare_data.py wrote them for this version (its prepare_config.json
        records them, and their sha256 when it recorded one still matches), None when it has none. A
        ``teacher_scores.jsonl`` it did not write (a user's file put there, or one edited since) is refused, never
        taken silently as the run's teacher."""
        f = self.scores_file
        if not f.is_file():
            return None
        recorded = self.prepare_config.get("teacher_scores")
        if not isinstance(recorded, dict) or recorded.get("file") != SCORES_FILE:
            raise UsageError(f"{f} was not written by prepare_data.py for data version {self.name} (its {PREPARE_CONFIG} "
                             "records no teacher scores), so it is not taken as this version's teacher; to train from "
                             f"it pass --teacher_scores {f}, or move it out of the version folder")
        if recorded.get("sha256") and file_sha256(f) != recorded["sha256"]:
            raise UsageError(f"{f} was changed after prepare_data.py wrote it (its sha256 differs from the one in "
                             f"{PREPARE_CONFIG}), so it is not taken as this version's teacher; to train from the file as "
                             f"it is pass --teacher_scores {f}, or prepare the version again")
        return f

    @property
    def prepare_config(self) -> dict:
        """What prepare_data.py recorded (``{}`` for a folder without a readable one)."""
        try:
            value = json.loads((self.folder / PREPARE_CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def source(self) -> str | None:
        """The source the version was prepared from, as recorded."""
        value = self.prepare_config.get("source")
        return str(value) if value else None

    def fingerprint(self) -> dict[str, str]:
        return version_fingerprint(self.root, self.name)


def write_corpus(corpus: dict[str, str], path: str | os.PathLike) -> None:
    """One JSON line per passage, ``{"_id", "text"}`` (BEIR's layout, the title already joined to the text)."""
    with open(path, "w", encoding="utf-8") as f:
        for pid, text in corpus.items():
            f.write(json.dumps({"_id": pid, "text": text}, ensure_ascii=False) + "\n")


def warn(message: str) -> None:
    """A warning for the user: one line on stderr (the data is usable, but not as given)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


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
