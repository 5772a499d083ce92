"""Issue #36, bring your own teacher: any one-label cross-encoder folder is a teacher, --pooling keeps a trained head,
teacher scores go out (teacher_scores.py) and come back in (--teacher_scores, a scored source), several teachers are
averaged; everything else is refused with exit 2 and nothing written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import STUDENT_ARGS, assert_usage_error, run_in_process, same_weights
from crossdistill.data import sources


def _texts_and_lists(version, n=6, k=4):
    from crossdistill.data import versions as data
    from crossdistill.data.candidates import build_candidates

    root, v = version
    train = data.read_triplets(data.data_file(v, "train", root))
    lists, _ = build_candidates(train, k, "bm25", 42)
    return [c.query for c in lists[:n]], [c.passages for c in lists[:n]]


@pytest.fixture(scope="module")
def resaved(tiny_teacher, tmp_path_factory):
    """The toolkit's teacher re-saved by sentence-transformers' CrossEncoder.save, and as a plain transformers folder:
    none of the toolkit's files in either."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = tmp_path_factory.mktemp("resaved")
    CrossEncoder(str(tiny_teacher), device="cpu").save(str(base / "ce"))
    AutoModelForSequenceClassification.from_pretrained(tiny_teacher).save_pretrained(base / "hf")
    AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(base / "hf")
    for folder in (base / "ce", base / "hf"):
        assert not {"teacher_config.json", "done.json", "lora_config.json"} & {p.name for p in folder.iterdir()}
    return base


def test_crossencoder_and_transformers_folders_score_like_the_toolkit_teacher(tiny_teacher, resaved, scifact_version):
    from crossdistill.teachers.ensemble import open_teachers

    queries, lists = _texts_and_lists(scifact_version)
    ours = open_teachers(str(tiny_teacher))
    ce, hf = open_teachers(str(resaved / "ce")), open_teachers(str(resaved / "hf"))
    specs = [t.members[0].spec for t in (ours, ce, hf)]
    assert [s.kind for s in specs] == ["crossdistill", "sentence-transformers", "transformers"]
    assert specs[1].activation == "sigmoid" and specs[1].max_len == specs[2].max_len == 48  # as trained
    base, _ = ours.logits(queries, lists, batch_size=16)
    for other in (ce, hf):
        got, _ = other.logits(queries, lists, batch_size=16)
        assert all(np.array_equal(a, b) for a, b in zip(base, got))


def test_identity_activation_is_read_from_the_folder(resaved, tmp_path):
    from crossdistill.models.teacher_folder import inspect_teacher

    folder = tmp_path / "identity"
    shutil.copytree(resaved / "ce", folder)
    cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    cfg["activation_fn"] = "torch.nn.modules.linear.Identity"
    (folder / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    assert inspect_teacher(folder).activation == "identity"
    (folder / "config_sentence_transformers.json").unlink()  # v4's layout: the block in config.json
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "sentence_transformers": {
        "activation_fn": "torch.nn.modules.linear.Identity", "version": "4.1.0"}}))
    assert inspect_teacher(folder).activation == "identity"


@pytest.mark.slow
def test_student_distils_from_a_crossencoder_folder_exactly_as_from_the_toolkit_teacher(
        reference_student, resaved, tiny_minilm, scifact_version, score_cache_env, tmp_path):
    ref, _ = reference_student
    root, v = scifact_version
    out = tmp_path / "s"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", resaved / "ce", "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", out, *STUDENT_ARGS, env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sentence-transformers" in proc.stdout
    assert same_weights(ref, out)
    card = (out / "README.md").read_text()
    assert "sentence-transformers cross-encoder" in card


def _bad_folders(tmp_path, tiny_minilm, resaved):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    nli = tmp_path / "nli"
    AutoModelForSequenceClassification.from_pretrained(tiny_minilm, num_labels=3, id2label={
        0: "entailment", 1: "neutral", 2: "contradiction"}).save_pretrained(nli)
    AutoTokenizer.from_pretrained(tiny_minilm).save_pretrained(nli)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(resaved / "ce", no_weights)
    (no_weights / "model.safetensors").unlink()
    bare = tmp_path / "bare"  # an encoder saved without sentence-transformers' modules: no head, no pooling
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_minilm) / name, bare / name)
    return [(bare, ["encoder without a classification head", "not a cross-encoder"]),
            (nli, ["3 labels", "entailment", "one-label"]),
            (no_weights, ["no weights"])]


def test_what_is_neither_a_cross_encoder_nor_a_bi_encoder_is_refused(tmp_path, tiny_minilm, resaved, scifact_version):
    root, v = scifact_version
    for folder, fragments in _bad_folders(tmp_path, tiny_minilm, resaved):
        out = tmp_path / f"out_{folder.name}"
        proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", folder, "--student_name", tiny_minilm,
                              "--data_root", root, "--data_version", v, "--output_dir", out)
        assert_usage_error(proc, *fragments)
        assert not out.exists()


def test_pooling_auto_keeps_a_trained_head_and_pools_a_bare_encoder(resaved, tiny_minilm, scifact_version):
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.teacher import CrossEncoderTeacher, resolve_pooling

    ce = resolve_model(str(resaved / "ce"))
    assert resolve_pooling("auto", ce)[0] == "cls"
    assert resolve_pooling("auto", resolve_model(str(tiny_minilm)))[0] == "mean"
    assert resolve_pooling("mean", ce)[0] == "mean"  # an explicit choice is kept
    queries, lists = _texts_and_lists(scifact_version, n=3)
    pairs = [(q, p) for q, ps in zip(queries, lists) for p in ps]
    kept = CrossEncoderTeacher.from_base(ce, 48, "cls").score(pairs)  # the head it was trained with, not a new one
    np.testing.assert_allclose(kept, CrossEncoderTeacher.load(resaved / "ce").score(pairs), atol=1e-6)


def test_fine_tuning_a_reranker_says_which_pooling_it_chose(resaved, scifact_version, tmp_path):
    root, v = scifact_version
    proc = run_in_process("train_teacher_model.py", "--model_name", resaved / "ce", "--data_root", root, "--data_version", v,
                          "--output_dir", tmp_path / "t", "--epochs", "1", "--max_samples", "8", "--max_val_samples", "6",
                          "--max_len", "48")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pooling cls (auto: the base model has a trained one-label classification head" in proc.stdout
    saved = json.loads((tmp_path / "t" / "teacher_config.json").read_text())
    assert saved["pooling"] == "cls" and saved["head_lr"] == 5e-5  # a trained head at the encoder's rate


@pytest.mark.slow
def test_exported_scores_train_the_same_student_bit_for_bit(reference_student, tiny_teacher, tiny_minilm,
                                                            scifact_version, score_cache_env, tmp_path):
    ref, _ = reference_student
    root, v = scifact_version
    scores = tmp_path / "scores.jsonl"
    proc = run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--data_root", root, "--data_version", v,
                          "--output", scores, "--K", "4", "--max_samples", "54", env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(x) for x in scores.read_text().splitlines()]
    assert len(records) == 24 and all(len(r["pos"]) + len(r["neg"]) == 4 for r in records)
    assert all(len(r["pos_scores"]) == len(r["pos"]) and len(r["neg_scores"]) == len(r["neg"]) for r in records)
    out = tmp_path / "from_scores"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_scores", scores, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", out, *STUDENT_ARGS, env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert same_weights(ref, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher_scores"]["source"] == "scores file" and "skipped" in metrics["guard"]
    # an existing file is replaced only with --overwrite, and only when it is a scores file
    again = run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--data_root", root, "--data_version", v,
                           "--output", scores)
    assert_usage_error(again, "exists", "--overwrite")
    mine = tmp_path / "notes.jsonl"
    mine.write_text('{"my": "notes"}\n')
    again = run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--data_root", root, "--data_version", v,
                           "--output", mine, "--overwrite")
    assert_usage_error(again, "not a teacher-scores file")
    assert mine.read_text() == '{"my": "notes"}\n'


def test_two_identical_teachers_average_to_the_one(tiny_teacher, scifact_version, tmp_path):
    from crossdistill.teachers.ensemble import combine, open_teachers

    twin = tmp_path / "twin"
    shutil.copytree(tiny_teacher, twin)
    queries, lists = _texts_and_lists(scifact_version)
    one, _ = open_teachers(str(tiny_teacher)).logits(queries, lists, batch_size=16)
    both, stats = open_teachers(f"{tiny_teacher},{twin}", "2,1").logits(queries, lists, batch_size=16)
    assert len(stats["teachers"]) == 2
    for a, b in zip(one, both):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # two different teachers: each standardised per list, averaged with the weights, on their mean scale
    a, b = np.array([0.0, 1.0, 2.0]), np.array([10.0, 30.0, 20.0])
    (c,) = combine([[a], [b]], [1.0, 1.0])
    za, zb = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    np.testing.assert_allclose(c, (a.mean() + b.mean()) / 2 + (a.std() + b.std()) / 2 * (za + zb) / 2, rtol=1e-6)


def test_several_teachers_from_the_command_line(tiny_teacher):
    from crossdistill.core.errors import UsageError
    from crossdistill.distill.config import StudentConfig

    cfg = StudentConfig.parse(["--teacher_path", "a", "--teacher_path", "b", "--teacher_weights", "2,1", "--output_dir", "o"])
    assert cfg.teacher_path == "a,b"
    with pytest.raises(UsageError, match="2 weights for 3 teacher"):
        StudentConfig.parse(["--teacher_path", "a,b,c", "--teacher_weights", "2,1", "--output_dir", "o"])
    with pytest.raises(UsageError, match="both name the teacher"):
        StudentConfig.parse(["--teacher_path", "a", "--teacher_scores", "s.jsonl", "--output_dir", "o"])


BAD_SCORES = [
    ({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]}, "no 'neg_scores'"),
    ({"query": "q", "pos": ["p"], "neg": ["n", "m"], "pos_scores": [1.0], "neg_scores": [0.1]}, "1 score(s) for 2"),
    ({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [float("nan")], "neg_scores": [0.1]}, "finite"),
    ({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": ["high"], "neg_scores": [0.1]}, "not a number"),
]


@pytest.mark.parametrize("bad, fragment", BAD_SCORES)
def test_bad_scores_files_are_refused_naming_the_row(bad, fragment, tiny_minilm, scifact_version, tmp_path):
    root, v = scifact_version
    good = {"query": "a query", "pos": ["a passage"], "neg": ["another"], "pos_scores": [2.0], "neg_scores": [-1.0]}
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    out = tmp_path / "s"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_scores", scores, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", out)
    assert_usage_error(proc, "line 2", fragment)
    assert not out.exists()
    # the same rows as a source to prepare: refused before anything is written
    proc = run_in_process("prepare_data.py", "--source", scores, "--data_version", "bad", "--data_root", tmp_path / "data")
    assert_usage_error(proc, "row 2", fragment)
    assert not (tmp_path / "data" / "bad").exists()


@pytest.mark.slow
def test_a_scored_source_trains_a_student_with_no_teacher_model(tmp_path, tiny_minilm, score_cache_env):
    from conftest import SCIFACT
    from crossdistill.data import versions as data

    corpus = sources.load_beir(str(SCIFACT), "train")
    rows = []
    for i, (q, docs) in enumerate(list(corpus.qrels.items())[:60]):
        pos = [corpus.corpus[d] for d in docs]
        neg = [corpus.corpus[d] for d in list(corpus.corpus)[i * 3:i * 3 + 3] if d not in docs]
        rows.append({"query": corpus.queries[q], "pos": pos, "neg": neg, "pos_scores": [3.0 + 0.1 * j for j in range(len(pos))],
                     "neg_scores": [-1.0 - 0.5 * j for j in range(len(neg))]})
    src = tmp_path / "scored.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = tmp_path / "data"
    proc = run_in_process("prepare_data.py", "--source", src, "--data_version", "scored", "--data_root", root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = [json.loads(x) for x in (root / "scored" / "teacher_scores.jsonl").read_text().splitlines()]
    train_queries = set(data.read_triplets(root / "scored" / "train.csv")["anchor"])
    assert kept and {r["query"] for r in kept} == train_queries
    by_query = {r["query"]: r for r in rows}
    assert all(r["neg_scores"] == by_query[r["query"]]["neg_scores"] for r in kept)
    proc = run_in_process("train_distillation_pipeline.py", "--student_name", tiny_minilm, "--data_root", root,
                          "--data_version", "scored", "--output_dir", tmp_path / "s", "--epochs", "1", "--batch_size", "8",
                          "--K", "4", "--max_len", "48", "--val_pool", "csv", env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher scores from" in proc.stdout and "guard skipped" in proc.stdout
    dc = json.loads((tmp_path / "s" / "distillation_config.json").read_text())
    assert dc["teacher_path"] is None and dc["teacher_scores"].endswith("teacher_scores.jsonl")
    # without scores and without a teacher: one clear line
    proc = run_in_process("prepare_data.py", "--source", src, "--data_version", "plain", "--data_root", root,
                          "--columns", "anchor=query")
    assert proc.returncode == 0
    (root / "plain" / "teacher_scores.jsonl").unlink()
    proc = run_in_process("train_distillation_pipeline.py", "--student_name", tiny_minilm, "--data_root", root,
                          "--data_version", "plain", "--output_dir", tmp_path / "s2")
    assert_usage_error(proc, "no teacher", "--teacher_path", "--teacher_scores")
    assert not (tmp_path / "s2").exists()
    # #46 (8): a teacher_scores.jsonl put into a version is taken as its own teacher only when it is the file
    # prepare_data.py wrote for it (here: other records under that name)
    lines = (root / "scored" / "teacher_scores.jsonl").read_text().splitlines(keepends=True)
    (root / "plain" / "teacher_scores.jsonl").write_text("".join(lines[:5]))
    proc = run_in_process("train_distillation_pipeline.py", "--student_name", tiny_minilm, "--data_root", root,
                          "--data_version", "plain", "--output_dir", tmp_path / "s2")
    assert_usage_error(proc, "was changed after prepare_data.py wrote it", "--teacher_scores")
    assert not (tmp_path / "s2").exists()


def test_a_hub_id_that_cannot_be_fetched_is_one_clear_line(monkeypatch, tmp_path):
    from crossdistill.core.errors import UsageError
    from crossdistill.models.teacher_folder import locate_teacher

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    with pytest.raises(UsageError, match="run once online to cache it"):
        locate_teacher("cross-encoder/ms-marco-MiniLM-L6-v2")
    assert locate_teacher(str(tmp_path)) == str(tmp_path)  # a folder is itself


def test_score_columns_beside_triplets_are_kept_and_checked(tmp_path):
    from conftest import SCIFACT

    beir = sources.load_beir(str(SCIFACT), "train")
    docs = list(beir.corpus)
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["query", "positive", "negative", "positive_score", "negative_score"])
    for i, (q, rel) in enumerate(list(beir.qrels.items())[:60]):
        w.writerow([beir.queries[q], beir.corpus[rel[0]], beir.corpus[docs[i + 100]], 4.5, f"{-i / 10:.1f}"])
    src = tmp_path / "triplets.csv"
    src.write_text(buf.getvalue())
    proc = run_in_process("prepare_data.py", "--source", src, "--data_version", "t", "--data_root", tmp_path / "d")
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = [json.loads(x) for x in (tmp_path / "d" / "t" / "teacher_scores.jsonl").read_text().splitlines()]
    assert kept and all(r["pos_scores"] == [4.5] and len(r["neg_scores"]) == 1 for r in kept)
    # one score column of two, or a cell that is not a number: refused, nothing written
    import pandas as pd

    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df.drop(columns=["negative_score"]).to_csv(tmp_path / "half.csv", index=False)
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "half.csv", "--data_version", "h", "--data_root", tmp_path / "d")
    assert_usage_error(proc, "only one passage column")
    df.loc[2, "negative_score"] = "high"
    df.to_csv(tmp_path / "bad.csv", index=False)
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "bad.csv", "--data_version", "b", "--data_root", tmp_path / "d")
    assert_usage_error(proc, "row 3", "negative_score", "not a number")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["t"]


@pytest.mark.slow
def test_teacher_scores_scores_a_users_own_lists_which_then_train_a_student(tmp_path, tiny_teacher, tiny_minilm,
                                                                           scifact_version, score_cache_env):
    """Issue #47 (2): teacher_scores.py --input_file scores a FlagEmbedding JSONL the toolkit did not write (any
    teacher it accepts, no prepared version needed), as FlagEmbedding's add_reranker_score.py does; its 'prompt' and
    'type' keys are said to be unused; a query in two records is merged; the output trains a student."""
    import pandas as pd

    root, v = scifact_version
    train = pd.read_csv(f"{root}/{v}/train.csv")
    lines = []
    for i, (q, g) in enumerate(list(train.groupby("anchor", sort=False))[:30]):
        rec = {"query": q, "pos": list(dict.fromkeys(g["positive"])), "neg": list(dict.fromkeys(g["negative"]))[:3],
               "prompt": "Represent this sentence for searching relevant passages: ", "type": "normal"}
        lines.append(json.dumps(rec))
        if i == 0:  # the same query again, another negative
            lines.append(json.dumps({**rec, "neg": list(dict.fromkeys(g["negative"]))[3:4] or rec["neg"]}))
    mine = tmp_path / "mine.jsonl"
    mine.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.jsonl"
    proc = run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--input_file", mine, "--output", out,
                          env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'prompt'" in proc.stdout and "is not used" in proc.stdout and "merged, one record per query" in proc.stdout
    import re

    assert not re.search(r"^teacher [^\n]*:\s*$", proc.stdout, re.M)  # no empty "teacher <path>:" lines
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == 30 and all(len(r["pos_scores"]) == len(r["pos"]) and len(r["neg_scores"]) == len(r["neg"])
                                      for r in records)
    from crossdistill.models.teacher import CrossEncoderTeacher

    first = records[0]
    direct = CrossEncoderTeacher.load(tiny_teacher).score([(first["query"], p) for p in first["pos"] + first["neg"]],
                                                         activation="none")
    assert np.allclose(direct, first["pos_scores"] + first["neg_scores"], atol=1e-4)
    # the scores train a student (no teacher model at training time)
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_scores", out, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "s", *STUDENT_ARGS,
                          env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "s" / "done.json").is_file()
    # both or neither of --input_file and --data_version: one line each
    assert_usage_error(run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--input_file", mine,
                                      "--data_version", v, "--output", tmp_path / "x.jsonl"), "pass one")
    assert_usage_error(run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--output",
                                      tmp_path / "x.jsonl"), "--input_file")
