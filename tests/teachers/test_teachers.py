"""The teachers package (issues #45 and #49): one rule for which kind a name is, a bi-encoder as a teacher (scale x
cosine, its embeddings computed once), the embedding cache that touches only its own files, the encoding precision."""

from pathlib import Path

import numpy as np
import pytest

from crossdistill.core.errors import UsageError


def _texts(scifact_version, n=6):
    from crossdistill.data import versions as data

    root, v = scifact_version
    df = data.read_triplets(Path(root) / v / "train.csv").head(n)
    return list(df["anchor"]), [[p, q] for p, q in zip(df["positive"], df["negative"])]


def test_which_kind_a_teacher_is(tiny_minilm, tiny_teacher):
    from crossdistill.teachers.ensemble import open_teachers
    from crossdistill.teachers.kinds import is_bi_encoder_folder

    assert is_bi_encoder_folder(tiny_minilm) and not is_bi_encoder_folder(tiny_teacher)
    both = open_teachers(f"{tiny_teacher},{tiny_minilm}", "1,2")
    assert [m.kind for m in both.members] == ["cross-encoder", "bi-encoder"]
    assert not both.dense and open_teachers(str(tiny_minilm)).dense
    assert "weight 2" in both.describe() and "scale 20 x cosine" in both.describe()
    assert both.paths == [str(tiny_teacher), str(tiny_minilm)]


def test_a_bi_encoder_teacher_scores_scale_times_cosine_and_encodes_each_text_once(tiny_minilm, scifact_version,
                                                                                    tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from crossdistill.teachers.ensemble import open_teachers

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    queries, lists = _texts(scifact_version)
    teachers = open_teachers(str(tiny_minilm), precision="fp32")
    dense = teachers.members[0]
    logits, stats = teachers.logits(queries, lists, batch_size=4)
    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    for q, ps, lo in zip(queries, lists, logits):
        cos = st.encode([q], normalize_embeddings=True) @ st.encode(ps, normalize_embeddings=True).T
        np.testing.assert_allclose(lo, 20.0 * cos[0], atol=1e-4)
    assert stats["distinct_pairs"] == len({(q, p) for q, ps in zip(queries, lists) for p in ps})
    passages = list(dict.fromkeys(p for ps in lists for p in ps))
    matrix = teachers.matrix(queries, passages)
    where = {p: i for i, p in enumerate(passages)}
    for i, (ps, lo) in enumerate(zip(lists, logits)):
        np.testing.assert_allclose(matrix[i, [where[p] for p in ps]], lo, atol=1e-5)
    # a second run reads every vector from the cache: the model is never loaded
    again = open_teachers(str(tiny_minilm), precision="fp32")
    monkeypatch.setattr(type(again.members[0]), "model", lambda self: pytest.fail("the model was loaded"))
    cached, _ = again.logits(queries, lists, batch_size=4)
    for a, b in zip(logits, cached):
        np.testing.assert_array_equal(a, b)
    # another precision is another fingerprint: bf16 vectors never mix with fp32 ones
    assert open_teachers(str(tiny_minilm), precision="bf16").fingerprint != dense.fingerprint


def test_in_batch_distillation_needs_bi_encoder_teachers(tiny_teacher):
    from crossdistill.teachers.ensemble import open_teachers

    with pytest.raises(UsageError, match="every teacher to be a bi-encoder"):
        open_teachers(str(tiny_teacher)).matrix(["q"], ["p"])


def test_embedding_cache_touches_only_its_own_files(tmp_path):
    import sqlite3

    from crossdistill.teachers.cache import EmbeddingCache, ScoreCache

    thesis = tmp_path / "thesis.tex"
    thesis.write_text("my thesis")
    with pytest.raises(UsageError, match="not a embedding cache this toolkit wrote|not an? embedding cache"):
        EmbeddingCache(thesis, "m")
    assert thesis.read_text() == "my thesis"
    path = tmp_path / "emb.sqlite"
    cache = EmbeddingCache(path, "model-a")
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.put(["x", "y"], vectors)
    found = cache.get(["y", "z", "x", "y"])
    assert sorted(found) == [0, 2, 3]
    np.testing.assert_array_equal(found[0], vectors[1])
    np.testing.assert_array_equal(found[2], vectors[0])
    cache.close()
    assert EmbeddingCache(path, "model-b").get(["x"]) == {}  # another model never reads model A's vectors
    with pytest.raises(UsageError, match="other tables"):  # a score cache is not an embedding cache, nor the reverse
        EmbeddingCache(_score_cache(tmp_path), "m")
    db = sqlite3.connect(tmp_path / "mine.db")
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(UsageError, match="other tables: people"):
        ScoreCache(tmp_path / "mine.db", "t")


def _score_cache(tmp_path):
    from crossdistill.teachers.cache import ScoreCache

    ScoreCache(tmp_path / "scores.sqlite", "t").close()
    return tmp_path / "scores.sqlite"


def test_encoding_precision_says_what_it_chose_and_why(monkeypatch):
    from crossdistill.core import training

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training.encoding_precision("auto") == ("bf16", "auto: this CPU multiplies bf16 natively (AVX-512 BF16 or AMX)")
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    precision, why = training.encoding_precision("auto")
    assert precision == "fp32" and "no native bf16" in why
    assert training.encoding_precision("bf16") == ("bf16", "as asked")
    with pytest.raises(ValueError):
        training.encoding_precision("fp8")


def test_a_bf16_encoding_stays_within_rounding_of_fp32(tiny_minilm, scifact_version):
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.student import encode_texts

    _, lists = _texts(scifact_version, 4)
    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    texts = [p for ps in lists for p in ps]
    full, half = encode_texts(st, texts, 4, "fp32"), encode_texts(st, texts, 4, "bf16")
    assert full.shape == half.shape and half.dtype == np.float32
    assert float(np.min(np.sum(full * half, axis=1))) > 0.999


def test_teacher_scores_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, tiny_teacher,
                                                                      scifact_version, score_cache_env):
    """Issue #46 (16): teacher_scores.py whose disk fills while it writes the scores: one line naming the file and the
    fix, exit 2, neither the output nor its temporary file left (an earlier output stays as it was)."""
    import errno

    from conftest import assert_usage_error, run_in_process
    from crossdistill.data import teacher_scores as module

    real_open = open

    class Full:  # a file on a disk with 2 kB left
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, text):
            self.n += len(text)
            if self.n > 2000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(module, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    root, v = scifact_version
    out = tmp_path / "scores.jsonl"
    earlier = '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [0.0]}\n'
    out.write_text(earlier)
    proc = run_in_process("teacher_scores.py", "--teacher_path", tiny_teacher, "--data_root", root, "--data_version", v,
                          "--output", out, "--overwrite", "--K", "4", "--max_samples", "20", env=score_cache_env)
    assert_usage_error(proc, f"could not write {out}", "No space left on device", "free disk space")
    assert out.read_text() == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


def test_long_phases_report_progress_to_the_current_run(tmp_path, monkeypatch, tiny_minilm, tiny_teacher,
                                                        scifact_version):
    """Issue #46 (12): the guard's teacher scoring ran minutes with no event, so a monitor with --stall_timeout 120
    restarted a healthy run. Teacher scoring and every encoding (guard, validation, dense teachers, evaluation) report
    `phase` events with done/total to the current run's log; with no run current (the evaluation) nothing is written."""
    from sentence_transformers import SentenceTransformer

    from crossdistill.core import events as ev
    from crossdistill.models.student import encode_texts
    from crossdistill.models.teacher import CrossEncoderTeacher

    monkeypatch.setattr(ev, "PROGRESS_EVERY", 0.0)
    queries, lists = _texts(scifact_version, 40)
    passages = [p for pair in lists for p in pair]
    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    encode_texts(st, passages, batch_size=8)  # no run current: no file anywhere
    log = ev.EventLog(tmp_path / "events.jsonl")
    log.make_current()
    try:
        encode_texts(st, passages, batch_size=8, chunk=32)
        CrossEncoderTeacher.load(tiny_teacher).score([(q, p) for q, pair in zip(queries, lists) for p in pair],
                                                     batch_size=16)
    finally:
        ev.clear_current()
    phases = [e for e in ev.read_events(tmp_path / "events.jsonl") if e["event"] == "phase"]
    enc = [(e["done"], e["total"]) for e in phases if e["phase"] == "encoding"]
    assert enc == [(32, 80), (64, 80), (80, 80)]
    scoring = [(e["done"], e["total"]) for e in phases if e["phase"] == "teacher_scoring"]
    total = len(set((q, p) for q, pair in zip(queries, lists) for p in pair))  # each distinct pair scored once
    assert scoring == [(min(i, total), total) for i in range(16, total + 16, 16)]
    ev.report_progress("encoding", 1, 2)  # cleared: nothing more
    assert len(ev.read_events(tmp_path / "events.jsonl")) == len(phases)


def test_teacher_weights_with_one_teacher_is_refused(tiny_teacher):
    """Issue #47 (3): --teacher_weights with one teacher changed nothing and said nothing."""
    from crossdistill.teachers.ensemble import open_teachers, parse_weights

    with pytest.raises(UsageError, match="with one teacher changes nothing.*--soft_weight"):
        open_teachers(str(tiny_teacher), "2")
    assert parse_weights(None, 1) == [1.0] and parse_weights("2,1", 2) == [2.0, 1.0]
