"""``prepare_data.py``'s logic: load a source, split it by query (or article), mine negatives, write CSVs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pandas as pd

from . import data
from .errors import UsageError
from .fsutil import atomic_dir, check_output_dir, mark_owner, write_json
from .mining import MiningRule, make_miner, pick_negatives, random_negatives

SPLITS = ("train", "val", "test")


def detect_kind(source: str) -> str:
    p = Path(source)
    if p.is_dir():
        return "beir"
    if p.suffix.lower() == ".json":
        return "squad"
    if p.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if not p.exists() and "/" not in source:
        return "beir"  # a BEIR dataset name, fetched when online
    if not p.exists():
        raise UsageError(f"source {source} does not exist; check the path (a BEIR folder, a SQuAD/KorQuAD .json or a "
                         "triplet .csv)")
    raise UsageError(f"cannot tell what {source} is; pass a BEIR folder, a SQuAD/KorQuAD .json or a triplet .csv "
                     "(or set --source_type)")


def load_splits(source: str, kind: str, val_fraction: float, test_fraction: float, seed: int):
    """Return ({split: RetrievalSet}, given negatives or None, pool_per_split)."""
    given = None
    if kind == "beir":
        train = data.load_beir(source, "train")
        root = Path(source) if Path(source).is_dir() else Path(".cache/beir") / source
        test = data.load_beir(source, "test") if (root / "qrels" / "test.tsv").is_file() else None
        if test is not None:  # the same query text in train and test (SciFact has two) stays in test only
            test_texts = {test.queries[q] for q in test.qrels}
            train = train.subset([q for q in train.qrels if train.queries[q] not in test_texts])
        if (root / "qrels" / "dev.tsv").is_file():
            val = data.load_beir(source, "dev")
            if test is None:
                raise UsageError(f"{root} has no qrels/test.tsv; BEIR sources need a test split")
        else:
            fr = (1 - val_fraction, val_fraction) if test is not None else (1 - val_fraction - test_fraction, val_fraction, test_fraction)
            by_part = data.split_groups(list(train.qrels), fr, seed)
            val = train.subset(by_part[1])
            if test is None:
                test = train.subset(by_part[2])
            train = train.subset(by_part[0])
        return {"train": train, "val": val, "test": test}, None, False
    if kind == "squad":
        full = data.load_squad(source)
    elif kind == "csv":
        full, given = data.retrieval_set_from_triplets(data.read_triplets(source))
    else:
        raise UsageError(f"unknown --source_type {kind}; use beir, squad or csv")
    keys = [full.query_groups.get(q, q) for q in full.qrels]
    parts = data.split_groups(keys, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed)
    out = {}
    for name, part in zip(SPLITS, parts):
        chosen = set(part)
        out[name] = full.subset([q for q in full.qrels if full.query_groups.get(q, q) in chosen])
    return out, given, True


def _split_pool(rs: data.RetrievalSet, given=None) -> list[str]:
    """Passage ids this split's own rows may use: its positives, their groups' passages, and (csv) negatives."""
    ids = {p for ps in rs.qrels.values() for p in ps}
    if given:
        ids |= {n for (q, _), negs in given.items() if q in rs.qrels for n in negs}
    groups = {rs.groups[p] for p in ids if p in rs.groups}
    ids |= {p for p, g in rs.groups.items() if g in groups}
    return sorted(ids)


def mine_split(rs: data.RetrievalSet, pool: list[str], args, given=None, log=print) -> tuple[pd.DataFrame, dict]:
    """Triplet rows for one split; negatives come from ``pool`` (passage ids)."""
    rule = MiningRule(args.num_negatives, args.rank_start, args.rank_end, args.fn_margin)
    index = {pid: i for i, pid in enumerate(pool)}
    texts = [rs.corpus[p] for p in pool]
    qids = sorted(rs.qrels)
    stats = {"queries": len(qids), "positives": sum(len(rs.qrels[q]) for q in qids), "pairs_without_negative": 0}
    rng = random.Random(args.seed)
    rows = []
    exclude_groups = args.same_group_negatives == "exclude" and bool(rs.groups)
    if args.negatives == "keep":
        if given is None:
            raise UsageError("--negatives keep only applies to a triplet CSV source; use bm25, model or random")
        scores = None
    else:
        miner = make_miner(args.negatives, texts, args.seed, args.mining_model)
        t0 = time.time()
        scores = miner.scores([rs.queries[q] for q in qids])
        log(f"  mined {len(qids)} queries x {len(pool)} passages with {args.negatives} in {time.time() - t0:.1f}s")
    for qi, q in enumerate(qids):
        positives = [p for p in rs.qrels[q] if p in index]
        forbidden = {index[p] for p in positives}
        if exclude_groups:
            own = {rs.groups.get(p) for p in positives}
            forbidden |= {i for i, pid in enumerate(pool) if rs.groups.get(pid) in own}
        for p in positives:
            if scores is None:
                negs = [index[n] for n in given.get((q, p), []) if n in index]
            else:
                negs = pick_negatives(scores[qi], index[p], forbidden, rule)
            if args.random_negatives:
                negs += random_negatives(len(pool), forbidden, args.random_negatives, rng, exclude=set(negs))
            if not negs:
                stats["pairs_without_negative"] += 1
                continue
            rows += [(rs.queries[q], rs.corpus[p], texts[n]) for n in negs]
    df = pd.DataFrame(rows, columns=list(data.COLUMNS))
    stats["rows"] = len(df)
    return df, stats


def prepare(args, log=print) -> Path:
    """Run the whole preparation; returns the written folder."""
    kind = args.source_type or detect_kind(args.source)
    out_dir = Path(args.output_root) / args.data_version
    check_output_dir(out_dir, args.overwrite, "prepared_data")  # refuse early; nothing is deleted here
    splits, given, per_split_pool = load_splits(args.source, kind, args.val_fraction, args.test_fraction, args.seed)
    for name in SPLITS:
        if not splits[name].qrels:
            raise UsageError(f"the {name} split is empty ({len(splits['train'].qrels)} training queries in all); "
                             "use a larger source or change --val_fraction/--test_fraction")
    shared_pool = None if per_split_pool else sorted(splits["train"].corpus)
    source = Path(args.source).resolve() if Path(args.source).exists() else Path(".cache/beir", args.source).resolve()
    config = {"source": str(source if kind == "beir" else Path(args.source).resolve()), "source_given": str(args.source),
              "source_type": kind, "seed": args.seed,
              "settings": {k: v for k, v in vars(args).items() if k not in ("source", "overwrite")}, "splits": {}}
    t0 = time.time()
    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            rs = splits[name]
            pool = _split_pool(rs, given) if per_split_pool else shared_pool
            log(f"{name}: {len(rs.qrels)} queries, pool of {len(pool)} passages")
            df, stats = mine_split(rs, pool, args, given, log)
            if df.empty:
                raise UsageError(f"no {name} triplet could be made (no negatives found); widen --rank_end, lower "
                                 "--fn_margin or add --random_negatives")
            data.write_triplets(df, tmp / f"{name}.csv")
            config["splits"][name] = {**stats, "pool_passages": len(pool)}
        if shared_pool is not None:  # the corpus every split's queries are ranked against: kept with the data
            data.write_corpus(splits["train"].corpus, tmp / data.CORPUS_FILE)
            config["corpus_passages"] = len(splits["train"].corpus)
        config["seconds"] = round(time.time() - t0, 1)
        write_json(tmp / "prepare_config.json", config)
        mark_owner(tmp, "prepared_data")
    log(f"wrote {out_dir} in {time.time() - t0:.1f}s: "
        + ", ".join(f"{s} {config['splits'][s]['rows']} rows" for s in SPLITS))
    return out_dir
