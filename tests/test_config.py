"""The stages' typed settings: the parsers and the dataclasses name the same settings, and a config never changes."""

import dataclasses
from argparse import Namespace

import pytest
from conftest import load_script

from crossdistill.config import StudentConfig, TeacherConfig, TrainingConfig


def test_every_flag_is_a_field_and_every_field_a_flag():
    teacher = load_script("train_teacher_model.py").parse_args(["--data_version", "x"])
    student = load_script("train_distillation_pipeline.py").parse_args(["--teacher_path", "t", "--output_dir", "o"])
    t, s = TeacherConfig.from_args(teacher), StudentConfig.from_args(student)
    assert t.to_dict() == vars(teacher) and s.to_dict() == vars(student)  # every value carried over, none added
    assert (t.lr, t.save_steps, t.log_steps, t.model_name) == (5e-5, 50, 5, "minilm-l6")
    # the recipe filled the loss settings before the config was built; the scale is resolved by the run
    assert (s.recipe, s.tau, s.infonce_weight, s.scale, s.score_cache) == ("ranking", 1.0, 1.0, None, None)
    shared = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert shared <= set(vars(teacher)) and shared <= set(vars(student))


def test_a_drifted_namespace_is_refused_and_a_config_cannot_change():
    student = load_script("train_distillation_pipeline.py").parse_args(["--teacher_path", "t", "--output_dir", "o"])
    with pytest.raises(ValueError, match=r"not in the config: \['brand_new_flag'\]"):
        StudentConfig.from_args(Namespace(**vars(student), brand_new_flag=1))
    del student.guard_k
    with pytest.raises(ValueError, match=r"not parsed: \['guard_k'\]"):
        StudentConfig.from_args(student)
    cfg = TeacherConfig.from_args(load_script("train_teacher_model.py").parse_args(["--data_version", "x"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert dataclasses.replace(cfg, lr=1.0).lr == 1.0 and cfg.lr == 5e-5


def test_the_val_pool_setting_read_from_a_config(tmp_path, scifact_version):
    """The val pool: the prepared version's own corpus.jsonl (auto/corpus), the CSV's passages (csv), and a version
    prepared before corpus.jsonl existed whose BEIR folder is gone is refused under auto, never silently shrunk."""
    import json
    import shutil

    from crossdistill.errors import UsageError
    from crossdistill.validation import val_pool_passages

    root, v = scifact_version
    passages, info = val_pool_passages(str(root), v, "auto")
    assert len(passages) == 5183 and info["kind"] == "corpus" and info["source"].endswith("corpus.jsonl")
    assert val_pool_passages(str(root), v, "csv") == (None, {"kind": "csv"})
    (tmp_path / "plain").mkdir()
    assert val_pool_passages(str(tmp_path), "plain", "auto") == (None, {"kind": "csv"})  # no corpus: the CSV's passages
    with pytest.raises(UsageError, match="--val_pool corpus needs a corpus"):
        val_pool_passages(str(tmp_path), "plain", "corpus")
    old = tmp_path / "old"  # an earlier layout: no corpus.jsonl, the BEIR source named by a relative path
    old.mkdir()
    shutil.copy(root / v / "prepare_config.json", old / "prepare_config.json")
    cfg = json.loads((old / "prepare_config.json").read_text())
    cfg["source"] = "../nowhere/scifact"
    (old / "prepare_config.json").write_text(json.dumps(cfg))
    for pool in ("auto", "corpus"):
        with pytest.raises(UsageError, match="which is not found"):
            val_pool_passages(str(tmp_path), "old", pool)
    assert val_pool_passages(str(tmp_path), "old", "csv")[0] is None
    cfg["source"] = str(json.loads((root / v / "prepare_config.json").read_text())["source"])  # absolute: resolves
    (old / "prepare_config.json").write_text(json.dumps(cfg))
    assert len(val_pool_passages(str(tmp_path), "old", "auto")[0]) == 5183
