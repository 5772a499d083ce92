"""``prepare_data.py``'s logic: load a source, split it by query (or article), mine negatives, write CSVs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pandas as pd

from crossdistill.core.errors import UsageError
from crossdistill.core.files import file_sha256, write_json
from crossdistill.core.ownership import atomic_dir, check_output_dir, mark_owner, refuse_overlap
from crossdistill.data import eval_sets, sources
from crossdistill.data import versions as data
from crossdistill.data.config import PrepareConfig
from crossdistill.data.mining import MiningRule, make_miner, pick_negatives, random_negatives
from crossdistill.data.scored_rows import scored_rows
from crossdistill.data.tables import TABLE_KINDS, read_table, read_texts

SPLITS = ("train", "val", "test")


def detect_kind(source: str) -> str:
    """``beir`` (a folder with corpus.jsonl, or a BEIR dataset name online), ``squad`` (.json), or a table kind of
    :mod:`crossdistill.data.tables` (pairs or triplets: .csv, .tsv, .jsonl, .parquet, a ``datasets`` folder, a hub id)."""
    from crossdistill.data.tables import table_kind

    p = Path(source)
    if p.is_dir() and (p / "corpus.jsonl").is_file():
        return "beir"
    kind = table_kind(source)
    if kind is not None:
        return kind
    if p.is_dir():
        return "beir"  # a folder without corpus.jsonl: the BEIR loader says what it lacks
    if p.suffix.lower() == ".json":
        return "squad"
    if not p.exists() and "/" not in source:
        return "beir"  # a BEIR dataset name, fetched when online
    if not p.exists():
        raise UsageError(f"source {source} does not exist; check the path (a BEIR folder, a SQuAD/KorQuAD .json, or pairs/"
                         "triplets as .csv/.tsv/.jsonl/.parquet)")
    raise UsageError(f"cannot tell what {source} is; pass a BEIR folder, a SQuAD/KorQuAD .json, pairs or triplets as "
                     ".csv/.tsv/.jsonl/.parquet, or a datasets folder (or set --source_type)")


def load_splits(cfg: PrepareConfig, kind: str):
    """Return ({split: RetrievalSet}, given negatives or None, pool_per_split, stats)."""
    source, seed = cfg.source, cfg.seed
    if cfg.corpus and kind in ("beir", "squad"):
        raise UsageError(f"--corpus goes with your own pairs or triplets; a {kind.upper()} source carries its own passages")
    given, stats, scored = None, {}, None
    if kind == "beir":
        train = sources.load_beir(source, "train")
        root = Path(source) if Path(source).is_dir() else Path(".cache/beir") / source
        test = sources.load_beir(source, "test") if (root / "qrels" / "test.tsv").is_file() else None
        if test is not None:  # the same query text in train and test (SciFact has two) stays in test only
            test_texts = {test.queries[q] for q in test.qrels}
            train = train.subset([q for q in train.qrels if train.queries[q] not in test_texts])
        if (root / "qrels" / "dev.tsv").is_file():
            val = sources.load_beir(source, "dev")
            if test is None:
                raise UsageError(f"{root} has no qrels/test.tsv; BEIR sources need a test split")
        else:
            fr = ((1 - cfg.val_fraction, cfg.val_fraction) if test is not None
                  else (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction))
            by_part = data.split_groups(list(train.qrels), fr, seed)
            val = train.subset(by_part[1])
            if test is None:
                test = train.subset(by_part[2])
            train = train.subset(by_part[0])
        return {"train": train, "val": val, "test": test}, None, False, stats, None
    if kind == "squad":
        full = sources.load_squad(source)
    elif kind in TABLE_KINDS:
        rows, scored = scored_rows(read_table(source, kind), source, cfg.columns)
        bodies: dict = {}
        corpus = read_texts(cfg.corpus, "passage", bodies) if cfg.corpus else None
        full, given, stats = eval_sets.retrieval_set_from_rows(rows, corpus, bodies)
        if corpus:
            positives = sum(len(v) for v in full.qrels.values())
            print(f"corpus: {stats['corpus_passages']} passages; of the rows' passages, {stats['matched_by_body']} matched "
                  f"a titled passage by its body, {stats['passages_added_to_corpus']} were not in the corpus and were "
                  f"added ({positives} positives in all)", flush=True)
        if cfg.negatives == "keep" and "negative" not in rows.columns:
            raise UsageError(f"--negatives keep needs triplets (a negative column); {source} holds pairs: mine them with "
                             "--negatives bm25, model or random")
    else:
        raise UsageError(f"unknown --source_type {kind}; use beir, squad or one of {', '.join(TABLE_KINDS)}")
    out, stats = split_queries(full, scored, cfg, source, seed, stats)
    return out, given, not cfg.corpus, stats, scored


def split_queries(full, scored: dict | None, cfg: PrepareConfig, source: str, seed: int, stats: dict):
    """A table source's queries (its article groups kept together) split into train, val and test: ``({split:
    RetrievalSet}, stats)``. With scores, the scored queries that land in val/test are counted (they never teach), or,
    with ``--scored_queries train``, all kept for training."""
    keys = [full.query_groups.get(q, q) for q in full.qrels]
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    scored_keys = {full.query_groups.get(q, q) for q in full.qrels if scored and full.queries[q] in scored}
    if scored and cfg.scored_queries == "train":  # every scored query teaches: val/test come from the unscored ones
        rest = [k for k in keys if k not in scored_keys]
        if len(set(rest)) < 2:
            raise UsageError(f"--scored_queries train keeps all {len(scored_keys)} scored queries for training, but "
                             f"{source} has {len(set(rest))} unscored queries for val and test; add unscored labelled "
                             "queries, or leave --scored_queries at 'any'")
        parts = data.split_groups(rest, fractions, seed)
        parts[0] = [*parts[0], *sorted(scored_keys)]
    else:
        parts = data.split_groups(keys, fractions, seed)
    out = {}
    for name, part in zip(SPLITS, parts):
        chosen = set(part)
        out[name] = full.subset([q for q in full.qrels if full.query_groups.get(q, q) in chosen])
    if scored:
        held = {name: len(scored_keys & set(part)) for name, part in zip(SPLITS, parts)}
        print(f"scored queries: {held['train']} in train, {held['val']} in val and {held['test']} in test (these "
              f"{held['val'] + held['test']} never teach"
              + ("; --scored_queries train keeps all of them for training)" if held["val"] + held["test"] else ")"),
              flush=True)
        stats = {**stats, "scored_queries_by_split": held}
    return out, stats


def scores_records(rs: eval_sets.RetrievalSet, scored: dict) -> list[dict]:
    """The teacher's scores of one split's queries as FlagEmbedding-layout records (teacher_scores.jsonl)."""
    out = []
    for q in sorted(rs.qrels):
        entry = scored.get(rs.queries[q])
        if entry:
            out.append({"query": rs.queries[q], "pos": list(entry["pos"]), "neg": list(entry["neg"]),
                        "pos_scores": list(entry["pos"].values()), "neg_scores": list(entry["neg"].values())})
    return out


def _split_pool(rs: eval_sets.RetrievalSet, given=None) -> list[str]:
    """Passage ids this split's own rows may use: its positives, their groups' passages, and (csv) negatives."""
    ids = {p for ps in rs.qrels.values() for p in ps}
    if given:
        ids |= {n for (q, _), negs in given.items() if q in rs.qrels for n in negs}
    groups = {rs.groups[p] for p in ids if p in rs.groups}
    ids |= {p for p, g in rs.groups.items() if g in groups}
    return sorted(ids)


def mine_split(rs: eval_sets.RetrievalSet, pool: list[str], cfg: PrepareConfig, given=None, log=print) -> tuple[pd.DataFrame, dict]:
    """Triplet rows for one split; negatives come from ``pool`` (passage ids)."""
    rule = MiningRule(cfg.num_negatives, *cfg.rank_range, cfg.fn_margin)
    index = {pid: i for i, pid in enumerate(pool)}
    texts = [rs.corpus[p] for p in pool]
    qids = sorted(rs.qrels)
    stats = {"queries": len(qids), "positives": sum(len(rs.qrels[q]) for q in qids), "pairs_without_negative": 0}
    rng = random.Random(cfg.seed)
    rows, kept = [], set()
    exclude_groups = cfg.same_group_negatives == "exclude" and bool(rs.groups)
    if cfg.negatives == "keep":
        if given is None:
            raise UsageError("--negatives keep only applies to a triplet CSV source; use bm25, model or random")
        scores = None
    else:
        miner = make_miner(cfg.negatives, texts, cfg.seed, cfg.mining_model)
        t0 = time.time()
        scores = miner.scores([rs.queries[q] for q in qids])
        log(f"  mined {len(qids)} queries x {len(pool)} passages with {cfg.negatives} in {time.time() - t0:.1f}s")
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
            if cfg.random_negatives:
                negs += random_negatives(len(pool), forbidden, cfg.random_negatives, rng, exclude=set(negs))
            if not negs:
                stats["pairs_without_negative"] += 1
                continue
            kept.add(q)
            rows += [(rs.queries[q], rs.corpus[p], texts[n]) for n in negs]
    df = pd.DataFrame(rows, columns=list(data.COLUMNS))
    stats["rows"] = len(df)
    stats["queries_without_rows"] = len(qids) - len(kept)
    return df, stats


def prepare(cfg: PrepareConfig, log=print) -> Path:
    """Run the whole preparation; returns the written folder."""
    out_dir = data.DataVersion.of(cfg).folder
    kind = cfg.source_type or detect_kind(cfg.source)
    refuse_overlap(out_dir, "--data_version", {"--source": cfg.source, "--corpus": cfg.corpus})  # never an input replaced
    check_output_dir(out_dir, cfg.overwrite, "prepared_data")  # refuse early; nothing is deleted here
    splits, given, per_split_pool, source_stats, scored = load_splits(cfg, kind)
    for name in SPLITS:
        if not splits[name].qrels:
            raise UsageError(f"the {name} split is empty ({len(splits['train'].qrels)} training queries in all); "
                             "use a larger source or change --val_fraction/--test_fraction")
    shared_pool = None if per_split_pool else sorted(splits["train"].corpus)
    local = Path(cfg.source).exists()
    source = Path(cfg.source).resolve() if local else Path(".cache/beir", cfg.source).resolve() if kind == "beir" else None
    config = {"source": str(source) if source else cfg.source, "source_given": str(cfg.source),
              "source_type": kind, "seed": cfg.seed, **source_stats,
              "settings": {k: v for k, v in cfg.to_dict().items() if k not in ("source", "overwrite")}, "splits": {}}
    t0 = time.time()
    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            rs = splits[name]
            pool = _split_pool(rs, given) if per_split_pool else shared_pool
            log(f"{name}: {len(rs.qrels)} queries, pool of {len(pool)} passages")
            df, stats = mine_split(rs, pool, cfg, given, log)
            if stats["pairs_without_negative"]:
                log(f"  warning: {stats['pairs_without_negative']} (query, positive) pairs of {name} had no negative "
                    + ("(every given negative equals a positive of its query) " if cfg.negatives == "keep" else "")
                    + f"and were dropped; {stats['queries_without_rows']} queries lost every row")
            if df.empty:
                raise UsageError(f"no {name} triplet could be made (no negatives found); widen --rank_end, lower "
                                 "--fn_margin or add --random_negatives")
            data.write_triplets(df, tmp / f"{name}.csv")
            config["splits"][name] = {**stats, "pool_passages": len(pool)}
        if shared_pool is not None:  # the corpus every split's queries are ranked against: kept with the data
            data.write_corpus(splits["train"].corpus, tmp / data.CORPUS_FILE)
            config["corpus_written"] = len(splits["train"].corpus)
        if scored is not None:  # the teacher's judgement the source carried: the training queries' scores, kept
            from crossdistill.data.teacher_scores import SCORES_FILE, write_scores_file

            records = scores_records(splits["train"], scored)
            write_scores_file(records, tmp / SCORES_FILE)
            config["teacher_scores"] = {"file": SCORES_FILE, "sha256": file_sha256(tmp / SCORES_FILE),
                                        "train_queries": len(records),
                                        "pairs": sum(len(r["pos"]) + len(r["neg"]) for r in records)}
            log(f"teacher scores: {config['teacher_scores']['pairs']} scored pairs of {len(records)} training queries "
                f"-> {SCORES_FILE} (train_distillation_pipeline.py uses them when no --teacher_path is given)")
        config["seconds"] = round(time.time() - t0, 1)
        write_json(tmp / "prepare_config.json", config)
        mark_owner(tmp, "prepared_data")
    log(f"wrote {out_dir} in {time.time() - t0:.1f}s: "
        + ", ".join(f"{s} {config['splits'][s]['rows']} rows" for s in SPLITS))
    return out_dir
