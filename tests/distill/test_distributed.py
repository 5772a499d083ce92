"""Both training scripts with 2 processes on CPU (gloo) through accelerate launch and torchrun, and the monitor on top."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, STUDENT_ARGS, model_weights

# On CPU, accelerate's --cpu launcher starts one process (multi-CPU needs MPI there); its torchrun-based launcher
# with ACCELERATE_USE_CPU=1 gives N gloo processes. On GPUs drop the variable: the same command runs DDP on GPUs.
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
CPU = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def launch(port, script, *args, env=None, timeout=600, launcher=ACCELERATE):
    port_flag = ["--main_process_port", str(port)] if launcher is ACCELERATE else ["--master_port", str(port)]
    cmd = [*launcher, *port_flag, str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **CPU, **(env or {})})


def step_losses(folder):
    ev = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
    return [(e["epoch"], e["loss"]) for e in ev if e["event"] == "step"]


@pytest.mark.slow
def test_teacher_under_two_processes(tmp_path, tiny_minilm, scifact_version):
    """2 processes x batch 4 (each split into 2 micro-batches) train the teacher exactly as 1 process x batch 8: with
    dropout off the weights agree to float precision; with the gradient all-reduce broken, rank 0 would step on half
    of each batch and end far away."""
    import shutil

    root, v = scifact_version
    model = tmp_path / "no-dropout"  # dropout masks differ per process; without them the runs must agree
    shutil.copytree(tiny_minilm, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    common = ["--model_name", model, "--data_root", root, "--data_version", v, "--epochs", "1", "--max_samples", "24",
              "--max_val_samples", "12", "--max_len", "48", "--save_steps", "0"]
    out = tmp_path / "t2"
    proc = launch(29612, "train_teacher_model.py", *common, "--output_dir", out, "--batch_size", "4", "--micro_batches", "2",
                  launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 5  # 36 bce pairs (24 rows = 12 whole queries) / (2 processes x 4)
    assert (out / "done.json").is_file()
    one = tmp_path / "t1"
    single = subprocess.run([sys.executable, str(ROOT / "train_teacher_model.py"), *map(str, common), "--output_dir", str(one),
                             "--batch_size", "8"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **CPU})
    assert single.returncode == 0, single.stderr[-3000:]
    a, b, base = model_weights(one), model_weights(out), model_weights(model)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max((a[k] - base[k.removeprefix("bert.")]).abs().max().item() for k in a if k.removeprefix("bert.") in base)
    assert diff < 1e-4 < moved, (diff, moved)  # the same training, and training that did move the weights


@pytest.mark.slow
def test_two_processes_killed_resumed_by_monitor_match_one_process(tmp_path, reference_student, tiny_teacher, tiny_minilm,
                                                                    scifact_version, score_cache_env):
    """2 processes x batch 2 under the monitor, SIGKILLed at step 5 and resumed, vs 1 process x batch 4."""
    ref, _ = reference_student
    root, v = scifact_version
    out = tmp_path / "ddp-mon"
    args = list(STUDENT_ARGS)
    args[args.index("--batch_size") + 1] = "2"
    cmd = [*ACCELERATE, "--main_process_port", "29613", str(ROOT / "train_distillation_pipeline.py"), "--teacher_path",
           str(tiny_teacher), "--student_name", str(tiny_minilm), "--data_root", str(root), "--data_version", v,
           "--output_dir", str(out), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **CPU, **score_cache_env, "CROSSDISTILL_ALLOW_FAULTS": "1",
           "CROSSDISTILL_FAULTS": json.dumps({"kill_at_steps": [5], "once_dir": str(tmp_path / "once")})}
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_monitor.py"), "--output_dir", str(out), "--backoff", "0.2",
                           "--poll", "0.3", "--no_evaluate", "--stall_timeout", "120", "--", *cmd],
                          capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    decisions = [json.loads(x) for x in (out / "monitor.jsonl").read_text().splitlines() if '"decision"' in x]
    assert [d["decision"] for d in decisions] == ["restart", "completed"]
    assert "--resume" in decisions[0]["command"]
    assert sorted({s for s in [json.loads(x).get("step") for x in (out / "events.jsonl").read_text().splitlines()
                               if '"event": "step"' in x]}) == list(range(1, 13))
    losses = step_losses(out)
    first, second = [l for e, l in losses if e == 1], [l for e, l in losses if e == 2]
    assert sum(second) / len(second) < sum(first) / len(first)  # the loss decreases
    a, b = model_weights(ref), model_weights(out)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 2e-3, diff  # same global batches; only the per-process dropout streams differ


@pytest.mark.slow
def test_cross_device_negatives_two_processes_match_one(tmp_path, tiny_minilm, scifact_version):
    """--cross_device_negatives: 2 processes x 2 queries give the gradient of 1 process x 4 queries, because each
    process's queries see the other process's passages (gathered with gradients) as negatives."""
    from accelerate import Accelerator
    from ddp_gradient_check import gradient

    root, v = scifact_version
    val = root / v / "val.csv"
    proc = launch(29614, "tests/distill/ddp_gradient_check.py", tiny_minilm, val, tmp_path / "g2.pt", launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(tmp_path / "g2.pt")
    one = gradient(str(tiny_minilm), str(val), Accelerator(cpu=True))
    assert two.shape == one.shape
    assert torch.allclose(one, two, atol=1e-6, rtol=1e-4), (one - two).abs().max()
