"""Hostile input against the data stage: sources, tables and cells that used to slip through, BEIR/SQuAD records
checked one by one, prepared versions. Each test names its issue (#14, #26, #38)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import (
    SCIFACT,
    assert_usage_error,
    run_in_process,
    snapshot,
)
from crossdistill.core.errors import UsageError
from crossdistill.data import sources


def test_prepare_overwrite_with_a_bad_source_keeps_the_old_data(tmp_path):
    """Issue #14."""
    out = tmp_path / "prep" / "v1"
    out.mkdir(parents=True)
    (out / "prepare_config.json").write_text("{}")
    (out / "train.csv").write_text("anchor,positive,negative\nq,p,n\n")
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "no-such-source", "--data_version", "v1",
                          "--data_root", tmp_path / "prep", "--overwrite")
    assert_usage_error(proc, "does not exist")
    assert (out / "train.csv").read_text() == "anchor,positive,negative\nq,p,n\n"


# --------------------------------------------------------------------------- also found
def test_flags_and_cells_that_used_to_slip_through(tmp_path, scifact_version):
    """Issue #14."""
    from crossdistill.data.versions import MAX_TEXT_CHARS, read_triplets

    root, v = scifact_version
    for tau in ("inf", "1e-300", "nan"):
        proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tmp_path, "--output_dir", tmp_path / "o",
                              f"--tau={tau}")
        assert_usage_error(proc, "--tau must be")
    csv = tmp_path / "t.csv"
    csv.write_text("anchor,positive,negative\nq,NULL,n\n")
    with pytest.raises(UsageError, match="empty or NaN"):
        read_triplets(csv)
    csv.write_text("anchor,positive,negative\nq," + "x" * (5 * MAX_TEXT_CHARS) + ",n\n")
    assert len(read_triplets(csv)["positive"][0]) == MAX_TEXT_CHARS  # clipped before any tokenizer sees it


def test_prepare_never_replaces_a_model_and_a_version_is_a_name(tmp_path, tiny_teacher):
    """Issue #26: 3: a data version is a name under --output_root; a teacher folder is not prepared data."""
    models = tmp_path / "models"
    shutil.copytree(tiny_teacher, models / "teacher")
    before = snapshot(models / "teacher")
    assert_usage_error(run_in_process("prepare_data.py", "--source", SCIFACT, "--data_root", models, "--data_version",
                                      "teacher", "--overwrite"), "holds a teacher folder")
    assert snapshot(models / "teacher") == before
    for bad in ("../../../etc", "/tmp/x", "..", "a/b"):
        assert_usage_error(run_in_process("prepare_data.py", "--source", SCIFACT, "--data_root", models,
                                          "--data_version", bad), "must be a name")
    assert_usage_error(run_in_process("train_teacher_model.py", "--data_version", "../x", "--output_dir", tmp_path / "t"),
                       "must be a name")
    assert sorted(p.name for p in models.iterdir()) == ["teacher"]


# --------------------------------------------------------------------------- 15, 20: sources, record by record
def _beir(folder: Path, corpus: list, queries: list, qrels: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(c if isinstance(c, str) else json.dumps(c) for c in corpus) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(q if isinstance(q, str) else json.dumps(q) for q in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def _real_scifact(n: int):
    corpus = [json.loads(x) for x in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:n]]
    queries = [json.loads(x) for x in (SCIFACT / "queries.jsonl").read_text().splitlines()[:n]]
    return corpus, queries


def test_beir_duplicate_ids_and_headerless_qrels_are_warned_about(tmp_path, capsys):
    """Issue #26: 15: a repeated _id keeps its first text (counted), qrels without a header keep their first pair (said)."""
    from crossdistill.data.sources import load_beir

    corpus, queries = _real_scifact(4)
    dup = {**corpus[1], "text": "a different text"}
    qrels = "".join(f"{q['_id']}\t{c['_id']}\t1\n" for q, c in zip(queries, corpus))
    rs = load_beir(str(_beir(tmp_path / "b", corpus + [dup], queries, qrels)), "test")
    err = capsys.readouterr().err
    assert "1 line(s) repeat an earlier \"_id\"" in err and "no header line" in err
    assert rs.corpus[str(corpus[1]["_id"])].endswith(corpus[1]["text"].strip())  # the first text kept
    assert len(rs.qrels) == 4  # the first pair was not lost


@pytest.mark.parametrize("corrupt, fragment", [
    (lambda c, q: (c + [{"text": "no id"}], q), "line 5: the passage has no \"_id\""),
    (lambda c, q: (c + [{"_id": "x1"}], q), "has no \"text\" string (found null)"),
    (lambda c, q: (c + [{"_id": "x1", "text": None}], q), "found null"),
    (lambda c, q: (c + [{"_id": "x1", "text": 42}], q), "found int"),
    (lambda c, q: (c + ["[1, 2]"], q), "line 5 is a JSON list"),
    (lambda c, q: (c, q + [{"_id": "q9", "text": 7}]), "queries.jsonl line 5"),
])
def test_beir_records_are_checked_one_by_one(tmp_path, corrupt, fragment):
    """Issue #26: 20: a BEIR file's bad record is named by file and line (no KeyError/TypeError traceback)."""
    from crossdistill.data.sources import load_beir

    corpus, queries = _real_scifact(4)
    corpus, queries = corrupt(corpus, queries)
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{q['_id']}\t{c['_id']}\t1\n" for q, c in zip(queries[:4], corpus))
    with pytest.raises(UsageError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_beir(str(_beir(tmp_path / "b", corpus, queries, qrels)), "test")


@pytest.mark.parametrize("qrels, fragment", [("", "is empty"), ("query-id\tcorpus-id\tscore\n", "header but no pairs"),
                                             ("query-id\tcorpus-id\tscore\nq\td\thigh\n", "is not a number")])
def test_beir_qrels_files_that_hold_nothing_usable(tmp_path, qrels, fragment):
    """Issue #26."""
    from crossdistill.data.sources import load_beir

    corpus, queries = _real_scifact(2)
    with pytest.raises(UsageError, match=fragment):
        load_beir(str(_beir(tmp_path / "b", corpus, queries, qrels)), "test")


@pytest.mark.parametrize("doc, fragment", [
    ({"data": {"title": "x"}}, "needs a \"data\" list"),
    ({"data": [{"title": "t"}]}, "data\\[0\\] needs \"paragraphs\""),
    ({"data": [{"paragraphs": [{"context": None, "qas": []}]}]}, "paragraphs\\[0\\] needs \"context\" as a str"),
    ({"data": [{"paragraphs": [{"context": "서울은 수도", "qas": [{"question": "어디?"}]}]}]}, "qas\\[0\\] needs an \"id\""),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": 5}]}]}]}, "needs \"question\""),
    ([1, 2], "needs a \"data\" list"),
])
def test_squad_records_are_checked_one_by_one(tmp_path, doc, fragment):
    """Issue #26: 20: SQuAD/KorQuAD without paragraphs, a question without id, data as a dict, a null context ..."""
    from crossdistill.data.sources import load_squad

    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    with pytest.raises(UsageError, match=fragment):
        load_squad(path)


def test_a_tsv_cell_starting_with_a_quote_is_text(tmp_path):
    """Issue #38: pandas' CSV quoting applied to TSV swallowed the rows after such a cell."""
    from crossdistill.data.tables import read_table

    rows = ['"quoted" claims about cells\tA passage.', "second query\tSecond passage.", "third query\tThird passage."]
    path = tmp_path / "pairs.tsv"
    path.write_text("query\tpassage\n" + "\n".join(rows) + "\n")
    df = read_table(str(path), "tsv")
    assert len(df) == 3 and df["query"][0] == '"quoted" claims about cells'


def test_random_negatives_are_capped_at_the_pool():
    """Issue #38."""
    import random

    from crossdistill.data.mining import random_negatives

    got = random_negatives(50, {0, 1}, 1_000_000_000, random.Random(0))  # spun for hours before
    assert sorted(got) == list(range(2, 50))


def test_a_fifo_given_as_squad_json_is_refused_not_read(tmp_path):
    """Issue #38."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    proc = run_in_process("prepare_data.py", "--source", fifo, "--data_version", "x", "--data_root", tmp_path / "d")
    assert_usage_error(proc, "not a regular file")


def test_dropped_queries_with_kept_negatives_are_said(tmp_path):
    """Issue #38: --negatives keep with triplets whose negative equals the positive dropped those queries silently."""

    beir = sources.load_beir(str(SCIFACT), "train")
    lines = ["query,positive,negative"]
    for i, (q, rel) in enumerate(list(beir.qrels.items())[:40]):
        pos = beir.corpus[rel[0]].replace('"', "'")
        neg = pos if i % 4 == 0 else beir.corpus[list(beir.corpus)[i + 200]].replace('"', "'")
        lines.append(f'"{beir.queries[q]}","{pos}","{neg}"')
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "t.csv", "--data_version", "k", "--data_root",
                          tmp_path / "d", "--negatives", "keep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "every given negative equals a positive of its query" in proc.stdout
    config = json.loads((tmp_path / "d" / "k" / "prepare_config.json").read_text())
    lost = sum(s["queries_without_rows"] for s in config["splits"].values())
    assert lost == 10


def test_pairs_holding_the_body_of_a_titled_corpus_passage_match_it(tmp_path):
    """Issue #38: A corpus with a title column never matched pairs that hold the body text: every positive was added a second time
    and BM25 mined a query's own positive as its negative."""
    from crossdistill.data import versions as data

    beir = sources.load_beir(str(SCIFACT), "train")
    raw = {json.loads(x)["_id"]: json.loads(x) for x in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:3000]}
    pairs, used = [], set()
    for q, rel in beir.qrels.items():
        if rel[0] in raw and len(pairs) < 48:
            pairs.append({"query": beir.queries[q], "passage": raw[rel[0]]["text"]})  # the body, without its title
            used.add(rel[0])
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": v["title"], "text": v["text"]}) + "\n"
                                                   for k, v in raw.items()))
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "pairs.jsonl", "--corpus", tmp_path / "corpus.jsonl",
                          "--data_version", "titled", "--data_root", tmp_path / "d", "--random_negatives", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((tmp_path / "d" / "titled" / "prepare_config.json").read_text())
    assert config["matched_by_body"] == len(pairs) and config["passages_added_to_corpus"] == 0
    assert f"{len(pairs)} matched a titled passage by its body" in proc.stdout
    rows = [data.read_triplets(tmp_path / "d" / "titled" / f"{s}.csv") for s in ("train", "val", "test")]
    for df in rows:
        assert not any(p.endswith(n) or n.endswith(p) for p, n in zip(df["positive"], df["negative"]))


def test_qrels_say_what_they_drop_and_refuse_nan(tmp_path):
    """Issue #38."""
    from crossdistill.core.errors import UsageError
    from crossdistill.evaluate.report import _read_judgements

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td1\t1\nq1\td9\t1\nq1\td3\t0\n")
    got, dropped = _read_judgements(str(qrels), {"q1": "a"}, {"d1": "x", "d2": "y", "d3": "z"})
    assert got == {"q1": ["d1", "d2"]}
    assert dropped == {"pairs_with_unknown_query_id": 1, "pairs_with_unknown_passage_id": 1,
                       "pairs_judged_not_relevant": 1, "graded_pairs_binarised": 1}
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\tnan\n")
    with pytest.raises(UsageError, match="finite"):
        _read_judgements(str(qrels), {"q1": "a"}, {"d1": "x"})


@pytest.mark.slow
def test_a_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Issue #38: A full disk cannot be made for real in a test: the write that would fail raises what the kernel raises."""
    import errno

    from crossdistill.data import versions as data

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data, "write_corpus", full)
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "v", "--data_root", tmp_path / "d",
                          "--num_negatives", "1", "--random_negatives", "0")
    assert_usage_error(proc, "No space left on device", "free disk space")
    assert not [p for p in (tmp_path / "d").iterdir()]


def test_a_generated_id_never_takes_an_id_the_corpus_holds():
    """Issue #46 (1): a corpus whose own ids look like the ones the toolkit generates (a version's corpus.jsonl given
    back as --corpus) keeps every passage; an added passage takes the next free id."""
    import pandas as pd

    from crossdistill.data.eval_sets import _stable_id, retrieval_set_from_rows

    new = "a passage the corpus lacks"
    taken = _stable_id("added-", new)
    corpus = {taken: "the corpus's own passage under that id", "d1": "another passage"}
    rows = pd.DataFrame({"anchor": ["q one", "q two"], "positive": [new, "the corpus's own passage under that id"]})
    full, _, stats = retrieval_set_from_rows(rows, corpus)
    assert full.corpus[taken] == "the corpus's own passage under that id"  # not overwritten
    added = [pid for pid, text in full.corpus.items() if text == new]
    assert len(added) == 1 and added[0] != taken and added[0].startswith("added-")
    assert stats["passages_added_to_corpus"] == 1
    q_one, q_two = _stable_id("q", "q one"), _stable_id("q", "q two")
    assert full.qrels[q_one] == added and full.qrels[q_two] == [taken]


@pytest.mark.parametrize("header, rows, fragment", [
    ("query,Query,positive", ["a,b,c"], "column 'query' in two cases"),
    ("query,positive,positive", ["a,b,c"], "twice"),
])
def test_columns_that_resolve_to_more_than_one_thing_are_refused(tmp_path, header, rows, fragment):
    """Issue #46 (2): two columns that differ only by case, or share a name, are refused with both named."""
    (tmp_path / "pairs.csv").write_text("\n".join([header, *rows]) + "\n")
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "pairs.csv", "--data_version", "v", "--data_root",
                          tmp_path / "d")
    assert_usage_error(proc, fragment)
    assert not (tmp_path / "d" / "v").exists()


def test_one_column_mapped_to_two_roles_is_refused(tmp_path):
    """Issue #46 (2): --columns anchor=query,positive=query would make every positive the query itself."""
    (tmp_path / "pairs.csv").write_text("query,passage\nwhat is x,x is a letter\n")
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "pairs.csv", "--data_version", "v", "--data_root",
                          tmp_path / "d", "--columns", "anchor=query,positive=query")
    assert_usage_error(proc, "maps the column 'query' to anchor and positive")


@pytest.mark.parametrize("line, fragment", [('{"_id": null, "text": "t"}', "has no id"),
                                             ('{"_id": ["a", "b"], "text": "t"}', "holds a list"),
                                             ('{"_id": 1.5, "text": "t"}', "holds the number 1.5")])
def test_corpus_ids_that_are_not_ids_are_refused(tmp_path, line, fragment):
    """Issue #46 (3): a JSONL corpus id of null, a list or a fraction is refused, never read as "nan" or "['a', 'b']"."""
    from crossdistill.data.tables import read_texts

    (tmp_path / "corpus.jsonl").write_text('{"_id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(UsageError, match=fragment):
        read_texts(str(tmp_path / "corpus.jsonl"))


def test_numeric_ids_read_the_same_from_every_format(tmp_path):
    """Issue #46 (3): 7 in a CSV, 7.0 in a JSONL whose other row lacks... every whole number reads "7"."""
    from crossdistill.data.tables import read_texts

    (tmp_path / "c.csv").write_text("id,text\n7,seven\n8,eight\n")
    (tmp_path / "c.jsonl").write_text('{"_id": 7.0, "text": "seven"}\n{"_id": 8, "text": "eight"}\n')
    assert read_texts(str(tmp_path / "c.csv")) == read_texts(str(tmp_path / "c.jsonl")) == {"7": "seven", "8": "eight"}


def test_a_teacher_scores_file_the_toolkit_did_not_write_is_not_the_versions_teacher(tmp_path):
    """Issue #46 (8): a version's teacher_scores.jsonl is its default teacher only when prepare_data.py wrote it for
    that version (prepare_config.json records it, with its sha256); a user's file, or one edited since, is refused."""
    import json

    from crossdistill.core.errors import UsageError
    from crossdistill.core.files import file_sha256
    from crossdistill.data.versions import DataVersion

    version = DataVersion(tmp_path, "v")
    version.folder.mkdir()
    (version.folder / "prepare_config.json").write_text(json.dumps({"source": "x"}))
    assert version.own_scores_file() is None  # none there: none
    scores = version.folder / "teacher_scores.jsonl"
    scores.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [0.0]}) + "\n")
    with pytest.raises(UsageError, match="not written by prepare_data.py for data version v.*--teacher_scores"):
        version.own_scores_file()
    (version.folder / "prepare_config.json").write_text(json.dumps(
        {"source": "x", "teacher_scores": {"file": "teacher_scores.jsonl", "sha256": file_sha256(scores)}}))
    assert version.own_scores_file() == scores
    scores.write_text(scores.read_text() + scores.read_text())
    with pytest.raises(UsageError, match="was changed after prepare_data.py wrote it"):
        version.own_scores_file()
