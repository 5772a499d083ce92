"""The entry points' typed settings: each config class generates its script's parser, owns its defaults, help and
checks; shared settings are declared once; a config never changes."""

import dataclasses

import pytest

from conftest import load_script
from crossdistill.core.errors import UsageError
from crossdistill.core.settings import flags_of
from crossdistill.data.config import PrepareConfig
from crossdistill.distill.config import StudentConfig
from crossdistill.evaluate.config import EvalConfig
from crossdistill.models.config import ExportConfig
from crossdistill.monitor.config import MonitorConfig
from crossdistill.teach.config import TeacherConfig
from crossdistill.teachers.config import ScoresConfig

SCRIPTS = {"prepare_data.py": PrepareConfig, "train_teacher_model.py": TeacherConfig,
           "train_distillation_pipeline.py": StudentConfig, "evaluate_final_model.py": EvalConfig,
           "realtime_monitor.py": MonitorConfig, "export_student.py": ExportConfig, "teacher_scores.py": ScoresConfig}


def test_each_script_parses_into_its_config_and_every_flag_is_a_field():
    for script, cls in SCRIPTS.items():
        parser = cls.parser()
        options = {o for a in parser._actions for o in a.option_strings if a.help != "==SUPPRESS=="} - {"-h", "--help"}
        assert options == set(flags_of(cls)), script
    t = load_script("train_teacher_model.py").parse_args(["--data_version", "x"])
    s = load_script("train_distillation_pipeline.py").parse_args(["--teacher_path", "t", "--output_dir", "o"])
    assert isinstance(t, TeacherConfig) and isinstance(s, StudentConfig)
    assert (t.lr, t.save_steps, t.log_steps, t.model_name) == (5e-5, 50, 5, "minilm-l6")
    # the recipe filled the loss settings the flags left unset; the scale and cache are resolved by the run
    assert (s.recipe, s.tau, s.infonce_weight, s.scale, s.score_cache) == ("ranking", 1.0, 1.0, None, None)
    assert load_script("train_distillation_pipeline.py").parse_args(
        ["--teacher_path", "t", "--output_dir", "o", "--recipe", "original", "--tau", "0.5"]).tau == 0.5  # a flag wins
    p = load_script("prepare_data.py").parse_args(["--source", "s", "--data_version", "v", "--negatives", "keep"])
    assert p.random_negatives == 0 and p.rank_range == (0, 100)
    m = load_script("realtime_monitor.py").parse_args(["--output_dir", "o", "--eval_args", "--bm25 --batch_size 8", "--",
                                                       "python", "x.py"])
    assert m.command == ("python", "x.py") and m.split("eval_args") == ["--bm25", "--batch_size", "8"]


def test_every_scripts_help_formats():
    """argparse expands each help with ``%``: a bare ``%`` in a setting's help (e.g. "98 %)") breaks ``--help`` alone,
    which no run uses (found by CI's installed-package check, 2026-12-08)."""
    for script, cls in SCRIPTS.items():
        text = cls.parser().format_help()  # raises ValueError on a bare %
        assert text.startswith("usage:") and "--help" in text, script


def test_shared_settings_are_declared_once():
    """--seed, --data_root/--data_version, --mining_model, --overwrite: one declaration each, inherited by every entry
    point that has the setting (the same dataclass Field)."""
    for name in ("seed", "data_root", "mining_model", "overwrite"):
        owners = [cls for cls in SCRIPTS.values() if name in cls.__dataclass_fields__]
        assert len(owners) >= 2, name
        assert len({id(cls.__dataclass_fields__[name]) for cls in owners}) == 1, name


def test_configs_are_frozen_and_checked():
    cfg = TeacherConfig.parse(["--data_version", "x"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert dataclasses.replace(cfg, lr=1.0).lr == 1.0 and cfg.lr == 5e-5
    for argv, fragment in ((["--epochs", "0"], "--epochs must be >= 1"), (["--lr=-1"], "--lr must be > 0"),
                           (["--resume", "--overwrite"], "contradict"), (["--data_version", "../x"], "must be a name")):
        with pytest.raises(UsageError, match=fragment):
            TeacherConfig.parse(argv)
    with pytest.raises(UsageError, match="--test_data .* or --data_version"):
        EvalConfig.parse(["--model_path", "m", "--output_dir", "o"])
    assert EvalConfig.parse(["--model_path", "m", "--output_dir", "o", "--data_version", "v"]).test_data.endswith(
        "v/test.csv")


def test_renamed_flags_keep_working_with_a_warning(capsys):
    """--gradient_accumulation_steps split a batch (Hugging Face's enlarges it): now --micro_batches, the old spelling
    warns and still works; prepare_data's --output_root is the --data_root of every other script."""
    cfg = TeacherConfig.parse(["--gradient_accumulation_steps", "4"])
    assert cfg.micro_batches == 4 and not hasattr(cfg, "gradient_accumulation_steps")
    assert "--gradient_accumulation_steps is deprecated" in capsys.readouterr().err
    p = PrepareConfig.parse(["--source", "s", "--data_version", "v", "--output_root", "elsewhere"])
    assert p.data_root == "elsewhere" and "use --data_root" in capsys.readouterr().err


def test_the_val_pool_setting_read_from_a_config(tmp_path, scifact_version):
    """The val pool: the prepared version's own corpus.jsonl (auto/corpus), the CSV's passages (csv), and a version
    prepared before corpus.jsonl existed whose BEIR folder is gone is refused under auto, never silently shrunk."""
    import json
    import shutil

    from crossdistill.data.versions import DataVersion
    from crossdistill.distill.validation import val_pool_passages

    root, v = scifact_version
    passages, info = val_pool_passages(DataVersion(root, v), "auto")
    assert len(passages) == 5183 and info["kind"] == "corpus" and info["source"].endswith("corpus.jsonl")
    assert val_pool_passages(DataVersion(root, v), "csv") == (None, {"kind": "csv"})
    (tmp_path / "plain").mkdir()
    plain = DataVersion(tmp_path, "plain")
    assert val_pool_passages(plain, "auto") == (None, {"kind": "csv"})  # no corpus: the CSV's passages
    with pytest.raises(UsageError, match="--val_pool corpus needs a corpus"):
        val_pool_passages(plain, "corpus")
    old = tmp_path / "old"  # an earlier layout: no corpus.jsonl, the BEIR source named by a relative path
    old.mkdir()
    shutil.copy(root / v / "prepare_config.json", old / "prepare_config.json")
    cfg = json.loads((old / "prepare_config.json").read_text())
    cfg["source"] = "../nowhere/scifact"
    (old / "prepare_config.json").write_text(json.dumps(cfg))
    for pool in ("auto", "corpus"):
        with pytest.raises(UsageError, match="which is not found"):
            val_pool_passages(DataVersion(tmp_path, "old"), pool)
    assert val_pool_passages(DataVersion(tmp_path, "old"), "csv")[0] is None

    cfg["source"] = str(json.loads((root / v / "prepare_config.json").read_text())["source"])  # absolute: resolves
    (old / "prepare_config.json").write_text(json.dumps(cfg))
    assert len(val_pool_passages(DataVersion(tmp_path, "old"), "auto")[0]) == 5183


def test_a_data_version_is_one_value_and_never_a_silent_default(scifact_version, tmp_path):
    """Issue #45: the prepared version's files come from one value; a run that names no version is refused."""
    from crossdistill.data.versions import DataVersion
    from crossdistill.distill.config import StudentConfig

    root, v = scifact_version
    version = DataVersion(root, v)
    assert version.split_file("train") == root / v / "train.csv" and version.corpus_file == root / v / "corpus.jsonl"
    assert version.prepare_config["source_type"] == "beir" and version.source.endswith("scifact")
    assert set(version.fingerprint()) == {"train.csv", "val.csv", "test.csv", "corpus.jsonl"}
    assert len(version.split("train", max_samples=20, seed=1)) <= 20
    assert DataVersion(tmp_path, "plain").corpus_file is None
    cfg = StudentConfig.parse(["--teacher_path", "t", "--output_dir", "o"])
    assert cfg.data_version is None
    with pytest.raises(UsageError, match="--data_version is required"):
        DataVersion.of(cfg)
    with pytest.raises(UsageError, match="must be a name"):
        DataVersion.of(StudentConfig.parse(["--teacher_path", "t", "--output_dir", "o", "--data_version", "../x"]))
