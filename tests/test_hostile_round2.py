"""Hostile input, round two (issue #26): ownership by kind, inputs validated before anything is moved, the monitor's
trust in its own files, silent wrongs and tracebacks turned into one ``error:`` line.

Each test names the issue's item(s). Most run a script's ``main`` in this process and refuse before any training; the
few that need a model use the 2-layer MiniLM.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import SCIFACT, assert_usage_error, run_in_process, run_script
from crossdistill.core.errors import UsageError


def user_folder(path: Path) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    (path / "figs").mkdir(exist_ok=True)
    files = {"thesis.tex": "my thesis", "figs/plot.png": "PNG", "report.md": "# my own report"}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def untouched(path: Path, files: dict) -> bool:
    return all((path / n).is_file() and (path / n).read_text() == t for n, t in files.items())


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_student(tmp_path, reference_student):
    """A copy of the reference student (a finished run: done.json, events.jsonl, weights) to overwrite."""
    ref, _ = reference_student
    out = tmp_path / "student"
    shutil.copytree(ref, out)
    return out


# --------------------------------------------------------------------------- 1-4: a folder is ours only for its kind
def test_evaluation_overwrite_never_takes_a_users_folder_or_another_kind(tmp_path, tiny_minilm, tiny_teacher,
                                                                        scifact_version):
    """1: a report.md beside a user's thesis is not an evaluation folder; 2: the evaluated model and a teacher are
    never an evaluation's output."""
    root, v = scifact_version
    test_csv = root / v / "test.csv"
    mine = tmp_path / "results"
    files = user_folder(mine)
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", test_csv, "--output_dir",
                          mine, "--overwrite")
    assert_usage_error(proc, "did not write")
    assert untouched(mine, files)
    model = tmp_path / "model"
    shutil.copytree(tiny_minilm, model)
    before = snapshot(model)
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", model, "--test_data", test_csv,
                                      "--output_dir", model, "--overwrite"), "--output_dir", "is --model_path")
    assert snapshot(model) == before
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    before = snapshot(teacher)
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", test_csv,
                                      "--output_dir", teacher, "--overwrite"), "holds a teacher folder")
    assert snapshot(teacher) == before


def test_prepare_never_replaces_a_model_and_a_version_is_a_name(tmp_path, tiny_teacher):
    """3: a data version is a name under --output_root; a teacher folder is not prepared data."""
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


def test_a_student_is_never_published_over_its_teacher(tmp_path, tiny_teacher, tiny_minilm, scifact_version,
                                                        score_cache_env):
    """4."""
    root, v = scifact_version
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    before = snapshot(teacher)
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--output_dir", teacher,
                          "--student_name", tiny_minilm, "--data_root", root, "--data_version", v, "--overwrite",
                          env=score_cache_env)
    assert_usage_error(proc, "holds a teacher folder", "not a student one")
    assert snapshot(teacher) == before
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--output_dir", teacher / "student",
                          "--student_name", tiny_minilm, "--data_root", root, "--data_version", v, env=score_cache_env)
    assert_usage_error(proc, "--output_dir", "lies inside --teacher_path")
    assert snapshot(teacher) == before


# --------------------------------------------------------------------------- 5, 6: a failed --overwrite changes nothing
@pytest.mark.parametrize("problem", ["student_name", "csv_cell", "max_len"])
def test_overwrite_with_a_bad_input_leaves_the_finished_run_whole(tmp_path, finished_student, tiny_teacher, tiny_minilm,
                                                                  scifact_version, score_cache_env, problem):
    """5: every input is validated before the folder is claimed: done.json and events.jsonl stay as they were."""
    root, v = scifact_version
    before = snapshot(finished_student)
    args = ["--teacher_path", tiny_teacher, "--output_dir", finished_student, "--student_name", tiny_minilm, "--data_root",
            root, "--data_version", v, "--overwrite", "--max_len", "48"]
    if problem == "student_name":
        args[args.index("--student_name") + 1] = str(tmp_path / "no-such-model")
    elif problem == "max_len":
        args[args.index("--max_len") + 1] = "100000"
    else:
        from crossdistill.data.versions import read_triplets, write_triplets

        data = tmp_path / "data"
        shutil.copytree(root / v, data / v)
        df = read_triplets(data / v / "train.csv")
        df.loc[3, "positive"] = " "
        write_triplets(df, data / v / "train.csv")
        args[args.index("--data_root") + 1] = str(data)
    proc = run_in_process("train_distillation_pipeline.py", *args, env=score_cache_env)
    assert_usage_error(proc)
    assert snapshot(finished_student) == before


def test_guard_refusal_under_overwrite_restores_events_too(finished_student, tiny_teacher, tiny_minilm, scifact_version,
                                                           score_cache_env):
    """6: the weak tiny teacher is refused by the guard after the folder was claimed: the previous result comes back
    exactly, events.jsonl included, and nothing of the refused run is left."""
    from conftest import STUDENT_ARGS

    root, v = scifact_version
    before = snapshot(finished_student)
    args = [a for a in STUDENT_ARGS if a != "--allow_weaker_teacher"]
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", finished_student, "--overwrite", *args,
                          env=score_cache_env)
    assert_usage_error(proc, "teacher ranks worse")
    assert snapshot(finished_student) == before


# --------------------------------------------------------------------------- 7: the score cache
def test_score_cache_touches_only_its_own_files(tmp_path):
    import sqlite3

    import numpy as np

    from crossdistill.teach.score_cache import ScoreCache

    thesis = tmp_path / "thesis.tex"
    thesis.write_text("my thesis")
    with pytest.raises(UsageError, match="not a teacher-score cache this toolkit wrote"):
        ScoreCache(thesis, "t")
    assert thesis.read_text() == "my thesis" and sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
    mine = tmp_path / "mydata.db"
    db = sqlite3.connect(mine)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    before = mine.read_bytes()
    with pytest.raises(UsageError, match="other tables: people"):
        ScoreCache(mine, "t")
    assert mine.read_bytes() == before
    with pytest.raises(UsageError, match="not a regular file"):
        ScoreCache("/dev/null", "t")
    assert Path("/dev/null").exists() and not Path("/dev/null").is_file()
    # the toolkit's own file: created, reused, keeps teachers apart
    cache = tmp_path / "scores.sqlite"
    a = ScoreCache(cache, "teacher-a")
    a.put([("q", "p")], np.array([3.0]))
    a.close()
    assert np.isnan(ScoreCache(cache, "teacher-b").get([("q", "p")])).all()
    assert ScoreCache(cache, "teacher-a").get([("q", "p")]).tolist() == [3.0]
    # damaged: in the toolkit's own cache folder it is set aside and rebuilt; at a user's path it is refused as is
    cache.write_bytes(b"SQLite format 3\x00" + b"garbage" * 100)
    with pytest.raises(UsageError):
        ScoreCache(cache, "teacher-a")
    said = []
    rebuilt = ScoreCache(cache, "teacher-a", log=said.append, owned=True)
    assert np.isnan(rebuilt.get([("q", "p")])).all() and "rebuilding" in said[0]
    assert any(p.name.startswith("scores.sqlite.corrupt-") for p in tmp_path.iterdir())
    with pytest.raises(UsageError, match="is a folder"):
        ScoreCache(tmp_path, "teacher-a")


# --------------------------------------------------------------------------- 8-10: the monitor
def test_a_planted_pid_is_never_signalled(tmp_path):
    """8: monitor_child.json naming an unrelated process (its own session, its real start time and command line) is
    not re-attached to and never killed."""
    import psutil

    out = tmp_path / "run"
    out.mkdir()
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        p = psutil.Process(victim.pid)
        (out / "monitor_child.json").write_text(json.dumps({"pid": victim.pid, "create_time": p.create_time(),
                                                           "command": p.cmdline(), "tag": str(out.resolve())}))
        proc = run_script("realtime_monitor.py", "--output_dir", out, "--no_evaluate")
        assert_usage_error(proc, "no command was given")
        time.sleep(0.5)
        assert victim.poll() is None  # alive
    finally:
        victim.kill()
        victim.wait()


JOB = """
import json, sys, time
out = sys.argv[1]
bad = ['[1]', '{"event": "step", "step": 1, "epoch": 1, "time": 1}', '{"event": "guard", "time": 1}',
       '{"event": "phase"}', '{"event": "step", "step": "2", "loss": "0.5", "epoch": 1, "time": 1}',
       '{"event": "checkpoint_skipped", "time": 1}', 'not json']
good = '{"event": "step", "step": 3, "loss": 0.5, "epoch": 1, "time": %f, "total_steps": 3}' % time.time()
with open(out + "/events.jsonl", "a") as f:
    f.write("\\n".join(bad + [good]) + "\\n")
json.dump({"stage": "student"}, open(out + "/done.json", "w"))
"""


def test_malformed_events_are_skipped_and_counted(tmp_path):
    """9: seven malformed event lines (not an object, missing or string-typed fields, not JSON) neither crash the
    monitor nor stop it from seeing the run complete."""
    out = tmp_path / "run"
    out.mkdir()
    job = tmp_path / "job.py"
    job.write_text(JOB)
    proc = run_script("realtime_monitor.py", "--output_dir", out, "--no_evaluate", "--poll", "0.2", "--",
                      sys.executable, job, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "skipped 7 malformed event line(s)" in proc.stdout and "completed" in proc.stdout


def test_the_monitor_stops_its_job_whatever_ends_it(tmp_path, monkeypatch):
    """9: an error inside the monitor itself (not a signal) still stops the job it started."""
    from crossdistill.monitor import supervisor as monitor

    out = tmp_path / "run"
    sup = monitor.Supervisor(["sleep", "300"], out, monitor.Policy(poll=0.1), evaluate=False)
    started = []

    def broken_watch(job):
        started.append(job)
        raise RuntimeError("a bug in the monitor")

    monkeypatch.setattr(sup, "_watch", broken_watch)
    with pytest.raises(RuntimeError, match="a bug in the monitor"):
        sup.run()
    job = started[0]
    assert job.popen.wait(timeout=20) is not None  # the job's group was stopped


def test_monitor_bad_strings_files_and_records(tmp_path, finished_student):
    """10: unsplittable quoted flags, an --output_dir that is a file, a finished student whose training_args.json
    names no data_version: one error line each."""
    assert_usage_error(run_in_process("realtime_monitor.py", "--output_dir", tmp_path / "x", "--eval_args",
                                      "--bm25 'unterminated", "--", "true"), "--eval_args", "quotes")
    assert_usage_error(run_in_process("realtime_monitor.py", "--pipeline", "quick", "--data_version", "v",
                                      "--teacher_args", "--lr '1e-5"), "--teacher_args")
    readme = tmp_path / "README.md"
    readme.write_text("# mine")
    assert_usage_error(run_in_process("realtime_monitor.py", "--output_dir", readme, "--", "true"), "is a file")
    assert readme.read_text() == "# mine"
    args = json.loads((finished_student / "training_args.json").read_text())
    del args["data_version"]
    (finished_student / "training_args.json").write_text(json.dumps(args))
    proc = run_in_process("realtime_monitor.py", "--output_dir", finished_student, "--", "true")
    assert_usage_error(proc, "cannot evaluate", "data_version")


# --------------------------------------------------------------------------- 12, 14, 19: silent wrongs and ranges
def test_flags_that_cannot_train_anything_are_refused(tmp_path, tiny_minilm, tiny_teacher, scifact_version):
    root, v = scifact_version
    student = ["--teacher_path", tiny_teacher, "--output_dir", tmp_path / "s", "--student_name", tiny_minilm, "--data_root",
               root, "--data_version", v]
    assert_usage_error(run_in_process("train_distillation_pipeline.py", *student, "--soft_weight", "0", "--infonce_weight",
                                      "0"), "every loss term is weighted 0")
    for value in ("nan", "inf", "-inf"):
        assert_usage_error(run_in_process("train_teacher_model.py", "--output_dir", tmp_path / "t", f"--pos_weight={value}"),
                           "--pos_weight must be 'auto' or a finite number")
    for seed in ("-1", str(2**32)):
        for script, extra in (("train_teacher_model.py", ["--output_dir", tmp_path / "t"]),
                              ("train_distillation_pipeline.py", student),
                              ("prepare_data.py", ["--source", SCIFACT, "--data_version", "x", "--data_root", tmp_path])):
            assert_usage_error(run_in_process(script, *extra, "--seed", seed), "--seed must be between 0 and 4294967295")
    # a prefix that alone fills --max_len: every query would be the same text
    assert_usage_error(run_in_process("train_distillation_pipeline.py", *student, "--max_len", "16", "--query_prefix",
                                      "represent this scientific claim for retrieving the abstracts that support it: ",
                                      "--allow_weaker_teacher"), "--query_prefix", "nothing of the text would remain")
    assert_usage_error(run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root,
                                      "--data_version", v, "--output_dir", tmp_path / "t", "--max_len", "12",
                                      "--passage_prefix", "a long passage prefix that fills every token of the input"),
                       "nothing of the text would remain")
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_a_teacher_without_done_json_is_refused(tmp_path, tiny_teacher, tiny_minilm, scifact_version):
    """14."""
    root, v = scifact_version
    half = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, half)
    (half / "done.json").unlink()
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", half, "--output_dir", tmp_path / "s",
                          "--student_name", tiny_minilm, "--data_root", root, "--data_version", v)
    assert_usage_error(proc, "no done.json", "--resume")


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
    """15: a repeated _id keeps its first text (counted), qrels without a header keep their first pair (said)."""
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
    """20: a BEIR file's bad record is named by file and line (no KeyError/TypeError traceback)."""
    from crossdistill.data.sources import load_beir

    corpus, queries = _real_scifact(4)
    corpus, queries = corrupt(corpus, queries)
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{q['_id']}\t{c['_id']}\t1\n" for q, c in zip(queries[:4], corpus))
    with pytest.raises(UsageError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_beir(str(_beir(tmp_path / "b", corpus, queries, qrels)), "test")


@pytest.mark.parametrize("qrels, fragment", [("", "is empty"), ("query-id\tcorpus-id\tscore\n", "header but no pairs"),
                                             ("query-id\tcorpus-id\tscore\nq\td\thigh\n", "is not a number")])
def test_beir_qrels_files_that_hold_nothing_usable(tmp_path, qrels, fragment):
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
    """20: SQuAD/KorQuAD without paragraphs, a question without id, data as a dict, a null context ..."""
    from crossdistill.data.sources import load_squad

    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    with pytest.raises(UsageError, match=fragment):
        load_squad(path)


# --------------------------------------------------------------------------- 17, 18: files that would crash a load
def test_pickle_only_weights_and_mismatched_vocabularies_are_refused(tmp_path, tiny_minilm, scifact_version):
    """17: weights stored only as a pickle are never loaded; 18: a tokenizer larger than the embedding table."""
    from transformers import AutoModel, AutoTokenizer

    root, v = scifact_version
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_minilm, pickled)
    torch.save(AutoModel.from_pretrained(tiny_minilm).state_dict(), pickled / "pytorch_model.bin")  # a pickle
    (pickled / "model.safetensors").unlink()
    assert (pickled / "pytorch_model.bin").is_file()
    for script, args in (("train_teacher_model.py", ["--model_name", pickled, "--output_dir", tmp_path / "t"]),
                         ("evaluate_final_model.py", ["--model_path", pickled, "--test_data", root / v / "test.csv",
                                                      "--output_dir", tmp_path / "e"])):
        extra = ["--data_root", root, "--data_version", v] if "teacher" in script else []
        assert_usage_error(run_in_process(script, *args, *extra), "refusing to unpickle", "safetensors")
    big = tmp_path / "big-vocab"
    shutil.copytree(tiny_minilm, big)
    tok = AutoTokenizer.from_pretrained(big)
    tok.add_tokens([f"newtoken{i}" for i in range(50)])
    tok.save_pretrained(big)
    assert_usage_error(run_in_process("train_teacher_model.py", "--model_name", big, "--data_root", root, "--data_version",
                                      v, "--output_dir", tmp_path / "t"), "tokenizer has", "embedding table")
    assert not (tmp_path / "t").exists()


def test_unwritable_checkpoints_and_a_planted_staging_link(tmp_path):
    """18: a checkpoint that cannot be written is one clear error (previous one kept); a .staging link is removed,
    never followed."""
    from crossdistill.core.checkpoint import save_checkpoint
    from crossdistill.core.runs import staging_dir

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    blocked = tmp_path / "run"
    blocked.mkdir()
    (blocked / "checkpoints").write_text("a file where the checkpoints folder should be")
    with pytest.raises(UsageError, match="cannot write the checkpoint of step 3"):
        save_checkpoint(blocked / "checkpoints", model, opt, sched, {"step": 3})
    target = tmp_path / "users"
    files = {"keep.txt": "mine"}
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    run = tmp_path / "run2"
    run.mkdir()
    (run / ".staging").symlink_to(target)
    with staging_dir(run) as staging:
        assert staging.is_dir() and not staging.is_symlink()
    assert untouched(target, files)
