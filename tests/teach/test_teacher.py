"""Stage 1: the cross-encoder teacher, trained for real on SciFact rows with a 2-layer MiniLM."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import assert_usage_error, run_in_process, run_script, same_weights
from crossdistill.data.versions import read_triplets
from crossdistill.models.resolve import apply_lora, resolve_model
from crossdistill.models.teacher import CrossEncoderTeacher, add_mean_pooling_layer, save_teacher


@pytest.fixture(scope="module")
def trained_teacher(tiny_teacher):
    return tiny_teacher


def _pairs(scifact_version, n=12):
    root, v = scifact_version
    df = read_triplets(root / v / "val.csv").head(n)
    return list(zip(df.anchor, df.positive)) + list(zip(df.anchor, df.negative))


def test_teacher_folder_contents(trained_teacher):
    names = {p.name for p in trained_teacher.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "adapter", "teacher_config.json", "training_args.json",
            "metrics.json", "events.jsonl", "done.json"} <= names
    assert {n for n in names if n.startswith(".")} == {".crossdistill.json"}  # the owner file only
    cfg = json.loads((trained_teacher / "teacher_config.json").read_text())
    assert cfg["use_lora"] and (cfg["r"], cfg["alpha"], cfg["dropout"], cfg["max_len"]) == (4, 8, 0.1, 48)
    assert {"query", "value"} <= set(cfg["target_modules"]) and "classifier" in cfg["modules_to_save"]
    assert cfg["query_prefix"] == "" and cfg["base_model"].endswith("minilm-2l")
    metrics = json.loads((trained_teacher / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and 0 < metrics["best"]["val_mrr"] <= 1
    assert {"val_bce", "val_accuracy", "val_mrr"} <= set(metrics["best"])
    # memory regression guard: this 2-layer LoRA run (batch 16, 48 tokens) peaks near 0.9 GB (torch and transformers
    # themselves are ~0.6 GB); the quick teacher once held 7.5 GB and a 64-row one 4.5 GB
    assert 200 < metrics["peak_rss_mib"] < 1600, metrics["peak_rss_mib"]
    events = [json.loads(line) for line in (trained_teacher / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert steps and {"step", "epoch", "loss", "lr", "samples_per_s", "time"} <= set(steps[-1])
    assert [e["event"] for e in events][0] == "start" and any(e["event"] == "eval" for e in events)
    assert (trained_teacher / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_crossencoder_and_automodel_load_the_saved_teacher(trained_teacher, scifact_version):
    from sentence_transformers import CrossEncoder

    pairs = _pairs(scifact_version)
    ours = CrossEncoderTeacher.load(trained_teacher).score(pairs)
    ce = CrossEncoder(str(trained_teacher), device="cpu", max_length=48)
    theirs = ce.predict(pairs, batch_size=8)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.min() >= 0 and ours.max() <= 1 and ours.std() > 0
    # a plain transformers load, with peft made unimportable
    code = ("import sys; sys.modules['peft'] = None\n"
            "from transformers import AutoModelForSequenceClassification as M\n"
            f"m = M.from_pretrained({str(trained_teacher)!r}); print(type(m).__name__, m.config.num_labels)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["BertForSequenceClassification", "1"]
    cfg = json.loads((trained_teacher / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3  # the 2-layer MiniLM plus the mean-pooling layer (--pooling mean, default)


def test_mean_pooling_layer_puts_layernormed_mean_in_the_first_token(tiny_minilm):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_minilm, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(tiny_minilm)
    batch = tok(["what lowers fever?", "protein folding"], ["Aspirin lowers fever and pain.", "A chain folds into its native shape."],
                padding=True, return_tensors="pt")
    before = model.config.num_hidden_layers
    add_mean_pooling_layer(model)
    assert model.config.num_hidden_layers == before + 1 == len(model.bert.encoder.layer)
    with torch.no_grad():
        hidden = model.bert(**batch, output_hidden_states=True).hidden_states
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden[-2] * m).sum(1) / m.sum(1)  # padding excluded, special tokens included (as sentence-transformers)
    expected = torch.nn.functional.layer_norm(mean, mean.shape[-1:])
    assert torch.nn.functional.cosine_similarity(expected, hidden[-1][:, 0]).min() > 0.99999
    assert (expected - hidden[-1][:, 0]).abs().max() < 0.05  # entries of unit variance: 0.3 % error at most


def test_a_teacher_folder_as_base_is_continued_not_re_headed(trained_teacher, scifact_version):
    """Continued training (e.g. at a longer max_len) starts from the saved teacher: same layers, same scores."""
    base = CrossEncoderTeacher.from_base(resolve_model(str(trained_teacher)), 48, "mean")
    assert base.model.config.num_hidden_layers == 3  # no second mean-pooling layer
    pairs = _pairs(scifact_version, 4)
    np.testing.assert_allclose(base.score(pairs), CrossEncoderTeacher.load(trained_teacher).score(pairs), atol=1e-6)


def test_mean_pooling_refuses_a_non_bert_encoder():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from crossdistill.core.errors import UsageError

    model = DistilBertForSequenceClassification(DistilBertConfig(n_layers=1, dim=32, hidden_dim=64, n_heads=2, num_labels=1))
    with pytest.raises(UsageError, match="--pooling cls"):
        add_mean_pooling_layer(model)


def test_lora_save_load_same_scores_head_included(tmp_path, tiny_minilm, scifact_version):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    teacher = CrossEncoderTeacher.from_base(resolve_model(str(tiny_minilm)), max_len=64)
    teacher.model, _ = apply_lora(teacher.model, 4, 8, 0.0, "SEQ_CLS", modules_to_save=["classifier", "pooler"])
    with torch.no_grad():  # move LoRA B and the head away from their initial values, as training would
        for name, p in teacher.model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    pairs = _pairs(scifact_version)
    in_memory = teacher.score(pairs)
    save_teacher(teacher, tmp_path, {"use_lora": True})
    loaded = CrossEncoderTeacher.load(tmp_path).score(pairs)
    np.testing.assert_allclose(loaded, in_memory, atol=1e-5)
    # the adapter alone, on a fresh base (plus its deterministic mean-pooling layer), gives the same scores too
    base = AutoModelForSequenceClassification.from_pretrained(tiny_minilm, num_labels=1)
    add_mean_pooling_layer(base)
    again = CrossEncoderTeacher(PeftModel.from_pretrained(base, tmp_path / "adapter"), teacher.tokenizer, 64)
    np.testing.assert_allclose(again.score(pairs), in_memory, atol=1e-5)
    # and the head really changed: a fresh head scores differently
    assert np.abs(CrossEncoderTeacher.from_base(resolve_model(str(tiny_minilm)), 64).score(pairs) - in_memory).max() > 1e-3


@pytest.mark.slow
def test_same_seed_same_weights_and_listwise(tmp_path, tiny_minilm, scifact_version):
    from safetensors.torch import load_file

    root, v = scifact_version
    outs = []
    for name in ("a", "b"):
        proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root, "--data_version", v,
                              "--output_dir", tmp_path / name, "--loss", "listwise", "--epochs", "1", "--batch_size", "4",
                              "--max_samples", "24", "--max_val_samples", "12", "--max_len", "48")
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(load_file(tmp_path / name / "model.safetensors"))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    assert json.loads((tmp_path / "a" / "teacher_config.json").read_text())["loss"] == "listwise"


# ----------------------------------------------------------------------------- bad input
def _version(tmp_path, train_bytes: bytes, val_ok=True):
    (tmp_path / "v").mkdir(parents=True, exist_ok=True)
    (tmp_path / "v" / "train.csv").write_bytes(train_bytes)
    (tmp_path / "v" / "val.csv").write_text("anchor,positive,negative\nq,p,n\n")
    return tmp_path


@pytest.mark.parametrize("content, fragment", [
    (b"anchor,positive\nq,p\n", "lacks column(s) negative"),
    (b"", "is empty"),
    (b"anchor,positive,negative\n", "no rows"),
    (b"anchor,positive,negative\nq,p,\nq2,p2,n2\n", "empty or NaN cell"),
    (b"anchor,positive,negative\nq,p,NaN\n", "empty or NaN cell"),
    ("anchor,positive,negative\nq,p,caf\u00e9\n".encode("latin-1"), "not valid UTF-8"),
])
def test_bad_csv(tmp_path, tiny_minilm, content, fragment):
    root = _version(tmp_path, content)
    proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root, "--data_version", "v",
                      "--output_dir", tmp_path / "out")
    assert_usage_error(proc, fragment)
    assert not (tmp_path / "out").exists()


def test_missing_data_version_and_nonempty_output(tmp_path, tiny_minilm, scifact_version):
    root, v = scifact_version
    proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root, "--data_version", "nope",
                      "--output_dir", tmp_path / "out")
    assert_usage_error(proc, "data version 'nope' not found", "prepare_data.py")
    assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root, "--data_version", v,
                      "--output_dir", tmp_path / "busy")
    assert_usage_error(proc, "--overwrite")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("flag, value, fragment", [
    ("--lr", "0", "--lr must be > 0"), ("--lr", "-1e-5", "--lr must be > 0"), ("--epochs", "0", "--epochs must be >= 1"),
    ("--lora_r", "0", "--lora_r must be >= 1"), ("--max_len", "4", "--max_len must be >= 8"),
    ("--pos_weight", "abc", "--pos_weight"), ("--batch_size", "0", "--batch_size must be >= 1"),
    ("--attention_dropout", "1", "--attention_dropout must be in [0, 1)"),
])
def test_bad_numbers(tmp_path, flag, value, fragment):
    proc = run_in_process("train_teacher_model.py", "--data_version", "x", "--output_dir", tmp_path / "out", f"{flag}={value}")
    assert_usage_error(proc, fragment)
    assert not (tmp_path / "out").exists()


def test_bad_model_name(tmp_path, scifact_version):
    root, v = scifact_version
    proc = run_in_process("train_teacher_model.py", "--model_name", tmp_path / "no_model", "--data_root", root,
                      "--data_version", v, "--output_dir", tmp_path / "out")
    assert_usage_error(proc, "does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_teacher_sigkill_then_resume_gives_identical_weights(tmp_path, tiny_teacher, tiny_minilm, scifact_version):
    """The tiny_teacher run again, SIGKILLed at step 5 (after the step-4 checkpoint), then --resume: same weights."""
    root, v = scifact_version
    out = tmp_path / "killed"
    args = ["--model_name", tiny_minilm, "--data_root", root, "--data_version", v, "--output_dir", out, "--epochs", "2",
            "--batch_size", "16", "--max_samples", "24", "--max_val_samples", "12", "--max_len", "48", "--use_lora",
            "--lora_r", "4", "--lora_alpha", "8", "--save_steps", "1"]
    faults = {"CROSSDISTILL_ALLOW_FAULTS": "1", "CROSSDISTILL_FAULTS": json.dumps({"kill_at_steps": [5]})}
    killed = run_script("train_teacher_model.py", *args, env=faults)
    assert killed.returncode == -9 and not (out / "done.json").exists()
    assert (out / "checkpoints" / "latest.json").is_file()
    resumed = run_in_process("train_teacher_model.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert same_weights(tiny_teacher, out)
    assert not (out / "checkpoints").exists()  # a finished teacher folder is a model, not a run
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "resume"] == [4]
    again = run_in_process("train_teacher_model.py", *args, "--resume")
    assert_usage_error(again, "already holds a finished run")
