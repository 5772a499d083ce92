"""realtime_monitor.py with real subprocesses, a real 2-layer model and injected faults."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_usage_error, load_script, run_in_process, run_script, same_weights, student_command
from crossdistill.core.checkpoint import find_latest

FAST = ["--backoff", "0.2", "--poll", "0.3", "--status_every", "2"]


def monitor(out, cmd, faults=None, *flags, env_extra=None, wait=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    if faults:
        env.update(CROSSDISTILL_ALLOW_FAULTS="1", CROSSDISTILL_FAULTS=json.dumps(faults))
    args = [sys.executable, str(ROOT / "realtime_monitor.py"), "--output_dir", str(out), *FAST, *map(str, flags), "--", *cmd]
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)


def decisions(out):
    return [json.loads(x) for x in (out / "monitor.jsonl").read_text().splitlines() if '"decision"' in x]


def steps(out):
    return sorted({json.loads(x)["step"] for x in (out / "events.jsonl").read_text().splitlines() if '"event": "step"' in x})


@pytest.mark.slow
def test_sigkill_in_both_epochs_and_inside_a_checkpoint_same_weights(tmp_path, reference_student, tiny_teacher, tiny_minilm,
                                                                     scifact_version, score_cache_env):
    ref, _ = reference_student
    out = tmp_path / "run"
    # step 6: half-way through writing its checkpoint; step 11: in epoch 2 (a kill just after a checkpoint, then a
    # manual --resume: test_distillation's SIGKILL test)
    faults = {"kill_at_steps": [11], "kill_in_checkpoint_at_steps": [6], "once_dir": str(tmp_path / "once")}
    proc = monitor(out, student_command(out, tiny_teacher, tiny_minilm, scifact_version), faults, "--no_evaluate",
                   env_extra=score_cache_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    restarts = [d for d in decisions(out) if d["decision"] == "restart"]
    assert [d["fault"] for d in restarts] == ["killed"] * 2 and all(d["exit_code"] == -9 for d in restarts)
    assert all("--resume" in d["command"] for d in restarts)
    assert steps(out) == list(range(1, 13))
    assert same_weights(ref, out)
    # the kill inside step 6's checkpoint left only a temporary folder, never a "latest" that points at it: the run
    # went back to step 4's checkpoint, and after the kill at step 11 to step 10's; the published folder keeps none
    resumes = [json.loads(x)["checkpoint"] for x in (out / "events.jsonl").read_text().splitlines() if '"event": "resume"' in x]
    assert resumes == ["step-00000004", "step-00000010"], resumes
    assert not (out / "checkpoints").exists()
    assert "restarts 2" in proc.stdout or "restarts 1" in proc.stdout  # live status lines name the restarts


def test_torn_checkpoint_is_never_latest(tmp_path):
    import torch

    from crossdistill.core.checkpoint import save_checkpoint

    root = tmp_path / "checkpoints"
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    good = save_checkpoint(root, model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), {"step": 2})
    torn = root / "step-00000004"  # renamed into place but missing files (cannot happen with our writer; still refused)
    torn.mkdir()
    (torn / "trainable.pt").write_bytes(b"x")
    (root / ".tmp-step-00000006").mkdir()
    (root / "latest.json").write_text('{"name": "step-00000004"}')
    assert find_latest(root)[0] == good
    (root / "latest.json").write_text("{not json")
    assert find_latest(root)[0] == good


@pytest.mark.slow
def test_oom_nan_stall_recovered(tmp_path, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    out = tmp_path / "run"
    faults = {"fatal_oom_at_steps": [2], "nan_at_steps": [5], "stall_at_steps": [8], "once_dir": str(tmp_path / "once")}
    proc = monitor(out, student_command(out, tiny_teacher, tiny_minilm, scifact_version), faults,
                   "--stall_timeout", "8", "--no_evaluate", env_extra=score_cache_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ds = decisions(out)
    restarts = [d for d in ds if d["decision"] == "restart"]
    assert [d["fault"] for d in restarts] == ["oom", "nonfinite", "stall"]
    assert "--micro_batch_size 10" in restarts[0]["command"]  # 4 queries x (1 + K=4) texts = 20, halved
    assert "--lr 5e-05" in restarts[1]["command"]  # 1e-4 halved, rolled back to the last checkpoint
    assert steps(out) == list(range(1, 13))  # no step lost (the evaluation the monitor runs next: the pipeline test)


@pytest.mark.slow
def test_crash_loop_gives_up_after_the_cap(tmp_path, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    out = tmp_path / "run"
    proc = monitor(out, student_command(out, tiny_teacher, tiny_minilm, scifact_version), {"crash_at_steps": [0]},
                   "--max_restarts", "2", env_extra=score_cache_env)
    assert proc.returncode == 1
    ds = decisions(out)
    assert [d["decision"] for d in ds] == ["restart", "restart", "give-up"]
    assert "injected crash at step 0" in ds[0]["reason"] and "cap 2" in ds[-1]["reason"]
    assert not (out / "done.json").exists()


@pytest.mark.slow
def test_reattach_after_monitor_death_and_second_monitor_refused(tmp_path, tiny_teacher, tiny_minilm, scifact_version,
                                                                 score_cache_env):
    out = tmp_path / "run"
    cmd = student_command(out, tiny_teacher, tiny_minilm, scifact_version)
    first = monitor(out, cmd, {"sleep_per_step": 0.5}, "--no_evaluate", env_extra=score_cache_env, wait=False)
    deadline = time.time() + 120
    while not (out / "monitor_child.json").is_file() and time.time() < deadline:
        time.sleep(0.2)
    second = monitor(out, cmd, None, "--no_evaluate")
    assert_usage_error(second, "another monitor is already watching")
    first.send_signal(signal.SIGKILL)  # the monitor dies; its job keeps running in its own process group
    first.wait()
    child = json.loads((out / "monitor_child.json").read_text())
    os.kill(child["pid"], 0)  # still alive
    again = monitor(out, [], None, "--no_evaluate")
    assert again.returncode == 0, again.stdout[-3000:]
    ds = decisions(out)
    assert ds[0]["decision"] == "reattach" and ds[0]["pid"] == child["pid"] and ds[-1]["decision"] == "completed"
    launches = [x for x in (out / "monitor.jsonl").read_text().splitlines() if '"launch"' in x]
    assert len(launches) == 1  # never a second copy of the job


def test_monitor_bad_usage(tmp_path):
    no_args = load_script("realtime_monitor.py").parse_args([])  # the original's command line: the default job
    assert (no_args.pipeline, no_args.data_version) == ("default", "scifact")
    assert_usage_error(run_in_process("realtime_monitor.py", "--pipeline", "quick"), "--data_version")
    assert_usage_error(run_script("realtime_monitor.py", "--output_dir", tmp_path / "x"), "no command was given")


@pytest.mark.slow
def test_pipeline_quick_runs_teacher_student_and_evaluation(tmp_path, tiny_minilm, scifact_version, score_cache_env):
    """The README's main job (`--pipeline quick`), made tiny by extra flags that override the preset."""
    root, v = scifact_version
    proc = run_script("realtime_monitor.py", "--pipeline", "quick", "--data_version", v, "--data_root", root,
                      "--models_dir", tmp_path / "models", "--teacher_model", tiny_minilm, "--student_name", tiny_minilm,
                      "--teacher_args", "--max_samples 16 --max_len 32 --max_val_samples 12",
                      "--student_args", "--max_samples 16 --max_len 32 --max_val_samples 20 --allow_weaker_teacher",
                      "--eval_output_dir", tmp_path / "eval", "--backoff", "0.2", "--poll", "0.3", env=score_cache_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    teacher_cfg = json.loads((tmp_path / "models" / v / "cross_encoder_teacher_quick" / "teacher_config.json").read_text())
    assert (teacher_cfg["r"], teacher_cfg["alpha"]) == (16, 32)  # the original's quick LoRA settings
    student_args = json.loads((tmp_path / "models" / v / "bi_encoder_distilled_quick" / "training_args.json").read_text())
    assert (student_args["K"], student_args["batch_size"], student_args["use_lora"]) == (4, 16, True)
    student = tmp_path / "models" / v / "bi_encoder_distilled_quick"
    ev = [json.loads(x)["command"] for x in (student / "monitor.jsonl").read_text().splitlines() if '"evaluate"' in x][0]
    assert f"--model_path {student}" in ev and f"--data_version {v}" in ev and f"--output_dir {tmp_path / 'eval'}" in ev
    assert "--max_len 32" in ev and "--bm25" in ev and f"--base_model {tiny_minilm}" in ev  # baselines beside the student
    res = json.loads((tmp_path / "eval" / "bi_encoder_evaluation_results.json").read_text())
    assert res["num_samples"] > 0 and "[monitor] evaluation: positive" in proc.stdout


@pytest.mark.slow
def test_a_job_wrapped_in_a_shell_is_resumed_and_evaluated(tmp_path, reference_student, tiny_teacher, tiny_minilm,
                                                           scifact_version, score_cache_env):
    """#46 (9): `bash -c "exec python ..."` (a documented job form): the restart cannot append --resume (it would
    become $0); the monitor restarts the command as it is, --resume in CROSSDISTILL_MONITOR_FLAGS, which the script
    reads. Crash -> restart -> resume -> the same weights as a run never interrupted -> evaluation."""
    import shlex

    ref, _ = reference_student
    out = tmp_path / "run"
    inner = shlex.join(["exec", *student_command(out, tiny_teacher, tiny_minilm, scifact_version)])
    faults = {"crash_at_steps": [7], "once_dir": str(tmp_path / "once")}
    proc = monitor(out, ["bash", "-c", inner], faults, "--eval_args", "--batch_size 64", env_extra=score_cache_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ds = decisions(out)
    restart = [d for d in ds if d["decision"] == "restart"]
    assert len(restart) == 1 and restart[0]["command"] == shlex.join(["bash", "-c", inner])  # the command unchanged
    assert restart[0]["env"] == "CROSSDISTILL_MONITOR_FLAGS=--resume"
    assert "recovery flags from the monitor (CROSSDISTILL_MONITOR_FLAGS): --resume" in (out / "train.log").read_text()
    assert steps(out) == list(range(1, 13)) and same_weights(ref, out)
    assert [d["decision"] for d in ds][-2:] == ["completed", "evaluate"]
    assert "[monitor] evaluation:" in proc.stdout


def test_a_command_that_is_not_a_training_script_is_given_up_after_one_restart(tmp_path):
    """#46 (11): a command that ignores --resume and fails was restarted 5 times over minutes; with no event written
    in two tries and no run of this toolkit in its folder, the monitor says so and gives up after the first restart."""
    for cmd in ([sys.executable, "-c", "import sys; sys.exit(1)"], ["bash", "-c", "exit 1"]):
        out = tmp_path / cmd[0].split("/")[-1]
        proc = monitor(out, cmd, None, "--no_evaluate")
        assert proc.returncode == 1, proc.stdout[-2000:]
        ds = decisions(out)
        assert [d["decision"] for d in ds] == ["restart", "give-up"]
        assert "wrote no progress event in 2 tries" in ds[-1]["reason"] and "not a script that --resume continues" in \
            ds[-1]["reason"]
