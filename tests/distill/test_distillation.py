"""Stage 2 end to end with a 2-layer MiniLM teacher and student on SciFact rows: outputs, cache, guard,
exact resume after SIGKILL, out-of-memory recovery without skipping data, bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, STUDENT_ARGS, assert_usage_error, model_weights, run_in_process

COMMON = STUDENT_ARGS[:-3]  # without --allow_weaker_teacher --save_steps 2


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    return tiny_teacher


@pytest.fixture(scope="module")
def env(score_cache_env):
    return score_cache_env


def distil(out, teacher, student, data, env, *extra):
    root, v = data
    return run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--student_name", student,
                          "--data_root", root, "--data_version", v, "--output_dir", out, *COMMON, *extra, env=env)


@pytest.fixture(scope="module")
def straight(reference_student):
    return reference_student


def _weights(folder):
    return model_weights(folder)


@pytest.mark.slow
def test_student_folder_loads_without_peft_and_is_normalised(straight, tiny_minilm):
    out, _ = straight
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "modules.json", "config.json", "training_args.json", "events.jsonl", "done.json",
            "metrics.json", "distillation_config.json"} <= names
    code = ("import sys; sys.modules['peft'] = None\n"
            "from sentence_transformers import SentenceTransformer\n"
            f"m = SentenceTransformer({str(out)!r}, device='cpu')\n"
            "e = m.encode(['Cells divide.', 'Vitamin D lowers risk.', 'x'])\n"
            "import numpy as np; print(np.round(np.linalg.norm(e, axis=1), 5).tolist(), m.max_seq_length)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    norms, max_len = proc.stdout.strip().rsplit(" ", 1)
    assert json.loads(norms) == [1.0, 1.0, 1.0] and int(max_len) == 48
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert set(metrics["val_delta"]) >= {"val_mrr@10", "val_margin"}
    assert metrics["candidates"]["K"] == 4 and metrics["guard"]["guard_k"] == 20
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert {"step", "epoch", "loss", "lr", "samples_per_s", "time", "soft", "contrastive", "negative_penalty"} <= set(steps[0])
    assert steps[-1]["step"] == 12  # 24 queries / 4 per step x 2 epochs
    done = json.loads((out / "done.json").read_text())
    assert done["stage"] == "student" and "val_mrr@10" in done


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(straight, teacher, tiny_minilm, scifact_version, env, tmp_path):
    ref, _ = straight
    out = tmp_path / "killed"
    root, v = scifact_version
    cmd = [sys.executable, str(ROOT / "train_distillation_pipeline.py"), "--teacher_path", str(teacher), "--student_name",
           str(tiny_minilm), "--data_root", str(root), "--data_version", v, "--output_dir", str(out), *COMMON,
           "--allow_weaker_teacher", "--save_steps", "2"]
    slow = {**os.environ, **env, "HF_HUB_OFFLINE": "1", "CROSSDISTILL_ALLOW_FAULTS": "1",
            "CROSSDISTILL_FAULTS": json.dumps({"sleep_per_step": 0.5})}
    proc = subprocess.Popen(cmd, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 5 is logged (after the step-4 checkpoint, before step 6)
        log = out / "events.jsonl"
        if log.is_file() and any(json.loads(x).get("step") == 5 and json.loads(x)["event"] == "step"
                                 for x in log.read_text().splitlines()):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "done.json").exists()
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4
    # the run kept the best epoch; resuming it as a --keep last run is refused, nothing changes
    switched = run_in_process("train_distillation_pipeline.py", *cmd[2:], "--resume", "--keep", "last", env=env)
    assert_usage_error(switched, "started with --keep best", "resume it with --keep best")
    assert json.loads((out / "checkpoints" / "latest.json").read_text()) == latest
    # issue #26 11: settings that change what the run computes are refused, naming the flag and both values
    for flag, value, old in (("--K", "8", "4"), ("--max_samples", "60", "54"), ("--batch_size", "2", "4")):
        changed = [*cmd[2:]]
        changed[changed.index(flag) + 1] = value
        assert_usage_error(run_in_process("train_distillation_pipeline.py", *changed, "--resume", env=env),
                           f"written with {flag} {old}", f"this run has {value}")
    assert json.loads((out / "checkpoints" / "latest.json").read_text()) == latest
    _damaged_copies_refused_or_skipped(out, cmd, env, ref, tmp_path)
    resumed = run_in_process("train_distillation_pipeline.py", *cmd[2:], "--resume", env=env)  # the monitor test resumes in children
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _damaged_copies_refused_or_skipped(out, cmd, env, ref, tmp_path):
    """Issue #26, on copies of a killed run (checkpoints of steps 2 and 4): 13 a state.json moved to step 99999 (its
    manifest recomputed) is refused; 17 an rng.pt holding a pickle (manifest recomputed) is refused, not unpickled;
    16 a best.pt overwritten with zeros fails its manifest: the damaged checkpoint is skipped with a warning and the
    run resumes from step 2, ending bit-identical to the reference."""
    import hashlib
    import pickle
    import shutil

    def copy_with(name, change):
        run = tmp_path / name
        shutil.copytree(out, run)
        ckpt = run / "checkpoints" / "step-00000004"
        change(ckpt)
        manifest = json.loads((ckpt / "manifest.json").read_text())
        for f in manifest:
            manifest[f] = {"size": (ckpt / f).stat().st_size, "sha256": hashlib.sha256((ckpt / f).read_bytes()).hexdigest()}
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
        return [*cmd[2:cmd.index("--output_dir") + 1], str(run), *cmd[cmd.index("--output_dir") + 2:]]

    def far(ckpt):
        state = json.loads((ckpt / "state.json").read_text())
        (ckpt / "state.json").write_text(json.dumps({**state, "step": 99999}))

    proc = run_in_process("train_distillation_pipeline.py", *copy_with("far", far), "--resume", env=env)
    assert_usage_error(proc, "position outside this run", "step 99999")

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    proc = run_in_process("train_distillation_pipeline.py",
                          *copy_with("pickled", lambda c: (c / "rng.pt").write_bytes(pickle.dumps({"x": Payload()}))),
                          "--resume", env=env)
    assert_usage_error(proc, "refusing to unpickle", "rng.pt")
    assert not (tmp_path / "pwned").exists()
    zeros = copy_with("zeros", lambda c: None)
    best = tmp_path / "zeros" / "checkpoints" / "step-00000004" / "best.pt"
    best.write_bytes(bytes(best.stat().st_size))  # after the manifest: a damaged file
    proc = run_in_process("train_distillation_pipeline.py", *zeros, "--resume", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint step-00000004 skipped: best.pt does not match its manifest" in proc.stdout
    a, b = _weights(ref), _weights(tmp_path / "zeros")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_oom_recovered_with_micro_batches_no_sample_skipped(straight, teacher, tiny_minilm, scifact_version, env, tmp_path):
    ref, _ = straight
    faults = {"CROSSDISTILL_ALLOW_FAULTS": "1", "CROSSDISTILL_FAULTS": json.dumps({"oom_at_steps": [3], "oom_min_texts": 8})}
    proc = distil(tmp_path / "oom", teacher, tiny_minilm, scifact_version, {**env, **faults}, "--allow_weaker_teacher",
                  "--save_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(x) for x in (tmp_path / "oom" / "events.jsonl").read_text().splitlines()]
    ooms = [e for e in events if e["event"] == "oom"]
    assert ooms and ooms[0]["step"] == 3 and ooms[-1]["micro_batch_size"] <= 8
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, 13))  # every step ran, none skipped
    assert json.loads((tmp_path / "oom" / "metrics.json").read_text())["micro_batch_size"] <= 8
    # the same effective batch; only dropout masks differ (texts are grouped differently per forward)
    a, b = _weights(ref), _weights(tmp_path / "oom")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-3


@pytest.mark.parametrize("recipe, cross_device", [("original", False), ("original", True), ("ranking", False)])
def test_micro_batches_give_the_full_batch_gradient(tiny_minilm, scifact_version, recipe, cross_device):
    """Gradient caching: the gradient with 3 texts per forward equals the one-pass gradient (dropout off),
    with and without cross-device (here: in-batch) negatives."""
    from accelerate import Accelerator

    from crossdistill.data.candidates import build_candidates
    from crossdistill.data.versions import read_triplets
    from crossdistill.distill.batch import collate
    from crossdistill.distill.recipes import loss_settings
    from crossdistill.distill.step import forward_backward
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent

    root, v = scifact_version
    lists, _ = build_candidates(read_triplets(root / v / "val.csv").head(30), 4, "bm25", 0)
    assert len(lists) >= 3
    lists = lists[:3]
    teacher = torch.rand(3, 4)
    args = loss_settings(recipe, cross_device_negatives=cross_device)
    student = BiEncoderStudent.load(resolve_model(str(tiny_minilm)), 48)
    student.eval()
    acc = Accelerator(cpu=True)
    grads, losses = [], []
    for micro in (None, 3):
        student.zero_grad()
        out = forward_backward(student, collate(lists, [t[:len(c.passages)] for t, c in zip(teacher, lists)]), args, micro, 1, acc)
        losses.append(out["loss"].item())
        grads.append(torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6), (grads[0] - grads[1]).abs().max()
    if cross_device:  # the other queries' passages are extra negatives: the contrastive term changes
        args = dataclasses.replace(args, cross_device_negatives=False)
        student.zero_grad()
        plain = forward_backward(student, collate(lists, [t[:len(c.passages)] for t, c in zip(teacher, lists)]), args, None, 1,
                                 acc)
        assert plain["soft"].item() == pytest.approx(out["soft"].item(), abs=1e-7)
        assert plain["contrastive"].item() != pytest.approx(out["contrastive"].item(), abs=1e-4)


@pytest.mark.slow
def test_lora_student_and_teacher_scores_from_cache(straight, teacher, tiny_minilm, scifact_version, env, tmp_path):
    _, first = straight
    assert "teacher scoring" in first.stdout + first.stderr
    proc = distil(tmp_path / "lora", teacher, tiny_minilm, scifact_version, env, "--allow_weaker_teacher", "--use_lora",
                  "--lora_r", "4", "--lora_alpha", "8", "--epochs", "1", "--lr", "1e-3", "--keep", "last",
                  "--report_to", "tensorboard", "--recipe", "ranking")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # same teacher, same candidates as the reference run: every teacher score comes from the cache
    assert "teacher scoring" not in proc.stdout + proc.stderr
    tstats = json.loads((tmp_path / "lora" / "metrics.json").read_text())["teacher_scores"]
    assert tstats["scored_now"] == 0 and tstats["from_cache"] == tstats["distinct_pairs"] > 0
    cfg = json.loads((tmp_path / "lora" / "distillation_config.json").read_text())
    assert cfg["use_lora"] and cfg["lora_r"] == 4
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    assert list((tmp_path / "lora" / "runs").rglob("events.out.tfevents*"))  # training curves for TensorBoard
    card = (tmp_path / "lora" / "README.md").read_text()
    assert "SentenceTransformer(" in card and "recipe" in card  # the model card
    base, tuned = _weights(tiny_minilm), _weights(tmp_path / "lora")
    changed = [k for k in base if k in tuned and not torch.equal(base[k], tuned[k])]
    # --keep last publishes epoch 1 whatever val says: the merged LoRA weights differ from the base
    metrics = json.loads((tmp_path / "lora" / "metrics.json").read_text())
    assert metrics["kept"] == "last" and metrics["best_epoch"] == 1 and len(changed) > 0
    assert json.loads((tmp_path / "lora" / "done.json").read_text())["val_mrr@10"] == metrics["history"][1]["val_mrr@10"]


@pytest.mark.slow
def test_pseudo_queries_join_the_lists_and_the_teacher_scores_them(straight, teacher, tiny_minilm, scifact_version, env,
                                                                   tmp_path):
    """Issue #35: --pseudo_queries N adds N teacher-labelled lists cut from the training passages."""
    ref = json.loads((straight[0] / "metrics.json").read_text())
    proc = distil(tmp_path / "p", teacher, tiny_minilm, scifact_version, env, "--allow_weaker_teacher", "--epochs", "1",
                  "--recipe", "ranking", "--pseudo_queries", "6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pseudo-queries: 6 of 6 asked" in proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert metrics["candidates"]["pseudo"] == {"requested": 6, "pseudo_queries": 6,
                                              "passages_without_a_query": metrics["candidates"]["pseudo"]["passages_without_a_query"]}
    # the labelled lists are the reference run's; 6 more lists were scored by the teacher (4 passages each, all new)
    assert metrics["candidates"]["queries"] == ref["candidates"]["queries"]
    assert metrics["teacher_scores"]["distinct_pairs"] == ref["teacher_scores"]["distinct_pairs"] + 6 * 4
    assert metrics["steps"] == -(-(ref["candidates"]["queries"] + 6) // 4)  # one epoch, batch 4
    assert json.loads((tmp_path / "p" / "training_args.json").read_text())["pseudo_queries"] == 6


def test_weaker_teacher_is_refused(teacher, tiny_minilm, scifact_version, env, tmp_path):
    proc = distil(tmp_path / "refused", teacher, tiny_minilm, scifact_version, env)
    # this 1-epoch, 24-row teacher is weaker than a pretrained MiniLM student
    assert_usage_error(proc, "teacher ranks worse than the student", "--allow_weaker_teacher")
    assert "vs" in proc.stderr and not (tmp_path / "refused").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--K", "1"], "--K must be >= 2"), (["--tau=0"], "--tau must be > 0"), (["--tau=-1"], "--tau must be > 0"),
    (["--contrastive_weight=-0.1"], "--contrastive_weight must be between 0 and 1000"),
    (["--negative_penalty_weight=-1"], "--negative_penalty_weight must be between 0 and 1000"),
])
def test_bad_numbers(tmp_path, flags, fragment):
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tmp_path, "--output_dir", tmp_path / "o", *flags)
    assert_usage_error(proc, fragment)
    assert not (tmp_path / "o").exists()


def test_bad_teacher_and_student(tmp_path, teacher, tiny_minilm, scifact_version, env):
    root, v = scifact_version
    args = ["--data_root", root, "--data_version", v, "--output_dir", tmp_path / "o"]
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", tmp_path / "none", *args)
    assert_usage_error(proc, "does not exist")
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--in_batch_kl_weight", "1", *args)
    assert_usage_error(proc, "--in_batch_kl_weight", "needs bi-encoder teachers", "holds a cross-encoder")
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--student_name", tmp_path / "nothing", *args)
    assert_usage_error(proc, "does not exist")
    assert not (tmp_path / "o").exists()


def test_incompatible_checkpoint_is_refused_clearly(tmp_path, tiny_minilm):
    from crossdistill.core.checkpoint import find_latest, load_checkpoint, save_checkpoint
    from crossdistill.core.errors import UsageError
    from crossdistill.core.training import linear_schedule, make_optimizer
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent

    def setup(lora):
        s = BiEncoderStudent.load(resolve_model(str(tiny_minilm)), 32)
        if lora:
            s.add_lora(4, 8, 0.0)
        opt = make_optimizer(s, 1e-4, None, ())
        return s, opt, linear_schedule(opt, 10, 0.1)

    full = setup(False)
    save_checkpoint(tmp_path, *full, {"step": 3})
    lora = setup(True)
    with pytest.raises(UsageError, match="does not match this model and settings"):
        load_checkpoint(find_latest(tmp_path)[0], *lora)


def test_similarities_and_losses_stay_fp32_under_bf16_autocast():
    """e5-like embeddings (cosines in a band ~0.02 wide) at scale 100: the loss computed inside a bf16 autocast must
    be the fp32 loss exactly (it was computed in bf16 by the one-pass path, while gradient caching used fp32)."""
    import torch.nn.functional as F

    from crossdistill.distill.batch import Batch
    from crossdistill.distill.recipes import loss_settings
    from crossdistill.distill.step import batch_loss

    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 384, generator=g)
    q = F.normalize(base + 0.08 * torch.randn(4, 384, generator=g), dim=-1)
    p = F.normalize(base + 0.08 * torch.randn(12, 384, generator=g), dim=-1)
    index = torch.arange(12).view(4, 3)
    mask = torch.ones(4, 3, dtype=torch.bool)
    positive = torch.zeros(4, 3, dtype=torch.bool)
    positive[:, 0] = True
    soft = torch.randn(4, 3, generator=g)
    keys = torch.arange(12)
    settings = loss_settings("ranking", scale=100.0)
    cos = q @ p.T
    assert cos.max() - cos.min() < 0.05  # the narrow band of e5's cosines
    batch = Batch([""] * 4, [""] * 12, index, mask, soft, positive)
    plain = batch_loss(q, p, batch, settings, keys, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (q @ p.T).dtype == torch.bfloat16  # what autocast does to a similarity left inside it
        mixed = batch_loss(q, p, batch, settings, keys, 1)
    assert mixed["loss"].dtype == torch.float32
    for k in ("loss", "soft", "infonce"):
        assert torch.equal(plain[k], mixed[k]), (k, plain[k], mixed[k])


def test_one_pass_and_gradient_caching_agree_under_bf16(tiny_minilm, scifact_version):
    """Both exact step paths under CPU bf16 autocast: the same loss (fp32 similarities in both)."""
    from accelerate import Accelerator

    from crossdistill.data.candidates import build_candidates
    from crossdistill.data.versions import read_triplets
    from crossdistill.distill.batch import collate
    from crossdistill.distill.recipes import loss_settings
    from crossdistill.distill.step import forward_backward
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent

    root, v = scifact_version
    lists = build_candidates(read_triplets(root / v / "val.csv").head(30), 4, "bm25", 0)[0][:3]
    soft = torch.rand(3, 4)
    student = BiEncoderStudent.load(resolve_model(str(tiny_minilm)), 48)
    student.eval()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # this worker's earlier tests set up a full-precision one
    try:
        acc = Accelerator(cpu=True, mixed_precision="bf16")
        losses = []
        for micro in (None, 3):
            student.zero_grad()
            batch = collate(lists, [t[:len(c.passages)] for t, c in zip(soft, lists)])
            losses.append(forward_backward(student, batch, loss_settings("ranking", scale=100.0), micro, 1, acc)["loss"].item())
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    # the embeddings themselves come from bf16 matmuls padded per pass; the loss on them is fp32 in both paths
    assert losses[0] == pytest.approx(losses[1], rel=2e-3, abs=2e-3)


def test_pretokenised_batches_are_the_tokenizers_own(tiny_minilm, scifact_version):
    """Token ids computed once before the loop: a batch padded from the cache is exactly what the tokenizer gives,
    and the embeddings are bit-identical."""
    from crossdistill.data.versions import read_triplets
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent

    root, v = scifact_version
    df = read_triplets(root / v / "val.csv").head(20)
    texts = list(dict.fromkeys(list(df["anchor"]) + list(df["positive"])))
    student = BiEncoderStudent.load(resolve_model(str(tiny_minilm)), 48)
    student.eval()
    plain = student.st.preprocess(texts[:9])
    with torch.no_grad():
        before = student.embed(texts[:9])
    student.pretokenize(texts)
    cached = student._features(texts[:9], "passage")
    assert cached.keys() == plain.keys() and all(torch.equal(cached[k], plain[k]) for k in plain if k != "modality")
    with torch.no_grad():
        assert torch.equal(student.embed(texts[:9]), before)
    assert student._features(["a text never seen"], "passage")["input_ids"].shape[0] == 1  # falls back to the tokenizer
