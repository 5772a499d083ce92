"""Hostile input (issue #14): what is never deleted, what is never executed, what resume guarantees.

Probes that need no training do not train: most run a script's ``main`` in this process or touch the library
directly; the few that need a model use the 2-layer MiniLM.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SCIFACT, assert_usage_error, run_in_process
from crossdistill.core.checkpoint import find_latest, load_tensors, rescale_lr, resume_point, save_checkpoint
from crossdistill.core.errors import UsageError
from crossdistill.core.ownership import mark_owner
from crossdistill.core.runs import claim_output_dir, publish, release_output_dir


def user_folder(path: Path) -> dict:
    """A folder of a user's own files; returns {name: content} to compare against later."""
    path.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": "my thesis", "data.csv": "a,b\n1,2\n"}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def untouched(path: Path, files: dict) -> bool:
    return all((path / n).is_file() and (path / n).read_text() == t for n, t in files.items())


def finished_model(path: Path, stage: str) -> dict:
    """A published result of this toolkit (done.json naming the stage) with its weights."""
    path.mkdir(parents=True)
    files = {"model.safetensors": "WEIGHTS", "config.json": "{}", "done.json": json.dumps({"stage": stage})}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


# --------------------------------------------------------------------------- 1, 2: nothing of the user's is deleted
@pytest.mark.parametrize("script", ["train_teacher_model.py", "train_distillation_pipeline.py"])
def test_resume_never_clears_a_folder_that_is_not_a_run(tmp_path, script, scifact_version):
    root, v = scifact_version
    out = tmp_path / "mine"
    files = user_folder(out)
    extra = ["--teacher_path", tmp_path / "no-teacher"] if "distillation" in script else []
    for version in ("nope", v):  # a typo, and valid data: the folder is refused either way, untouched
        proc = run_in_process(script, "--output_dir", out, "--data_root", root, "--data_version", version, "--resume", *extra)
        assert_usage_error(proc)
        assert untouched(out, files), list(out.iterdir())
    assert "not a run of this toolkit" in run_in_process(script, "--output_dir", out, "--data_root", root, "--data_version",
                                                          v, "--resume", *extra).stderr


def test_overwrite_validates_inputs_before_touching_a_finished_model(tmp_path, scifact_version, tiny_teacher):
    root, v = scifact_version
    teacher = tmp_path / "teacher"
    files = finished_model(teacher, "teacher")
    proc = run_in_process("train_teacher_model.py", "--output_dir", teacher, "--data_root", root, "--data_version", "typo",
                          "--overwrite")
    assert_usage_error(proc, "typo")
    assert untouched(teacher, files)
    student = tmp_path / "student"
    files = finished_model(student, "student")
    proc = run_in_process("train_distillation_pipeline.py", "--output_dir", student, "--data_root", root, "--data_version",
                          v, "--teacher_path", tmp_path / "tpyo", "--overwrite")
    assert_usage_error(proc, "tpyo")
    assert untouched(student, files)


def test_overwrite_refuses_a_folder_this_toolkit_did_not_write(tmp_path, scifact_version):
    root, v = scifact_version
    out = tmp_path / "mine"
    files = user_folder(out)
    proc = run_in_process("train_teacher_model.py", "--output_dir", out, "--data_root", root, "--data_version", v,
                          "--overwrite")
    assert_usage_error(proc, "did not write")
    assert untouched(out, files)
    files = user_folder(tmp_path / "prep" / "v1")
    proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "v1", "--data_root", tmp_path / "prep",
                          "--overwrite")
    assert_usage_error(proc, "did not write")
    assert untouched(tmp_path / "prep" / "v1", files)


def test_prepare_overwrite_with_a_bad_source_keeps_the_old_data(tmp_path):
    out = tmp_path / "prep" / "v1"
    out.mkdir(parents=True)
    (out / "prepare_config.json").write_text("{}")
    (out / "train.csv").write_text("anchor,positive,negative\nq,p,n\n")
    proc = run_in_process("prepare_data.py", "--source", tmp_path / "no-such-source", "--data_version", "v1",
                          "--data_root", tmp_path / "prep", "--overwrite")
    assert_usage_error(proc, "does not exist")
    assert (out / "train.csv").read_text() == "anchor,positive,negative\nq,p,n\n"


def test_claim_release_and_publish_keep_an_overwritten_result_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "run"
    finished_model(out, "student")
    (out / "events.jsonl").write_text("{}\n")
    created = claim_output_dir(out, "student")
    assert not created and not (out / "done.json").exists() and not (out / "events.jsonl").exists()
    assert (out / "model.safetensors").read_text() == "WEIGHTS"  # the old weights stay while the new run trains
    release_output_dir(out, created)  # e.g. the guard refused the teacher: the old result is whole again
    assert json.loads((out / "done.json").read_text()) == {"stage": "student"}
    claim_output_dir(out, "student")
    staging = out / ".staging"
    staging.mkdir()
    (staging / "model.safetensors").write_text("NEW")
    publish(staging, out, {"stage": "student"})
    assert (out / "model.safetensors").read_text() == "NEW" and not (out / "config.json").exists()  # stale file gone
    fresh = tmp_path / "fresh"
    release_output_dir(fresh, claim_output_dir(fresh, "teacher"))
    assert not fresh.exists()


def test_output_paths_that_cannot_work_are_refused_before_any_work(tmp_path, scifact_version):
    root, v = scifact_version
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert_usage_error(run_in_process("train_teacher_model.py", "--output_dir", link, "--data_root", root, "--data_version", v),
                       "dangling")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_usage_error(run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "v", "--data_root", a_file),
                       "is a file")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert_usage_error(run_in_process("train_teacher_model.py", "--output_dir", ro / "t", "--data_root", root,
                                          "--data_version", v), "permission")


# --------------------------------------------------------------------------- 3: nothing read back is executed
class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PWNED']}",))


def test_checkpoint_files_are_never_unpickled(tmp_path, monkeypatch):
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("PWNED", str(pwned))
    crafted = tmp_path / "rng.pt"
    with open(crafted, "wb") as f:
        pickle.dump({"python": _Payload()}, f)
    with pytest.raises(UsageError, match="refusing to unpickle .*objects other than tensors") as err:
        load_tensors(crafted)
    assert "weights_only=False" not in str(err.value)  # torch's own advice is never passed on
    torch.save({"trainable": {"w": torch.ones(2)}, "info": {"epoch": 1}}, tmp_path / "best.pt")
    assert load_tensors(tmp_path / "best.pt")["info"] == {"epoch": 1}
    assert not pwned.exists()


def test_monitor_never_runs_the_command_stored_in_its_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    pwned = tmp_path / "pwned"
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"], start_new_session=True)
    import psutil

    (out / "monitor_child.json").write_text(json.dumps({"pid": job.pid, "create_time": psutil.Process(job.pid).create_time(),
                                                        "command": ["touch", str(pwned)]}))
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_monitor.py"), "--output_dir", str(out), "--poll", "0.2",
                           "--backoff", "0", "--no_evaluate"], capture_output=True, text=True, timeout=60)
    job.wait()
    # the recorded command is not what that pid runs: it is not the job, nothing is re-attached, nothing is run
    assert_usage_error(proc, "no command was given")
    assert "reattach" not in proc.stdout
    time.sleep(0.5)
    assert not pwned.exists()
    # nothing running and no command: refused, nothing run
    assert_usage_error(run_in_process("realtime_monitor.py", "--output_dir", out), "no command was given")
    assert not pwned.exists()


# --------------------------------------------------------------------------- 4: the score cache
def test_score_cache_keeps_teachers_apart_and_rebuilds_a_corrupt_file(tmp_path):
    import numpy as np

    from crossdistill.teach.score_cache import ScoreCache

    path = tmp_path / "scores.sqlite"
    a = ScoreCache(path, "teacher-a")
    a.put([("q", "p")], np.array([3.0]))
    a.close()
    b = ScoreCache(path, "teacher-b")
    assert np.isnan(b.get([("q", "p")])).all()  # teacher B never receives teacher A's score
    b.close()
    assert ScoreCache(path, "teacher-a").get([("q", "p")]).tolist() == [3.0]
    for garbage in (b"not a database at all" * 100, b""):
        path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        path.write_bytes(garbage)
        with pytest.raises(UsageError, match="not a teacher-score cache"):  # at a user's path: refused, left as is
            ScoreCache(path, "teacher-a")
        assert path.read_bytes() == garbage
        said = []
        cache = ScoreCache(path, "teacher-a", log=said.append, owned=True)  # in the toolkit's own cache: rebuilt
        assert np.isnan(cache.get([("q", "p")])).all()
        cache.put([("q", "p")], np.array([1.0]))
        cache.close()
        assert said and "rebuilding" in said[0]
    with pytest.raises(UsageError, match="is a folder"):
        ScoreCache(tmp_path, "teacher-a")


# --------------------------------------------------------------------------- 5: damaged checkpoints
def _tiny_training_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return model, opt, sched


@pytest.mark.parametrize("damaged", ["rng.pt", "scheduler.pt", "trainable.pt", "optimizer.pt"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damaged):
    model, opt, sched = _tiny_training_state()
    root = tmp_path / "run" / "checkpoints"
    save_checkpoint(root, model, opt, sched, {"step": 1})
    save_checkpoint(root, model, opt, sched, {"step": 2})
    target = root / "step-00000002" / damaged
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])  # truncated
    found, skipped = find_latest(root)
    assert found.name == "step-00000001"
    assert skipped == [{"checkpoint": "step-00000002", "reason": f"{damaged} does not match its manifest (truncated or damaged)"}]
    mark_owner(tmp_path / "run", "student")
    assert resume_point(tmp_path / "run", True, False, "student")[0].name == "step-00000001"
    with pytest.raises(UsageError, match="not a teacher run"):
        resume_point(tmp_path / "run", True, False, "teacher")


def test_rng_state_round_trips_as_tensors():
    import random

    import numpy as np

    from crossdistill.core.checkpoint import rng_state, set_rng_state

    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# --------------------------------------------------------------------------- 7: learning rate on resume
def test_resume_with_a_lower_lr_rescales_groups_and_schedule():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    rescale_lr(opt, sched, 5e-5, 2.5e-5)
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(2.5e-5 * 0.5)


def test_monitor_halves_the_scripts_own_default_lr():
    from crossdistill.monitor.commands import recovery_command

    teacher = recovery_command(["python", "train_teacher_model.py", "--output_dir", "x"], "nonfinite")
    student = recovery_command(["python", "train_distillation_pipeline.py", "--output_dir", "x"], "nonfinite")
    assert teacher[teacher.index("--lr") + 1] == "2.5e-05" and student[student.index("--lr") + 1] == "1e-05"
    assert teacher[-3:] == ["--resume", "--lr", "2.5e-05"]
    # the halved numbers are the scripts' own defaults, read from their parsers
    from conftest import load_script

    assert load_script("train_teacher_model.py").parse_args(["--data_version", "x"]).lr == 5e-5
    assert load_script("train_distillation_pipeline.py").parse_args(["--teacher_path", "t", "--output_dir", "o"]).lr == 2e-5


def test_monitor_recovers_from_oom_with_smaller_passes_and_never_overwrites():
    from crossdistill.monitor.commands import recovery_command

    student = ["python", "train_distillation_pipeline.py", "--output_dir", "x", "--batch_size", "4", "--K", "3", "--overwrite"]
    first = recovery_command(student, "oom")
    assert "--overwrite" not in first and "--resume" in first
    assert first[first.index("--micro_batch_size") + 1] == "8"  # 4 x (1 + 3) texts, halved
    assert recovery_command(student, "oom", lambda: 6)[-1] == "3"  # the run's own last micro-batch, halved
    again = recovery_command(first, "oom")
    assert again.count("--micro_batch_size") == 1 and again[again.index("--micro_batch_size") + 1] == "4"
    teacher = recovery_command(["python", "train_teacher_model.py", "--gradient_accumulation_steps=2"], "oom")
    assert teacher[-2:] == ["--micro_batches", "4"] and not any("gradient_accumulation" in c for c in teacher)
    assert recovery_command(teacher, "oom")[-2:] == ["--micro_batches", "8"]


# --------------------------------------------------------------------------- 6, 8: the monitor's stall clock and signals
def _fake_run(tmp_path, body: str) -> list[str]:
    script = tmp_path / "fake_run.py"
    script.write_text(body)
    return [sys.executable, str(script)]


def test_a_silent_start_up_is_not_a_stall(tmp_path):
    """The run says nothing for 3 s (imports, loading), then finishes; the stall clock (1 s) starts at its first
    event, so it is not killed."""
    out = tmp_path / "run"
    cmd = _fake_run(tmp_path, f"""import json, time, pathlib
out = pathlib.Path({str(out)!r})
time.sleep(3)
(out / "events.jsonl").open("a").write(json.dumps({{"event": "start", "time": time.time()}}) + "\\n")
(out / "done.json").write_text(json.dumps({{"stage": "student"}}))
""")
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_monitor.py"), "--output_dir", str(out), "--poll", "0.2",
                           "--stall_timeout", "1", "--startup_timeout", "30", "--no_evaluate", "--", *cmd],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stall" not in proc.stdout and "completed" in proc.stdout


def test_sigterm_to_the_monitor_stops_its_run(tmp_path):
    import psutil

    out = tmp_path / "run"
    cmd = _fake_run(tmp_path, "import time\ntime.sleep(120)\n")
    mon = subprocess.Popen([sys.executable, str(ROOT / "realtime_monitor.py"), "--output_dir", str(out), "--poll", "0.2",
                            "--no_evaluate", "--", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not (out / "monitor_child.json").is_file() and time.time() < deadline:
        time.sleep(0.2)
    child = json.loads((out / "monitor_child.json").read_text())["pid"]
    mon.send_signal(signal.SIGTERM)
    text, _ = mon.communicate(timeout=30)
    assert mon.returncode == 128 + signal.SIGTERM, text
    assert "stopping the run" in text
    time.sleep(0.5)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    stopped = [json.loads(x) for x in (out / "monitor.jsonl").read_text().splitlines() if '"stopped"' in x]
    assert stopped and stopped[0]["signal"] == "SIGTERM"


# --------------------------------------------------------------------------- also found
def test_flags_and_cells_that_used_to_slip_through(tmp_path, scifact_version):
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


def test_max_len_beyond_the_model_is_refused_at_start(tmp_path, tiny_minilm, scifact_version, tiny_teacher):
    root, v = scifact_version
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", root / v / "test.csv",
                      "--output_dir", tmp_path / "e", "--max_len", "4096")
    assert_usage_error(proc, "--max_len 4096 is longer than", "512")
    assert not (tmp_path / "e").exists()


def test_teacher_whose_negatives_all_equal_their_positives_is_refused(tmp_path, tiny_minilm):
    data = tmp_path / "d" / "same"
    data.mkdir(parents=True)
    rows = "anchor,positive,negative\n" + "".join(f"q{i},passage {i},passage {i}\n" for i in range(6))
    for split in ("train", "val"):
        (data / f"{split}.csv").write_text(rows)
    proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", tmp_path / "d", "--data_version",
                      "same", "--output_dir", tmp_path / "t", "--max_len", "32")
    assert_usage_error(proc, "every negative in the training data equals its positive")
    assert not (tmp_path / "t" / "done.json").exists()


def test_a_failed_publish_leaves_no_staging_and_says_how_to_continue(tmp_path):
    from crossdistill.core.runs import staging_dir

    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(UsageError, match="free disk space .* --resume"):
        with staging_dir(out) as staging:
            (staging / "half.bin").write_text("x")
            raise OSError(28, "No space left on device")
    assert not (out / ".staging").exists()


def test_two_runs_cannot_write_one_folder(tmp_path):
    from crossdistill.core.runs import lock_run

    out = tmp_path / "run"
    lock_run(out)  # held by this process from now on
    code = f"from crossdistill.core.runs import lock_run; from pathlib import Path; lock_run(Path({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and f"another run (pid {os.getpid()}) is writing to" in proc.stderr


def test_a_run_that_ends_releases_its_lock_in_the_same_process(tmp_path):
    """A run refused half-way (after it took the lock) or finished lets the next run in the same Python process take
    the folder; while it runs, a second taker is refused."""
    from crossdistill.core.runs import lock_run, releases_run_lock

    out = tmp_path / "run"

    @releases_run_lock
    def refused_run():
        lock_run(out)
        raise UsageError("refused after taking the lock")

    @releases_run_lock
    def run():
        lock_run(out)
        with pytest.raises(UsageError, match="another run"):
            lock_run(out)  # another taker while this run holds it (flock is per open file, even in one process)
        return "done"

    with pytest.raises(UsageError, match="refused after"):
        refused_run()
    assert run() == "done"
    assert run() == "done"
    other = tmp_path / "other"
    lock_run(other)  # a lock taken outside the run (another run's) is not the run's to release
    assert run() == "done"
    with pytest.raises(UsageError, match="another run"):
        lock_run(other)


def test_monitor_with_a_command_that_cannot_start(tmp_path):
    proc = run_in_process("realtime_monitor.py", "--output_dir", tmp_path / "run", "--no_evaluate", "--",
                          str(tmp_path / "no-such-program"), "--x")
    assert_usage_error(proc, "cannot start the command")
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    proc = run_in_process("realtime_monitor.py", "--output_dir", tmp_path / "run2", "--no_evaluate", "--", script)
    assert_usage_error(proc, "cannot start the command")


def test_a_half_published_teacher_is_refused_by_name(tmp_path):
    from crossdistill.models.teacher_folder import inspect_teacher

    t = tmp_path / "teacher"
    t.mkdir()
    (t / "config.json").write_text("{}")
    (t / "lora_config.json").write_text("{}")
    with pytest.raises(UsageError, match="no weights"):
        inspect_teacher(t)


def test_fault_injectors_sit_at_the_hooks_only_when_enabled(monkeypatch):
    """Training code has hook points, no test code; the recovery tests' injectors are installed there by the
    scripts only under CROSSDISTILL_ALLOW_FAULTS=1."""
    from crossdistill.core import faults, hooks

    hooks.clear()
    monkeypatch.delenv("CROSSDISTILL_ALLOW_FAULTS", raising=False)
    monkeypatch.setenv("CROSSDISTILL_FAULTS", json.dumps({"nan_at_steps": [3]}))
    assert faults.install() is False and hooks.on_loss(3, 1.0) == 1.0
    monkeypatch.setenv("CROSSDISTILL_ALLOW_FAULTS", "1")
    monkeypatch.setenv("CROSSDISTILL_FAULTS", json.dumps({"nan_at_steps": [3], "oom_at_steps": [2], "oom_min_texts": 8}))
    try:
        assert faults.install() is True
        assert torch.isnan(hooks.on_loss(3, torch.tensor(1.0))) and hooks.on_loss(4, torch.tensor(1.0)) == 1.0
        hooks.at("forward", 2, 8)  # at the bound: no OOM
        with pytest.raises(torch.OutOfMemoryError):
            hooks.at("forward", 2, 9)
        with pytest.raises(ValueError, match="no hook point"):
            hooks.install("nowhere", print)
    finally:
        hooks.clear()
