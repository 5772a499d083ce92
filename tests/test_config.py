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
    """``val_corpus`` reads the config and the prepared version's own ``prepare_config.json`` side by side."""
    from crossdistill.errors import UsageError
    from crossdistill.validation import val_corpus

    root, v = scifact_version
    parse = load_script("train_distillation_pipeline.py").parse_args
    base = ["--teacher_path", "t", "--output_dir", "o", "--data_root", str(root), "--data_version", v]
    assert len(val_corpus(StudentConfig.from_args(parse(base)))) == 5183  # auto: the BEIR corpus the data came from
    assert val_corpus(StudentConfig.from_args(parse(base + ["--val_pool", "csv"]))) is None
    (tmp_path / "plain").mkdir()
    plain = ["--teacher_path", "t", "--output_dir", "o", "--data_root", str(tmp_path), "--data_version", "plain"]
    assert val_corpus(StudentConfig.from_args(parse(plain))) is None  # auto without a BEIR source: the CSV's passages
    with pytest.raises(UsageError, match="--val_pool corpus needs data prepared from a BEIR folder"):
        val_corpus(StudentConfig.from_args(parse(plain + ["--val_pool", "corpus"])))
