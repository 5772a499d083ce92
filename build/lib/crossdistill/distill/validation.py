"""The student's validation: the val pool (val queries ranked against the val CSV's passages or the whole corpus) and
MRR@10 / nDCG@10 / Recall@10 of the student over it (numpy, no JIT start-up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.data import sources
from crossdistill.data.eval_sets import TripletPool
from crossdistill.data.versions import DataVersion
from crossdistill.evaluate.metrics import matrix_ranking_metrics
from crossdistill.models.student import BiEncoderStudent


def evaluate_student(student: BiEncoderStudent, pool: TripletPool, batch_size: int, events=None,
                     precision: str = "fp32") -> tuple[dict, np.ndarray]:
    """Mean normalised positive/negative score and margin over val triplets; MRR@10, nDCG@10, Recall@10 over the pool.
    Returns (metrics, the (Q, P) cosines)."""
    on_progress = None if events is None else (lambda done, total: events.log("phase", phase="validation", done=done, total=total))
    cos = student.cosines(pool.queries, pool.passages, batch_size, on_progress, precision=precision)
    norm = (cos + 1) / 2
    t = np.array(pool.triplets)
    pos, neg = norm[t[:, 0], t[:, 1]], norm[t[:, 0], t[:, 2]]
    rank = matrix_ranking_metrics(cos, pool.relevant())
    metrics = {"val_mean_positive": float(pos.mean()), "val_mean_negative": float(neg.mean()),
               "val_margin": float((pos - neg).mean()), "val_mrr@10": rank["mrr@10"], "val_ndcg@10": rank["ndcg@10"],
               "val_recall@10": rank["recall@10"]}
    return metrics, cos


def val_pool_passages(version: DataVersion, val_pool: str) -> tuple[list[str] | None, dict]:
    """The passages the val queries are ranked against beyond the val CSV's own, and what they are:
    ``(passages or None, {"kind": "corpus" | "csv", "source": ...})``.

    ``corpus`` (and ``auto`` when the version has one): the prepared version's ``corpus.jsonl`` (written by
    prepare_data.py for a BEIR source or a ``--corpus``), or for a version prepared before that file existed the BEIR
    folder its ``prepare_config.json`` names — refused when that folder is gone, never silently replaced by the small
    CSV pool. ``csv`` (and ``auto`` without a corpus): None, the val CSV's passages only.

    A small pool of the val CSV's own passages is easy; ranking over the full corpus is what the student is
    tested on, so best-epoch choices and the guard read the same kind of number as the test."""
    if val_pool == "csv":
        return None, {"kind": "csv"}
    data_version = version.name
    own = version.corpus_file
    if own is not None:
        return sources.read_corpus_texts(own), {"kind": "corpus", "source": str(own.resolve())}
    prepared = version.prepare_config
    source = prepared.get("source")
    if prepared.get("source_type") == "beir" and source:
        if (Path(str(source)) / "corpus.jsonl").is_file():
            return sources.load_beir_corpus(str(source)), {"kind": "corpus", "source": str(Path(str(source)).resolve())}
        raise UsageError(f"data version {data_version} was prepared from the BEIR folder {source}, which is not found from "
                         f"{Path.cwd()}; --val_pool {val_pool} ranks the val queries against its corpus: run from the folder "
                         "you prepared in, re-run prepare_data.py (it now keeps the corpus with the data), or pass --val_pool csv")
    if val_pool == "corpus":
        raise UsageError(f"--val_pool corpus needs a corpus with the data: prepare {data_version} from a BEIR folder or with "
                         "prepare_data.py --corpus FILE; or use --val_pool csv")
    return None, {"kind": "csv"}


