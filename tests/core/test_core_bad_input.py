"""Hostile input against the shared machinery: output folders (claimed only when ours, never cleared when not a run),
checkpoints (never unpickled, a damaged one skipped, exact resume), locks, publishing. Each test names its issue
(#14, #26, #38: the three hostile rounds)."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from conftest import (
    ROOT,
    SCIFACT,
    assert_usage_error,
    finished_model,
    run_in_process,
    untouched,
    user_folder,
)
from crossdistill.core.checkpoint import find_latest, load_tensors, rescale_lr, resume_point, save_checkpoint
from crossdistill.core.errors import UsageError
from crossdistill.core.ownership import mark_owner
from crossdistill.core.runs import claim_output_dir, publish, release_output_dir


# --------------------------------------------------------------------------- 1, 2: nothing of the user's is deleted
@pytest.mark.parametrize("script", ["train_teacher_model.py", "train_distillation_pipeline.py"])
def test_resume_never_clears_a_folder_that_is_not_a_run(tmp_path, script, scifact_version):
    """Issue #14."""
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
    """Issue #14."""
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
    """Issue #14."""
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


def test_claim_release_and_publish_keep_an_overwritten_result_until_the_new_one_is_complete(tmp_path):
    """Issue #14."""
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
    """Issue #14."""
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
    """Issue #14."""
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
    """Issue #14."""
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
    """Issue #14."""
    import random

    import numpy as np

    from crossdistill.core.checkpoint import rng_state, set_rng_state

    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# --------------------------------------------------------------------------- 7: learning rate on resume
def test_resume_with_a_lower_lr_rescales_groups_and_schedule():
    """Issue #14."""
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    rescale_lr(opt, sched, 5e-5, 2.5e-5)
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(2.5e-5 * 0.5)


def test_a_failed_publish_leaves_no_staging_and_says_how_to_continue(tmp_path):
    """Issue #14."""
    from crossdistill.core.runs import staging_dir

    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(UsageError, match="free disk space .* --resume"):
        with staging_dir(out) as staging:
            (staging / "half.bin").write_text("x")
            raise OSError(28, "No space left on device")
    assert not (out / ".staging").exists()


def test_two_runs_cannot_write_one_folder(tmp_path):
    """Issue #14."""
    from crossdistill.core.runs import lock_run

    out = tmp_path / "run"
    lock_run(out)  # held by this process from now on
    code = f"from crossdistill.core.runs import lock_run; from pathlib import Path; lock_run(Path({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and f"another run (pid {os.getpid()}) is writing to" in proc.stderr


def test_a_run_that_ends_releases_its_lock_in_the_same_process(tmp_path):
    """Issue #14: A run refused half-way (after it took the lock) or finished lets the next run in the same Python process take
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


def test_fault_injectors_sit_at_the_hooks_only_when_enabled(monkeypatch):
    """Issue #14: Training code has hook points, no test code; the recovery tests' injectors are installed there by the
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


def test_unwritable_checkpoints_and_a_planted_staging_link(tmp_path):
    """Issue #26: 18: a checkpoint that cannot be written is one clear error (previous one kept); a .staging link is removed,
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


def test_resume_refuses_changed_val_data(tmp_path):
    """Issue #38."""
    from crossdistill.core.errors import UsageError
    from crossdistill.core.run_state import check_resume_settings

    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"settings": {"val_data_sha256": "a", "lr": 1e-5}}))
    check_resume_settings(ckpt, {"val_data_sha256": "a", "lr": 2e-5})  # --lr may change
    with pytest.raises(UsageError, match=r"the val data \(val.csv\)"):
        check_resume_settings(ckpt, {"val_data_sha256": "b", "lr": 1e-5})


def test_a_failed_checkpoint_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """Issue #38."""
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


@pytest.mark.parametrize("script,flag", [
    ("prepare_data.py", "--data_version"), ("prepare_data.py", "--data_root"), ("train_teacher_model.py", "--output_dir"),
    ("train_distillation_pipeline.py", "--output_dir"), ("train_distillation_pipeline.py", "--data_version"),
    ("evaluate_final_model.py", "--output_dir"), ("teacher_scores.py", "--output"), ("export_student.py", "--output_dir"),
    ("realtime_monitor.py", "--output_dir"),
])
def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, script, flag):
    """Issue #46 (13): a data version or output name over 255 bytes gave `OSError [Errno 36] File name too long` in
    every script; refused up front (the last name at most 200 bytes: the toolkit writes temporary siblings of it)."""
    long = "x" * 230 if flag == "--data_version" else str(tmp_path / ("é" * 130))  # 230 and 260 bytes
    required = {"prepare_data.py": ["--source", str(SCIFACT)], "evaluate_final_model.py": ["--model_path", "m"],
                "export_student.py": ["--model_path", "m"], "realtime_monitor.py": ["--", "true"],
                "train_distillation_pipeline.py": [] if flag == "--output_dir" else ["--output_dir", str(tmp_path / "o")]
                }.get(script, [])
    proc = run_in_process(script, flag, long, *required)
    assert_usage_error(proc, f"{flag}: the name", "bytes long", "choose a shorter name")
    assert list(tmp_path.iterdir()) == []
