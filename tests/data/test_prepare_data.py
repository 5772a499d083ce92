"""prepare_data.py on every source: BEIR folder, SQuAD/KorQuAD JSON, triplet CSV."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import KORQUAD, SCIFACT, assert_usage_error, load_script, run_in_process, run_script
from crossdistill.data.mining import MiningRule, analyze, pick_negatives
from crossdistill.data.sources import load_beir, load_squad


def _read(root, version, split):
    return pd.read_csv(root / version / f"{split}.csv", dtype=str, keep_default_na=False)


def test_beir_splits_columns_and_no_positive_as_negative(scifact_version):
    root, v = scifact_version
    cfg = json.loads((root / v / "prepare_config.json").read_text())
    assert cfg["source_type"] == "beir" and cfg["seed"] == 42
    splits = {s: _read(root, v, s) for s in ("train", "val", "test")}
    for s, df in splits.items():
        assert list(df.columns) == ["anchor", "positive", "negative"]
        assert len(df) == cfg["splits"][s]["rows"] > 0
    # no query in two splits; the test split is exactly the test qrels' queries
    anchors = {s: set(df["anchor"]) for s, df in splits.items()}
    assert not anchors["train"] & anchors["val"] and not anchors["train"] & anchors["test"] and not anchors["val"] & anchors["test"]
    test = load_beir(str(SCIFACT), "test")
    assert anchors["test"] == {test.queries[q] for q in test.qrels}
    # 809 train queries = 805 distinct texts: 2 texts repeat inside train, 2 also appear in test (kept there only)
    assert len(anchors["train"]) + len(anchors["val"]) == 805
    # a negative is never a labelled positive of its query (checked against the qrels of both splits)
    train = load_beir(str(SCIFACT), "train")
    positives = {}
    for rs in (train, test):
        for q, docs in rs.qrels.items():
            positives.setdefault(rs.queries[q], set()).update(rs.corpus[d] for d in docs)
    for df in splits.values():
        bad = [r for r in df.itertuples() if r.negative in positives[r.anchor]]
        assert not bad
    # 2 BM25 negatives per (query, positive)
    assert (splits["train"].groupby(["anchor", "positive"]).size() == 2).all()


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_split(tmp_path, scifact_version):
    root, v = scifact_version
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "again", "--data_root", tmp_path,
                          "--num_negatives", "2", "--random_negatives", "0")
    assert proc.returncode == 0, proc.stderr
    for s in ("train", "val", "test"):
        assert (tmp_path / "again" / f"{s}.csv").read_bytes() == (root / v / f"{s}.csv").read_bytes()
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "seed7", "--data_root", tmp_path,
                          "--num_negatives", "2", "--random_negatives", "1", "--seed", "7")
    assert proc.returncode == 0
    assert set(_read(tmp_path, "seed7", "val")["anchor"]) != set(_read(root, v, "val")["anchor"])
    # 2 BM25 negatives then 1 random one per (query, positive): the first two come from BM25's top 100 in rank
    # order, the random one is mostly far below it
    from crossdistill.data.mining import BM25Miner
    train = load_beir(str(SCIFACT), "train")
    texts = list(train.corpus.values())
    mixed = _read(tmp_path, "seed7", "train")
    assert (mixed.groupby(["anchor", "positive"], sort=False).size() == 3).all()
    sample = mixed.groupby(["anchor", "positive"], sort=False)["negative"].apply(list).head(20)
    scores = BM25Miner(texts).scores([a for a, _ in sample.index])
    far = 0
    for negs, row in zip(sample.values, scores):
        rank = {texts[i]: r for r, i in enumerate(np.argsort(-row, kind="stable"))}
        assert rank[negs[0]] < rank[negs[1]] < 100
        far += rank[negs[2]] >= 100
    assert far >= 15


@pytest.mark.slow
def test_korquad_split_by_article_and_same_article_guard(tmp_path):
    proc = run_in_process("prepare_data.py", "--source", KORQUAD, "--data_version", "ko", "--data_root", tmp_path,
                          "--num_negatives", "2")
    assert proc.returncode == 0, proc.stderr
    rs = load_squad(KORQUAD)
    article_of = {rs.corpus[p]: rs.groups[p] for p in rs.corpus}
    question_article = {rs.queries[q]: rs.query_groups[q] for q in rs.queries}
    arts, paras = {}, {}
    for s in ("train", "val", "test"):
        df = _read(tmp_path, "ko", s)
        arts[s] = {question_article[a] for a in df["anchor"]}
        paras[s] = set(df["positive"]) | set(df["negative"])
        # the guard: no negative from the question's own article; Hangul mined with character bigrams
        assert all(article_of[n] != question_article[a] for a, n in zip(df["anchor"], df["negative"]))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not arts[a] & arts[b]
        assert not paras[a] & paras[b]
    assert sum(len(x) for x in arts.values()) == 140


def test_csv_source_resplit_keep_and_remine(tmp_path, scifact_version):
    root, v = scifact_version
    src = tmp_path / "mine.csv"
    _read(root, v, "train").head(300).to_csv(src, index=False)
    proc = run_in_process("prepare_data.py", "--source", src, "--data_version", "keep", "--data_root", tmp_path,
                          "--negatives", "keep", "--val_fraction", "0.2", "--test_fraction", "0.2")
    assert proc.returncode == 0, proc.stderr
    kept = pd.concat([_read(tmp_path, "keep", s) for s in ("train", "val", "test")])
    orig = _read(root, v, "train").head(300)
    assert set(map(tuple, kept.values)) == set(map(tuple, orig.values))
    proc = run_in_process("prepare_data.py", "--source", src, "--data_version", "remined", "--data_root", tmp_path,
                          "--negatives", "random", "--num_negatives", "1")
    assert proc.returncode == 0, proc.stderr
    df = _read(tmp_path, "remined", "train")
    assert (df.groupby(["anchor", "positive"]).size() == 1).all()


@pytest.mark.slow
def test_model_miner(tmp_path, scifact_version, tiny_minilm):
    root, v = scifact_version
    src = tmp_path / "small.csv"
    _read(root, v, "train").head(120).to_csv(src, index=False)
    outs = []
    for name in ("m1", "m2"):
        proc = run_in_process("prepare_data.py", "--source", src, "--data_version", name, "--data_root", tmp_path,
                              "--negatives", "model", "--mining_model", tiny_minilm, "--num_negatives", "2")
        assert proc.returncode == 0, proc.stderr
        outs.append((tmp_path / name / "train.csv").read_bytes())
    assert outs[0] == outs[1]
    df = _read(tmp_path, "m1", "train")
    assert (df["negative"] != df["positive"]).all()


def test_pick_negatives_window_margin_and_forbidden():
    scores = np.array([5.0, 9.0, 4.9, 8.0, 1.0, 4.0, 4.0], dtype=np.float32)
    # positive is index 0 (score 5); index 1 is another known positive
    rule = MiningRule(num_negatives=3, rank_start=0, rank_end=10)
    assert pick_negatives(scores, 0, {0, 1}, rule) == [3, 2, 5]
    # guard: skip anything >= (1 - 0.1) * 5 = 4.5 -> 3 (8.0) and 2 (4.9) go; ties 5/6 in index order
    assert pick_negatives(scores, 0, {0, 1}, MiningRule(3, 0, 10, fn_margin=0.1)) == [5, 6, 4]
    # window: ranks 3.. only (order 1,3,0,2,5,6,4)
    assert pick_negatives(scores, 0, {0, 1}, MiningRule(2, 3, 10)) == [2, 5]


def test_analyzer_korean_bigrams_english_stopwords():
    assert analyze("The cells of the Brain") == ["cells", "brain"]
    assert analyze("임종석이 수배") == ["임종", "종석", "석이", "수배"]


def test_beir_name_offline_fails_clearly(tmp_path):
    proc = run_script("prepare_data.py", "--source", "nfcorpus", "--data_version", "x", "--data_root", tmp_path,
                      cwd=tmp_path, env={"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert_usage_error(proc, "nfcorpus", "offline")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--num_negatives", "0"], "--num_negatives must be >= 1"),
    (["--rank_window", "10:5"], "--rank_window"),
    (["--val_fraction", "0.6", "--test_fraction", "0.5"], "must be < 1"),
])
def test_bad_flags(tmp_path, flags, fragment):
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "x", "--data_root", tmp_path, *flags)
    assert_usage_error(proc, fragment)
    assert not (tmp_path / "x").exists()


def test_existing_version_refused_without_overwrite(scifact_version):
    root, v = scifact_version
    before = (root / v / "train.csv").read_bytes()
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", v, "--data_root", root)
    assert_usage_error(proc, "--overwrite")
    assert (root / v / "train.csv").read_bytes() == before


def test_missing_source_and_broken_beir(tmp_path):
    assert_usage_error(run_in_process("prepare_data.py", "--source", tmp_path / "nope" / "x.csv", "--data_version", "x",
                                      "--data_root", tmp_path), "does not exist")
    broken = tmp_path / "beir"
    broken.mkdir()
    (broken / "corpus.jsonl").write_text('{"_id": "1", "title": "", "text": "a"}\n')
    assert_usage_error(run_in_process("prepare_data.py", "--source", broken, "--data_version", "x", "--data_root",
                                      tmp_path), "queries.jsonl")
    assert not (tmp_path / "x").exists()


def test_default_negatives_mix_hard_and_easy_but_keep_and_random_stay_as_asked():
    module = load_script("prepare_data.py")
    base = ["--source", "x", "--data_version", "v"]
    assert (module.parse_args(base).num_negatives, module.parse_args(base).random_negatives) == (4, 3)
    assert module.parse_args(base + ["--negatives", "model"]).random_negatives == 3
    assert module.parse_args(base + ["--negatives", "keep"]).random_negatives == 0
    assert module.parse_args(base + ["--negatives", "random"]).random_negatives == 0
    assert module.parse_args(base + ["--random_negatives", "1"]).random_negatives == 1


def test_triplet_pool_ids_positives_and_extra_passages():
    """The one structure behind the val pool and the test pool: distinct texts in first-seen order, ``q{i}``/``d{j}``
    ids, every positive of a query (a query may have several rows), extra passages appended once."""
    from crossdistill.data.eval_sets import TripletPool

    df = pd.DataFrame({"anchor": ["qa", "qa", "qb"], "positive": ["pa", "pa2", "pb"], "negative": ["pb", "n1", "pa"]})
    pool = TripletPool.from_df(df, extra_passages=["n1", "x"])
    assert pool.queries == ["qa", "qb"]
    assert pool.passages == ["pa", "pa2", "pb", "n1", "x"]
    assert pool.qrels == {"q0": {"d0": 1, "d1": 1}, "q1": {"d2": 1}}
    assert pool.triplets == [(0, 0, 2), (0, 1, 3), (1, 2, 0)]
    assert pool.relevant() == [{0, 1}, {2}]
    assert pool.query_ids() == ["q0", "q1"] and pool.passage_ids()[-1] == "d4"


def test_subsample_takes_whole_queries(scifact_version):
    """--max_samples / --max_val_samples keep every row of each chosen query (a query's other positives never become
    non-relevant passages or mined negatives), at most N rows, the same subset for the same seed."""
    from crossdistill.data.versions import read_triplets, subsample

    root, v = scifact_version
    df = read_triplets(root / v / "train.csv")
    rows_of = df["anchor"].value_counts()
    for n in (1, 25, 300):
        sub = subsample(df, n, 7)
        assert 0 < len(sub) <= max(n, int(rows_of.max()))
        kept = sub["anchor"].value_counts()
        assert all(kept[a] == rows_of[a] for a in kept.index)  # whole queries only
        if n >= 25:
            assert len(sub) > n - int(rows_of.max())  # filled up to about n
        assert subsample(df, n, 7).equals(sub)  # seeded
    assert set(subsample(df, 300, 7)["anchor"]) != set(subsample(df, 300, 8)["anchor"])
    assert subsample(df, len(df), 7) is df and subsample(df, None, 7) is df
