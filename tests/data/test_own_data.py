"""Bring your own data (issue #27): pairs or triplets as CSV, TSV, JSONL, Parquet or a `datasets` folder, your column
names, a corpus to mine from and rank against; the evaluation over your corpus; the student exported to ONNX and int8.

Every input is real SciFact text: its train qrels turned into (query, passage) pairs, its corpus as the corpus.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SCIFACT, assert_usage_error, run_in_process


def scifact_pairs(n_queries: int = 60) -> tuple[pd.DataFrame, dict]:
    """(query, passage) pairs of the first ``n_queries`` SciFact train queries (a query may have several positives),
    and the SciFact corpus {id: title + text}."""
    from crossdistill.data.sources import load_beir

    rs = load_beir(str(SCIFACT), "train")
    flat = {d: " ".join(t.split()) for d, t in rs.corpus.items()}  # one line each (a .txt corpus holds one per line)
    qids = list(rs.qrels)[:n_queries]
    rows = [(rs.queries[q], flat[d]) for q in qids for d in rs.qrels[q]]
    return pd.DataFrame(rows, columns=["query", "passage"]), flat


def write(df: pd.DataFrame, path: Path, kind: str) -> Path:
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif kind == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif kind == "parquet":
        df.to_parquet(path, index=False)
    elif kind == "hf":
        from datasets import Dataset

        Dataset.from_pandas(df, preserve_index=False).save_to_disk(str(path))
    return path


def prepare(tmp_path, source, version, *flags):
    return run_in_process("prepare_data.py", "--source", source, "--data_version", version, "--data_root", tmp_path / "data",
                          "--num_negatives", "2", "--random_negatives", "0", *flags)


def rows(tmp_path, version, split="train") -> pd.DataFrame:
    return pd.read_csv(tmp_path / "data" / version / f"{split}.csv", dtype=str, keep_default_na=False)


@pytest.mark.parametrize("kind, suffix", [("csv", ".csv"), ("tsv", ".tsv"), ("jsonl", ".jsonl"), ("parquet", ".parquet"),
                                          ("hf", "")])
def test_pairs_in_every_format_give_the_same_data(tmp_path, kind, suffix):
    """The same pairs as CSV, TSV, JSONL, Parquet and a `datasets` folder: the same prepared triplets, byte for byte."""
    pairs, _ = scifact_pairs(40)
    src = write(pairs, tmp_path / f"pairs{suffix}", kind)
    proc = prepare(tmp_path, src, kind)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = tmp_path / "ref"
    ref = prepare(reference, write(pairs, tmp_path / "ref.csv", "csv"), "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    for split in ("train", "val", "test"):
        assert (tmp_path / "data" / kind / f"{split}.csv").read_bytes() == (reference / "data" / "ref" / f"{split}.csv").read_bytes()
    cfg = json.loads((tmp_path / "data" / kind / "prepare_config.json").read_text())
    assert cfg["source_type"] == kind and cfg["queries"] == 40


def test_column_names_recognised_or_mapped(tmp_path):
    pairs, _ = scifact_pairs(30)
    for name, frame, flags in (("question", pairs.rename(columns={"query": "question", "passage": "context"}), []),
                               ("mapped", pairs.rename(columns={"query": "claim", "passage": "abstract"}),
                                ["--columns", "anchor=claim,positive=abstract"])):
        proc = prepare(tmp_path, write(frame, tmp_path / f"{name}.jsonl", "jsonl"), name, *flags)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert set(rows(tmp_path, name)["anchor"]) <= set(pairs["query"])
    bad = write(pairs.rename(columns={"query": "claim", "passage": "abstract"}), tmp_path / "bad.csv", "csv")
    assert_usage_error(prepare(tmp_path, bad, "bad"), "no anchor column", "found: claim, abstract", "--columns")
    assert_usage_error(prepare(tmp_path, bad, "bad", "--columns", "anchor=claim,positive=body"),
                       "--columns names 'body'", "no such column")
    assert not (tmp_path / "data" / "bad").exists()


def test_pairs_and_triplets_split_the_same_queries_alike(tmp_path):
    """The split is by query text and seed: pairs, and triplets of the same queries in another order, put every query
    in the same split."""
    pairs, _ = scifact_pairs(50)
    assert prepare(tmp_path, write(pairs, tmp_path / "pairs.csv", "csv"), "pairs").returncode == 0
    triplets = pairs.assign(negative=list(pairs["passage"][1:]) + [pairs["passage"][0]]).iloc[::-1]
    triplets = triplets.rename(columns={"query": "anchor", "passage": "positive"})
    assert prepare(tmp_path, write(triplets, tmp_path / "triplets.csv", "csv"), "triplets").returncode == 0
    for split in ("train", "val", "test"):
        assert set(rows(tmp_path, "pairs", split)["anchor"]) == set(rows(tmp_path, "triplets", split)["anchor"]), split
    all_anchors = [set(rows(tmp_path, "pairs", s)["anchor"]) for s in ("train", "val", "test")]
    assert not (all_anchors[0] & all_anchors[1] or all_anchors[0] & all_anchors[2] or all_anchors[1] & all_anchors[2])


@pytest.mark.parametrize("corpus_kind", ["jsonl", "csv", "parquet", "txt"])
def test_a_corpus_to_mine_from_and_rank_against(tmp_path, corpus_kind):
    """--corpus: negatives come from it and are never a labelled positive of their query; a positive it lacks joins it
    (counted); the prepared version keeps it (corpus.jsonl) for the val pool and the evaluation."""
    pairs, corpus = scifact_pairs(60)
    ids = list(corpus)[:1500]
    positives = set(pairs["passage"])
    kept = {i: corpus[i] for i in ids}
    dropped = next(t for t in positives if t not in kept.values())  # a positive the user's corpus lacks
    table = pd.DataFrame({"_id": list(kept), "text": list(kept.values())})
    if corpus_kind == "txt":
        src = tmp_path / "corpus.txt"
        src.write_text("\n".join(table["text"]) + "\n")
    else:
        src = write(table, tmp_path / f"corpus.{corpus_kind}", corpus_kind)
    proc = prepare(tmp_path, write(pairs, tmp_path / "pairs.jsonl", "jsonl"), "withcorpus", "--corpus", src)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads((tmp_path / "data" / "withcorpus" / "prepare_config.json").read_text())
    missing = len({t for t in positives if t not in kept.values()})
    assert cfg["passages_added_to_corpus"] == missing > 0
    written = [json.loads(x)["text"] for x in (tmp_path / "data" / "withcorpus" / "corpus.jsonl").read_text().splitlines()]
    assert len(written) == cfg["corpus_written"] == cfg["corpus_passages"] + missing and dropped in written
    labelled = pairs.groupby("query")["passage"].apply(set).to_dict()
    for split in ("train", "val", "test"):
        df = rows(tmp_path, "withcorpus", split)
        assert len(df) > 0
        assert not any(n in labelled[a] for a, n in zip(df["anchor"], df["negative"]))  # never a positive of its query
        assert set(df["negative"]) <= set(written)


@pytest.mark.parametrize("problem, fragment", [
    ("binary", "is not a text file (binary data"), ("empty_text", "row 3, column 'passage' is an empty text"),
    ("empty_file", "is empty"), ("duplicate_id", "the id 'd1' is used twice with different texts"),
    ("corpus_no_text", "needs an id and a text column"), ("keep_pairs", "--negatives keep needs triplets"),
])
def test_bad_own_data_exits_2_and_writes_nothing(tmp_path, problem, fragment):
    pairs, corpus = scifact_pairs(20)
    src = write(pairs, tmp_path / "pairs.csv", "csv")
    flags = []
    if problem == "binary":
        src = tmp_path / "pairs.csv"
        src.write_bytes(b"query,passage\n\x00\x01\x02binary")
    elif problem == "empty_text":
        broken = pairs.copy()
        broken.loc[2, "passage"] = "   "
        src = write(broken, tmp_path / "pairs.csv", "csv")
    elif problem == "empty_file":
        src.write_text("")
    elif problem == "duplicate_id":
        (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "one"}) + "\n"
                                               + json.dumps({"_id": "d1", "text": "another"}) + "\n")
        flags = ["--corpus", tmp_path / "corpus.jsonl"]
    elif problem == "corpus_no_text":
        (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "body_text": "x"}) + "\n")
        flags = ["--corpus", tmp_path / "corpus.jsonl"]
    elif problem == "keep_pairs":
        flags = ["--negatives", "keep"]
    assert_usage_error(prepare(tmp_path, src, "v", *flags), fragment)
    assert not (tmp_path / "data" / "v").exists()


@pytest.mark.slow
def test_evaluation_over_your_corpus(tmp_path, tiny_minilm):
    """evaluate_final_model.py ranks the test queries over your corpus: the prepared version's own (--data_version),
    or --corpus/--queries/--qrels files; the same metrics either way when they hold the same data."""
    pairs, corpus = scifact_pairs(60)
    kept = dict(list(corpus.items())[:800])
    write(pd.DataFrame({"_id": list(kept), "text": list(kept.values())}), tmp_path / "corpus.jsonl", "jsonl")
    assert prepare(tmp_path, write(pairs, tmp_path / "pairs.jsonl", "jsonl"), "own", "--corpus",
                   tmp_path / "corpus.jsonl").returncode == 0
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--data_root", tmp_path / "data",
                          "--data_version", "own", "--output_dir", tmp_path / "eval", "--max_len", "48", "--bm25")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "eval" / "bi_encoder_evaluation_results.json").read_text())
    assert res["beir"]["dir"].endswith("own/corpus.jsonl") and res["beir"]["corpus_passages"] >= 800
    assert 0 < res["retrieval"]["student"]["corpus"]["ndcg@10"] <= 1 and "corpus" in res["retrieval"]["BM25"]
    # the same test queries and judgements as files of your own
    test = rows(tmp_path, "own", "test")
    written = {json.loads(x)["_id"]: json.loads(x)["text"]
               for x in (tmp_path / "data" / "own" / "corpus.jsonl").read_text().splitlines()}
    by_text = {t: i for i, t in written.items()}
    queries = {f"t{i}": a for i, a in enumerate(dict.fromkeys(test["anchor"]))}
    qid = {a: q for q, a in queries.items()}
    qrels = {(qid[a], by_text[p]) for a, p in zip(test["anchor"], test["positive"])}
    write(pd.DataFrame({"_id": list(queries), "text": list(queries.values())}), tmp_path / "queries.jsonl", "jsonl")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in sorted(qrels)))
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data",
                          tmp_path / "data" / "own" / "test.csv", "--output_dir", tmp_path / "eval2", "--max_len", "48",
                          "--corpus", tmp_path / "data" / "own" / "corpus.jsonl", "--queries", tmp_path / "queries.jsonl",
                          "--qrels", tmp_path / "qrels.tsv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res2 = json.loads((tmp_path / "eval2" / "bi_encoder_evaluation_results.json").read_text())
    assert res2["retrieval"]["student"]["corpus"]["ndcg@10"] == pytest.approx(res["retrieval"]["student"]["corpus"]["ndcg@10"],
                                                                               abs=1e-6)
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--data_version", "own",
                                      "--data_root", tmp_path / "data", "--output_dir", tmp_path / "e3", "--queries",
                                      tmp_path / "queries.jsonl"), "--queries and --qrels go together with --corpus")


@pytest.mark.slow
def test_onnx_and_int8_students_agree_with_torch(tmp_path, tiny_minilm, scifact_version):
    """export_student.py writes onnx/model.onnx and onnx/model_qint8_avx2.onnx into the folder (named in its card);
    their embeddings agree with torch's on 64 real passages (int8: cosine >= 0.99) and the evaluation's test-pool
    nDCG@10 is within 0.01 with --backend onnx-int8."""
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.onnx import OnnxEncoder

    root, v = scifact_version
    from crossdistill.core.ownership import mark_owner

    student = tmp_path / "student"
    shutil.copytree(tiny_minilm, student)
    (student / "README.md").write_text("# a student\n\n## My notes\n\nkept\n")
    mark_owner(student, "student")  # as train_distillation_pipeline.py publishes it
    proc = run_in_process("export_student.py", "--model_path", student)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (student / "onnx" / "model.onnx").is_file() and (student / "onnx" / "model_qint8_avx2.onnx").is_file()
    assert "onnx/model_qint8_avx2.onnx" in (student / "README.md").read_text()
    assert "## My notes\n\nkept" in (student / "README.md").read_text()  # the user's section stays
    assert {"onnx", "export.json"} <= set(json.loads((student / ".crossdistill.json").read_text())["files"])
    info = json.loads((student / "export.json").read_text())
    assert {k: info[k] for k in ("onnx", "onnx-int8")} == {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8_avx2.onnx"}
    assert set(info["sha256"]) == {"onnx/model.onnx", "onnx/model_qint8_avx2.onnx", "model.safetensors"}
    texts = [json.loads(x)["text"] for x in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:64]]
    reference = SentenceTransformer(str(student), device="cpu").encode(texts, normalize_embeddings=True)
    for fmt, floor in (("onnx", 0.9999), ("onnx-int8", 0.99)):
        emb = OnnxEncoder(student, fmt).encode(texts, batch_size=16)
        assert float((emb * reference).sum(1).min()) >= floor, fmt
    scores = {}
    for backend in ("torch", "onnx-int8"):
        out = tmp_path / f"eval-{backend}"
        proc = run_in_process("evaluate_final_model.py", "--model_path", student, "--test_data", root / v / "test.csv",
                              "--output_dir", out, "--max_len", "48", "--backend", backend)
        assert proc.returncode == 0, proc.stderr[-2000:]
        scores[backend] = json.loads((out / "bi_encoder_evaluation_results.json").read_text())["retrieval"]["student"]["pool"]
    assert abs(scores["onnx-int8"]["ndcg@10"] - scores["torch"]["ndcg@10"]) <= 0.01
    # a second export replaces only its own files; a model.onnx it did not write is never replaced
    assert run_in_process("export_student.py", "--model_path", student, "--formats", "onnx-int8").returncode == 0
    other = tmp_path / "other"
    shutil.copytree(tiny_minilm, other)
    # a folder this toolkit did not write (an installed model, a hub cache): never written into; a copy is
    assert_usage_error(run_in_process("export_student.py", "--model_path", other, "--formats", "onnx"),
                       "not a student folder this toolkit wrote", "--output_dir")
    assert not (other / "onnx").exists()
    proc = run_in_process("export_student.py", "--model_path", other, "--formats", "onnx", "--output_dir", tmp_path / "copy")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "copy" / "onnx" / "model.onnx").is_file() and not (other / "onnx").exists()
    mark_owner(other, "student")
    (other / "onnx").mkdir()
    (other / "onnx" / "model.onnx").write_bytes(b"someone else's")
    assert_usage_error(run_in_process("export_student.py", "--model_path", other, "--formats", "onnx"),
                       "was not written by this toolkit's export")
    assert (other / "onnx" / "model.onnx").read_bytes() == b"someone else's"
    assert_usage_error(run_in_process("export_student.py", "--model_path", student, "--formats", "tflite"), "onnx-int8")
    assert np.isfinite(reference).all()


@pytest.fixture(scope="module")
def st_mined(tmp_path_factory, tiny_minilm):
    """SciFact (query, passage) pairs mined by the installed sentence-transformers' mine_hard_negatives itself, in each
    of its output formats, with and without scores; written the way a user saves a datasets.Dataset (JSONL)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    pairs, flat = scifact_pairs(40)
    pairs = pairs.drop_duplicates("query").reset_index(drop=True)
    corpus = list(dict.fromkeys([*pairs["passage"], *list(flat.values())[:300]]))
    model = SentenceTransformer(str(tiny_minilm), device="cpu")
    folder = tmp_path_factory.mktemp("st_mined")
    out = {}
    for fmt in ("triplet", "n-tuple", "labeled-pair", "labeled-list"):
        for scores in (False, True):
            ds = mine_hard_negatives(Dataset.from_pandas(pairs), model, corpus=corpus, num_negatives=3, range_max=20,
                                     output_format=fmt, output_scores=scores, batch_size=64, verbose=False)
            path = folder / f"{fmt}{'_scores' if scores else ''}.jsonl"
            ds.to_json(str(path), lines=True)
            out[(fmt, scores)] = (path, ds.to_pandas())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt,scores", [("triplet", False), ("triplet", True), ("n-tuple", False), ("n-tuple", True),
                                        ("labeled-pair", False), ("labeled-list", False), ("labeled-list", True),
                                        ("labeled-pair", True)])
def test_sentence_transformers_mined_files_prepare_with_their_negatives_and_scores(tmp_path, st_mined, fmt, scores):
    """Issue #47 (1): mine_hard_negatives' output, each format with and without output_scores, is a source: its
    negatives are kept (--negatives keep: not mined again) and its scores become the version's teacher scores. Before,
    an n-tuple file with scores prepared with exit 0 and its negative_1..n and scores were dropped."""
    path, df = st_mined[(fmt, scores)]
    if (fmt, scores) == ("labeled-pair", True):  # the labels are dropped: refused with the ways out, nothing written
        proc = prepare(tmp_path, path, "m")
        assert_usage_error(proc, "without their labels", "output_scores=False", "positive_score")
        assert not (tmp_path / "data" / "m").exists()
        return
    proc = prepare(tmp_path, path, "m", "--negatives", "keep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    if (fmt, scores) != ("triplet", False):
        assert f"mine_hard_negatives output ({fmt}{'+scores' if scores else ''})" in proc.stdout
    # what the file says each query's negatives are (and their scores)
    q_col = "query"
    mined: dict = {}
    for r in df.to_dict("records"):
        if fmt == "n-tuple":
            mined.setdefault(r[q_col], set()).update(r[c] for c in df.columns if c.startswith("negative_"))
        elif fmt == "triplet":
            mined.setdefault(r[q_col], set()).add(r["negative"])
        elif fmt == "labeled-pair":
            if r["label"] == 0:
                mined.setdefault(r[q_col], set()).add(r["passage"])
        else:
            docs = list(r["passage"])
            labels = list(r["labels"]) if "labels" in r else [1] + [0] * (len(docs) - 1)
            mined.setdefault(r[q_col], set()).update(d for d, y in zip(docs, labels) if not y)
    kept = pd.concat([rows(tmp_path, "m", s) for s in ("train", "val", "test")])
    assert len(kept) > 0 and all(n in mined[q] for q, n in zip(kept["anchor"], kept["negative"]))
    scores_file = tmp_path / "data" / "m" / "teacher_scores.jsonl"
    assert scores_file.is_file() == scores
    if scores:
        records = [json.loads(x) for x in scores_file.read_text().splitlines()]
        assert records and all(r["neg"] and len(r["neg_scores"]) == len(r["neg"]) for r in records)
        file_scores = {}
        for r in df.to_dict("records"):
            docs = ([r["passage"], *[r[c] for c in df.columns if c.startswith("negative_")]] if fmt == "n-tuple" else
                    [r["passage"], r["negative"]] if fmt == "triplet" else list(r["passage"]))
            file_scores.update({(r[q_col], d): s for d, s in zip(docs, list(r["scores"]))})
        for rec in records:
            for d, s in zip(rec["neg"], rec["neg_scores"]):
                assert abs(file_scores[(rec["query"], d)] - s) < 1e-5


def test_scored_queries_held_out_are_counted_and_can_all_train(tmp_path):
    """Issue #47 (1): a scored source split like any other sends some scored queries to val/test, where they never
    teach: the log counts them, and --scored_queries train keeps every one for training (val/test from the unscored
    queries of the file: records without pos_scores)."""
    pairs, flat = scifact_pairs(60)
    docs = list(flat.values())
    recs = []
    for i, (q, g) in enumerate(pairs.groupby("query", sort=False)):
        rec = {"query": q, "pos": list(g["passage"]), "neg": docs[200 + 3 * i: 203 + 3 * i]}
        if i < 40:
            rec.update(pos_scores=[4.0] * len(rec["pos"]), neg_scores=[-1.0, -2.0, -3.0])
        recs.append(rec)
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    proc = prepare(tmp_path, src, "any", "--val_fraction", "0.2", "--test_fraction", "0.2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads((tmp_path / "data" / "any" / "prepare_config.json").read_text())
    held = cfg["scored_queries_by_split"]
    assert sum(held.values()) == 40 and held["val"] + held["test"] > 0
    assert f"{held['val'] + held['test']} never teach; --scored_queries train keeps all of them" in proc.stdout
    proc = prepare(tmp_path, src, "train", "--val_fraction", "0.2", "--test_fraction", "0.2", "--scored_queries", "train")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads((tmp_path / "data" / "train" / "prepare_config.json").read_text())
    assert cfg["scored_queries_by_split"] == {"train": 40, "val": 0, "test": 0}
    scored = {r["query"] for r in recs if "pos_scores" in r}
    for split in ("val", "test"):
        assert not set(rows(tmp_path, "train", split)["anchor"]) & scored
    kept = [json.loads(x) for x in (tmp_path / "data" / "train" / "teacher_scores.jsonl").read_text().splitlines()]
    assert {r["query"] for r in kept} == scored
