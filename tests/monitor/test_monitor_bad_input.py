"""Hostile input against the monitor: it never runs a command read from its files, never signals a planted pid, checks
every event it reads, stops its job whatever ends it. Each test names its issue (#14, #26, #38)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import (
    ROOT,
    assert_usage_error,
    run_in_process,
    run_script,
)
from crossdistill.core.errors import UsageError


@pytest.mark.slow
def test_monitor_never_runs_the_command_stored_in_its_files(tmp_path):
    """Issue #14."""
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


def test_monitor_halves_the_scripts_own_default_lr():
    """Issue #14."""
    from crossdistill.monitor.commands import recovery_command

    teacher = recovery_command(["python", "-m", "crossdistill.teach", "--output_dir", "x"], "nonfinite", "teacher")
    student = recovery_command(["python", "-m", "crossdistill.distill", "--output_dir", "x"], "nonfinite", "student")
    assert teacher[teacher.index("--lr") + 1] == "2.5e-05" and student[student.index("--lr") + 1] == "1e-05"
    assert teacher[-3:] == ["--resume", "--lr", "2.5e-05"]
    # the halved numbers are the scripts' own defaults, read from their parsers
    from conftest import load_script

    assert load_script("train_teacher_model.py").parse_args(["--data_version", "x"]).lr == 5e-5
    assert load_script("train_distillation_pipeline.py").parse_args(["--teacher_path", "t", "--output_dir", "o"]).lr == 2e-5


def test_monitor_recovers_from_oom_with_smaller_passes_and_never_overwrites():
    """Issue #14."""
    from crossdistill.monitor.commands import recovery_command

    student = ["python", "train_distillation_pipeline.py", "--output_dir", "x", "--batch_size", "4", "--K", "3", "--overwrite"]
    first = recovery_command(student, "oom", "student")  # the stage is what the run's folder says, not the file name
    assert "--overwrite" not in first and "--resume" in first
    assert first[first.index("--micro_batch_size") + 1] == "8"  # 4 x (1 + 3) texts, halved
    assert recovery_command(student, "oom", "student", lambda: 6)[-1] == "3"  # the run's own last micro-batch, halved
    again = recovery_command(first, "oom", "student")
    assert again.count("--micro_batch_size") == 1 and again[again.index("--micro_batch_size") + 1] == "4"
    teacher = recovery_command(["python", "train_teacher_model.py", "--gradient_accumulation_steps=2"], "oom", "teacher")
    assert teacher[-2:] == ["--micro_batches", "4"] and not any("gradient_accumulation" in c for c in teacher)
    assert recovery_command(teacher, "oom", "teacher")[-2:] == ["--micro_batches", "8"]
    assert recovery_command(["python", "job.py"], "oom", None) == ["python", "job.py", "--resume"]  # unknown: resume only


# --------------------------------------------------------------------------- 6, 8: the monitor's stall clock and signals
def _fake_run(tmp_path, body: str) -> list[str]:
    script = tmp_path / "fake_run.py"
    script.write_text(body)
    return [sys.executable, str(script)]


@pytest.mark.slow
def test_a_silent_start_up_is_not_a_stall(tmp_path):
    """Issue #14: The run says nothing for 3 s (imports, loading), then finishes; the stall clock (1 s) starts at its first
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
    """Issue #14."""
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


def test_monitor_with_a_command_that_cannot_start(tmp_path):
    """Issue #14."""
    proc = run_in_process("realtime_monitor.py", "--output_dir", tmp_path / "run", "--no_evaluate", "--",
                          str(tmp_path / "no-such-program"), "--x")
    assert_usage_error(proc, "cannot start the command")
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    proc = run_in_process("realtime_monitor.py", "--output_dir", tmp_path / "run2", "--no_evaluate", "--", script)
    assert_usage_error(proc, "cannot start the command")


# --------------------------------------------------------------------------- 8-10: the monitor
def test_a_planted_pid_is_never_signalled(tmp_path):
    """Issue #26: 8: monitor_child.json naming an unrelated process (its own session, its real start time and command line) is
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
    """Issue #26: 9: seven malformed event lines (not an object, missing or string-typed fields, not JSON) neither crash the
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


def test_a_job_that_writes_its_events_before_the_monitor_looks_is_read_in_full(tmp_path, monkeypatch, capsys):
    """The flake behind the test above (seen twice under load): the watcher took the event log's end as its start after
    the job was launched, so a job that wrote its events first had them skipped. Here the monitor is made slow on
    purpose: the launch returns only once the job has ended."""
    from crossdistill.monitor import supervisor as monitor
    from crossdistill.monitor.config import MonitorConfig

    out = tmp_path / "run"
    out.mkdir()
    job_file = tmp_path / "job.py"
    job_file.write_text(JOB)
    launch = monitor.Job.launch

    def slow_launch(*args, **kwargs):
        job = launch(*args, **kwargs)
        job.popen.wait(timeout=60)  # the job has written every event and ended before the monitor reads any
        return job

    monkeypatch.setattr(monitor.Job, "launch", slow_launch)
    sup = monitor.Supervisor([sys.executable, str(job_file), str(out)], out, MonitorConfig(poll=0.1), evaluate=False)
    assert sup.run() == 0
    said = capsys.readouterr().out
    assert "skipped 7 malformed event line(s)" in said and "completed" in said


def test_the_monitor_stops_its_job_whatever_ends_it(tmp_path, monkeypatch):
    """Issue #26: 9: an error inside the monitor itself (not a signal) still stops the job it started."""
    from crossdistill.monitor import supervisor as monitor
    from crossdistill.monitor.config import MonitorConfig

    out = tmp_path / "run"
    sup = monitor.Supervisor(["sleep", "300"], out, MonitorConfig(poll=0.1), evaluate=False)
    started = []

    def broken_watch(job, watcher):
        started.append(job)
        raise RuntimeError("a bug in the monitor")

    monkeypatch.setattr(sup, "_watch", broken_watch)
    with pytest.raises(RuntimeError, match="a bug in the monitor"):
        sup.run()
    job = started[0]
    assert job.popen.wait(timeout=20) is not None  # the job's group was stopped


@pytest.mark.slow
def test_monitor_bad_strings_files_and_records(tmp_path, finished_student):
    """Issue #26: 10: unsplittable quoted flags, an --output_dir that is a file, a finished student whose training_args.json
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


# --------------------------------------------------------------------------- 3: the monitor
@pytest.mark.parametrize("command", [["bash", "-c", "exec sleep 60"], ["env", "FOO=1", "sleep", "60"],
                                     ["nice", "-n", "1", "sleep", "60"]])
def test_the_monitor_stops_a_job_that_execs(command, tmp_path):
    """Issue #38: A command that execs changes its command line; the identity check failed and no signal was ever sent."""
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
    """Issue #38: After Ctrl-C the rerun launched the original command without --resume and was rejected."""
    import sys

    from crossdistill.core.ownership import mark_owner
    from crossdistill.monitor.config import MonitorConfig
    from crossdistill.monitor.supervisor import Supervisor

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.json").write_text("{}")
    mark_owner(out, "student")  # a student run's folder, as the training script claims it
    script = tmp_path / "any_name.py"  # stands in for the real script: records its argv, finishes
    script.write_text("import json, sys, pathlib\nout = pathlib.Path(sys.argv[sys.argv.index('--output_dir') + 1])\n"
                      "(out / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n(out / 'done.json').write_text('{}')\n")
    command = [sys.executable, str(script), "--output_dir", str(out)]
    code = Supervisor(command, out, MonitorConfig(poll=0.1), evaluate=False).run()
    assert code == 0
    assert json.loads((out / "argv.json").read_text()) == ["--output_dir", str(out), "--resume"]


def test_monitor_refuses_folders_that_do_not_match(tmp_path):
    """Issue #38."""
    from crossdistill.monitor.config import MonitorConfig

    with pytest.raises(UsageError, match="--eval_output_dir"):
        MonitorConfig.parse(["--output_dir", "a", "--eval_args", "--output_dir x"], command=("python", "t.py"))
    with pytest.raises(UsageError, match="never be seen"):
        MonitorConfig.parse(["--output_dir", str(tmp_path / "a")],
                            command=("python", "train_distillation_pipeline.py", "--output_dir", str(tmp_path / "b")))
    with pytest.raises(UsageError, match="--poll"):
        MonitorConfig.parse(["--output_dir", "a", "--poll", "1e300"], command=("python", "t.py"))


def test_events_the_status_line_reads_are_checked_and_huge_lines_bounded(tmp_path):
    """Issue #38."""
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


@pytest.mark.parametrize("name,flag,hint", [
    ("teacher_args", "--output_dir elsewhere", "--models_dir"),
    ("teacher_args", "--output_dir=elsewhere", "--models_dir"),
    ("student_args", "--output_dir elsewhere", "--models_dir"),
    ("student_args", "--teacher_path t", "command after --"),
    ("teacher_args", "--data_version other", "monitor's own --data_version"),
    ("student_args", "--resume", "passes it itself"),
    ("eval_args", "--model_path m", "evaluates the run it watched"),
    ("eval_args", "--output_dir x", "--eval_output_dir"),
])
def test_a_pass_through_that_sets_a_flag_the_monitor_owns_is_refused(name, flag, hint):
    """Issue #46 (10): --teacher_args "--output_dir elsewhere" trained a whole teacher into a folder the monitor does not
    watch; one rule (PASS_THROUGH_OWNED) for every pass-through."""
    from crossdistill.monitor.config import MonitorConfig

    with pytest.raises(UsageError, match=f"--{name} sets {flag.split()[0].split('=')[0]}, which the monitor sets itself.*{hint}"):
        MonitorConfig.parse(["--pipeline", "cpu", "--data_version", "v", f"--{name}={flag}"])


def test_recovery_flags_reach_the_script_whatever_wraps_it(tmp_path, monkeypatch):
    """#46 (9): which commands take appended flags (is_direct), what a wrapped one gets in its environment (recovery),
    a folder stopped before its first checkpoint counts as resumable, and the script side (with_monitor_flags)."""
    from crossdistill.core.cli import MONITOR_DIR, MONITOR_FLAGS, with_monitor_flags
    from crossdistill.core.ownership import mark_owner
    from crossdistill.monitor.commands import is_direct, recovery, resumable

    for cmd in (["python", "t.py"], ["/usr/bin/python3.11", "-m", "crossdistill.distill"], ["env", "FOO=1", "python", "t.py"],
                ["crossdistill-distill", "--K", "4"], ["accelerate", "launch", "t.py"], ["./train_distillation_pipeline.py"]):
        assert is_direct(cmd), cmd
    for cmd in (["bash", "-c", "exec python t.py"], ["sh", "run.sh"], ["./run.sh"]):
        assert not is_direct(cmd), cmd
    wrapped = ["bash", "-c", "exec python t.py --lr 1e-4 --overwrite"]
    assert recovery(wrapped, [], "crash", "student") == (wrapped, ["--resume"])
    assert recovery(wrapped, ["--resume"], "nonfinite", "student") == (wrapped, ["--resume", "--lr", "5e-05"])
    assert recovery(["python", "t.py", "--overwrite"], [], "crash", "student") == (["python", "t.py", "--resume"], [])
    out = tmp_path / "run"
    out.mkdir()
    mark_owner(out, "student", files=[])
    (out / "events.jsonl").write_text("")
    assert resumable(out, ["bash", "-c", "python t.py"]) and not resumable(out, ["bash", "-c", "python t.py --overwrite"])
    (out / "done.json").write_text("{}")
    assert not resumable(out, ["python", "t.py"])
    # the script side: only in a job the monitor started, only the recovery flags; --resume drops --overwrite
    monkeypatch.setenv(MONITOR_FLAGS, "--resume --micro_batch_size 8")
    monkeypatch.delenv(MONITOR_DIR, raising=False)
    assert with_monitor_flags(["--overwrite"]) == ["--overwrite"]
    monkeypatch.setenv(MONITOR_DIR, str(out))
    assert with_monitor_flags(["--K", "4", "--overwrite"]) == ["--K", "4", "--resume", "--micro_batch_size", "8"]
    monkeypatch.setenv(MONITOR_FLAGS, "--output_dir /elsewhere")
    with pytest.raises(UsageError, match="passes only --resume"):
        with_monitor_flags([])
