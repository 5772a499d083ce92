"""Issue #38, the third hostile pass: silent wrong results now say so or are refused, unbounded inputs are bounded.
(Part 1, the ownership of files, is tests/test_ownership.py.)"""

import json
import os
import shutil

import pytest

from conftest import SCIFACT, assert_usage_error, run_in_process
from crossdistill.data import sources


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, tiny_minilm, scifact_version):
    """transformers 5 builds a 5-token tokenizer for such a folder (every word [UNK]); the runs trained with exit 0."""
    bare = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_minilm, bare)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    root, v = scifact_version
    proc = run_in_process("train_teacher_model.py", "--model_name", bare, "--data_root", root, "--data_version", v,
                          "--output_dir", tmp_path / "t")
    assert_usage_error(proc, "no tokenizer files", "save the tokenizer")
    proc = run_in_process("evaluate_final_model.py", "--model_path", bare, "--data_root", root, "--data_version", v,
                          "--output_dir", tmp_path / "e")
    assert_usage_error(proc, "no tokenizer files")
    assert not (tmp_path / "t").exists() and not (tmp_path / "e").exists()


def test_a_tsv_cell_starting_with_a_quote_is_text(tmp_path):
    """pandas' CSV quoting applied to TSV swallowed the rows after such a cell."""
    from crossdistill.data.tables import read_table

    rows = ['"quoted" claims about cells\tA passage.', "second query\tSecond passage.", "third query\tThird passage."]
    path = tmp_path / "pairs.tsv"
    path.write_text("query\tpassage\n" + "\n".join(rows) + "\n")
    df = read_table(str(path), "tsv")
    assert len(df) == 3 and df["query"][0] == '"quoted" claims about cells'


@pytest.mark.parametrize("flag, value", [("--weight_decay", "1e300"), ("--scale", "1e300"), ("--soft_weight", "1e300"),
                                         ("--infonce_weight", "inf"), ("--teacher_fusion", "bm25=1e300")])
def test_absurd_loss_settings_name_the_flag(flag, value, tmp_path):
    """At 1e300 these ended as 'loss became nan, lower --lr' and the monitor halved the lr."""
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tmp_path, "--output_dir", tmp_path / "o",
                          f"{flag}={value}")
    assert_usage_error(proc, flag.split("=")[0])
    assert not (tmp_path / "o").exists()


def test_random_negatives_are_capped_at_the_pool():
    import random

    from crossdistill.data.mining import random_negatives

    got = random_negatives(50, {0, 1}, 1_000_000_000, random.Random(0))  # spun for hours before
    assert sorted(got) == list(range(2, 50))


def test_a_fifo_given_as_squad_json_is_refused_not_read(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    proc = run_in_process("prepare_data.py", "--source", fifo, "--data_version", "x", "--data_root", tmp_path / "d")
    assert_usage_error(proc, "not a regular file")


def test_dropped_queries_with_kept_negatives_are_said(tmp_path):
    """--negatives keep with triplets whose negative equals the positive dropped those queries silently."""

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


def test_export_with_the_student_is_named_in_its_card(tiny_teacher, tiny_minilm, scifact_version, score_cache_env, tmp_path):
    """--export wrote the ONNX files, but the model card written after it did not name them."""
    root, v = scifact_version
    out = tmp_path / "s"
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tiny_teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", out, "--epochs", "1", "--K", "4",
                          "--max_samples", "24", "--max_val_samples", "20", "--max_len", "32", "--val_pool", "csv",
                          "--allow_weaker_teacher", "--export", "onnx", env=score_cache_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = (out / "README.md").read_text()
    assert "## Serving (ONNX)" in card and "onnx/model.onnx" in card and "## Validation" in card
    assert {"onnx", "export.json", "README.md"} <= set(json.loads((out / ".crossdistill.json").read_text())["files"])


def test_test_data_of_another_version_is_refused(scifact_version, tiny_minilm, tmp_path):
    root, v = scifact_version
    other = tmp_path / "data"
    shutil.copytree(root / v, other / "other")
    shutil.copytree(root / v, other / v)
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--data_root", other, "--data_version", v,
                          "--test_data", other / "other" / "test.csv", "--output_dir", tmp_path / "e")
    assert_usage_error(proc, "belongs to the data version other", "--data_version other")
    assert not (tmp_path / "e").exists()


def test_a_student_is_not_scored_on_a_version_prepared_again(reference_student, scifact_version, tmp_path):
    """Its data fingerprint is recorded when it is published; a re-split version of the same name is refused."""
    student, _ = reference_student
    recorded = json.loads((student / "distillation_config.json").read_text())["data_fingerprint"]
    assert {"train.csv", "val.csv", "test.csv"} <= set(recorded)
    root, v = scifact_version
    again = tmp_path / "data"
    shutil.copytree(root / v, again / v)
    test = again / v / "test.csv"
    lines = test.read_text().splitlines(keepends=True)
    test.write_text("".join(lines[:1] + lines[1:][::-1]))  # the same rows in another order: a new split file
    proc = run_in_process("evaluate_final_model.py", "--model_path", student, "--data_root", again, "--data_version", v,
                          "--output_dir", tmp_path / "e")
    assert_usage_error(proc, "was prepared again", "test.csv")
    assert not (tmp_path / "e").exists()


def test_resume_refuses_changed_val_data(tmp_path):
    from crossdistill.core.engine import check_resume_settings
    from crossdistill.core.errors import UsageError

    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"settings": {"val_data_sha256": "a", "lr": 1e-5}}))
    check_resume_settings(ckpt, {"val_data_sha256": "a", "lr": 2e-5})  # --lr may change
    with pytest.raises(UsageError, match=r"the val data \(val.csv\)"):
        check_resume_settings(ckpt, {"val_data_sha256": "b", "lr": 1e-5})


def test_pairs_holding_the_body_of_a_titled_corpus_passage_match_it(tmp_path):
    """A corpus with a title column never matched pairs that hold the body text: every positive was added a second time
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


def test_onnx_serving_follows_the_folders_pooling_and_refuses_what_it_is_not(tmp_path, tiny_minilm):
    """The ONNX backend ignored max/cls pooling in sentence-transformers' current layout and any Dense module, and
    nothing checked that onnx/model.onnx was the folder's model."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from crossdistill.core.errors import UsageError
    from crossdistill.core.ownership import mark_owner
    from crossdistill.models.export import export_student
    from crossdistill.models.onnx import OnnxEncoder

    student = tmp_path / "student"
    shutil.copytree(tiny_minilm, student)
    (student / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": "max"}))
    mark_owner(student, "student")
    export_student(student, ["onnx"])
    texts = [json.loads(x)["text"] for x in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:16]]
    ref = SentenceTransformer(str(student), device="cpu").encode(texts, normalize_embeddings=True)
    got = OnnxEncoder(student, "onnx").encode(texts, batch_size=8)
    assert float((ref * got).sum(1).min()) > 0.9999  # max pooling, as the torch model pools
    # a swapped ONNX file, or weights changed after the export: refused
    onnx = student / "onnx" / "model.onnx"
    original = onnx.read_bytes()
    onnx.write_bytes(original[:-16] + b"\0" * 16)
    with pytest.raises(UsageError, match="replaced or changed"):
        OnnxEncoder(student, "onnx")
    onnx.write_bytes(original)
    weights = student / "model.safetensors"
    kept = weights.read_bytes()
    weights.write_bytes(kept + b" ")
    with pytest.raises(UsageError, match="exported from other weights"):
        OnnxEncoder(student, "onnx")
    weights.write_bytes(kept)
    OnnxEncoder(student, "onnx")
    # a Dense module after pooling is not in the ONNX graph: refused before any export or encoding
    modules = json.loads((student / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (student / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UsageError, match="Dense module"):
        OnnxEncoder(student, "onnx")
    with pytest.raises(UsageError, match="Dense module"):
        export_student(student, ["onnx"])
    assert np.isfinite(got).all()


# --------------------------------------------------------------------------- 3: the monitor
@pytest.mark.parametrize("command", [["bash", "-c", "exec sleep 60"], ["env", "FOO=1", "sleep", "60"],
                                     ["nice", "-n", "1", "sleep", "60"]])
def test_the_monitor_stops_a_job_that_execs(command, tmp_path):
    """A command that execs changes its command line; the identity check failed and no signal was ever sent."""
    import time

    from crossdistill.monitor.job import Job

    job = Job.launch(command, tmp_path)
    time.sleep(0.5)  # the exec has happened: the process now runs `sleep`
    assert job.verify() is None
    again, why = Job.reattach(tmp_path)  # a later monitor finds it too
    assert again is not None, why
    job.kill_group(grace=5)
    assert job.wait(10) is not None


def test_running_the_same_monitor_command_again_resumes(tmp_path):
    """After Ctrl-C the rerun launched the original command without --resume and was rejected."""
    import sys

    from crossdistill.monitor.supervisor import Policy, Supervisor

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.json").write_text("{}")
    script = tmp_path / "train_distillation_pipeline.py"  # stands in for the real script: records its argv, finishes
    script.write_text("import json, sys, pathlib\nout = pathlib.Path(sys.argv[sys.argv.index('--output_dir') + 1])\n"
                      "(out / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n(out / 'done.json').write_text('{}')\n")
    command = [sys.executable, str(script), "--output_dir", str(out)]
    code = Supervisor(command, out, Policy(poll=0.1), evaluate=False).run()
    assert code == 0
    assert json.loads((out / "argv.json").read_text()) == ["--output_dir", str(out), "--resume"]


def test_monitor_refuses_folders_that_do_not_match(tmp_path):
    from crossdistill.core.errors import UsageError
    from crossdistill.monitor.config import MonitorConfig

    with pytest.raises(UsageError, match="--eval_output_dir"):
        MonitorConfig.parse(["--output_dir", "a", "--eval_args", "--output_dir x"], command=("python", "t.py"))
    with pytest.raises(UsageError, match="never be seen"):
        MonitorConfig.parse(["--output_dir", str(tmp_path / "a")],
                            command=("python", "train_distillation_pipeline.py", "--output_dir", str(tmp_path / "b")))
    with pytest.raises(UsageError, match="--poll"):
        MonitorConfig.parse(["--output_dir", "a", "--poll", "1e300"], command=("python", "t.py"))


def test_events_the_status_line_reads_are_checked_and_huge_lines_bounded(tmp_path):
    from crossdistill.monitor.status import StatusLine
    from crossdistill.monitor.watch import Tail, Watcher, valid_event

    good = {"event": "step", "time": 1.0, "step": 1, "loss": 0.5, "epoch": 1, "samples_per_s": 3.0}
    assert valid_event(good)
    for bad in ({**good, "samples_per_s": "fast"}, {**good, "loss": float("inf")}, {**good, "step": 10**30},
                {"event": "start", "time": 1.0, "stage": "student", "total_steps": "many"},
                {"event": "phase", "time": 1.0, "phase": "x", "done": "1", "total": 5}):
        assert not valid_event(bad), bad
    status = StatusLine(open(os.devnull, "w"))
    status.update([good, {"event": "start", "time": 1.0, "stage": "student", "total_steps": 9}])
    assert "step 1/9" in status.text(os.getpid())
    # a 300 MB line without a newline was read again at every poll: now skipped once, counted
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"")
    watcher = Watcher(tmp_path)
    watcher.events = Tail(events, from_end=False, limit=1024)
    with open(events, "ab") as f:
        f.write(b"x" * 5000)
    assert [watcher.poll() for _ in range(6)] == [[]] * 6  # 1 KiB a poll: never the whole line at once
    with open(events, "ab") as f:
        f.write(b"yyy\n" + json.dumps(good).encode() + b"\n")
    assert watcher.poll() == [good] and watcher.malformed == 1


# --------------------------------------------------------------------------- 5: tracebacks become one line
def _student_copy(tmp_path, tiny_minilm, name="student"):
    from crossdistill.core.ownership import mark_owner

    folder = tmp_path / name
    shutil.copytree(tiny_minilm, folder)
    mark_owner(folder, "student")
    return folder


def test_export_of_a_damaged_folder_is_one_line(tmp_path, tiny_minilm):
    half = _student_copy(tmp_path, tiny_minilm, "half")
    (half / "model.safetensors").unlink()
    assert_usage_error(run_in_process("export_student.py", "--model_path", half, "--formats", "onnx"), "cannot export")
    broken = _student_copy(tmp_path, tiny_minilm, "broken")
    (broken / "export.json").write_text("{not json")
    assert_usage_error(run_in_process("export_student.py", "--model_path", broken, "--formats", "onnx"), "export.json")
    (broken / "export.json").unlink()
    (broken / "modules.json").write_text("[1, 2")
    assert_usage_error(run_in_process("export_student.py", "--model_path", broken, "--formats", "onnx"), "modules.json")
    filed = _student_copy(tmp_path, tiny_minilm, "filed")
    (filed / "onnx").write_text("a file where the folder goes")
    assert_usage_error(run_in_process("export_student.py", "--model_path", filed, "--formats", "onnx"), "is a file")


def test_a_garbage_onnx_model_in_evaluation_is_one_line(tmp_path, tiny_minilm, scifact_version):
    student = _student_copy(tmp_path, tiny_minilm)
    (student / "onnx").mkdir()
    (student / "onnx" / "model.onnx").write_bytes(b"not a model")
    root, v = scifact_version
    proc = run_in_process("evaluate_final_model.py", "--model_path", student, "--data_root", root, "--data_version", v,
                          "--output_dir", tmp_path / "e", "--backend", "onnx")
    assert_usage_error(proc, "model.onnx", "export it again")
    assert not (tmp_path / "e").exists()


def test_a_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """A full disk cannot be made for real in a test: the write that would fail raises what the kernel raises."""
    import errno

    from crossdistill.data import versions as data

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data, "write_corpus", full)
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "v", "--data_root", tmp_path / "d",
                          "--num_negatives", "1", "--random_negatives", "0")
    assert_usage_error(proc, "No space left on device", "free disk space")
    assert not [p for p in (tmp_path / "d").iterdir()]


def test_a_failed_checkpoint_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import torch

    from crossdistill.core import checkpoint
    from crossdistill.core.errors import UsageError

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def failing(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(checkpoint.torch, "save", failing)
    with pytest.raises(UsageError, match="cannot write the checkpoint of step 3"):
        checkpoint.save_checkpoint(tmp_path / "ck", model, opt, sched, {"step": 3})
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "ck").iterdir())
