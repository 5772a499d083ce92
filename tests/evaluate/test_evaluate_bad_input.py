"""Hostile input against the evaluation: folders that are not its own, test data of another version, garbage ONNX
models. Each test names its issue (#26, #38)."""

import json
import shutil

import pytest

from conftest import (
    assert_usage_error,
    run_in_process,
    snapshot,
    untouched,
    user_folder_with_report,
)


# --------------------------------------------------------------------------- 1-4: a folder is ours only for its kind
def test_evaluation_overwrite_never_takes_a_users_folder_or_another_kind(tmp_path, tiny_minilm, tiny_teacher,
                                                                        scifact_version):
    """Issue #26: 1: a report.md beside a user's thesis is not an evaluation folder; 2: the evaluated model and a teacher are
    never an evaluation's output."""
    root, v = scifact_version
    test_csv = root / v / "test.csv"
    mine = tmp_path / "results"
    files = user_folder_with_report(mine)
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", test_csv, "--output_dir",
                          mine, "--overwrite")
    assert_usage_error(proc, "did not write")
    assert untouched(mine, files)
    model = tmp_path / "model"
    shutil.copytree(tiny_minilm, model)
    before = snapshot(model)
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", model, "--test_data", test_csv,
                                      "--output_dir", model, "--overwrite"), "--output_dir", "is --model_path")
    assert snapshot(model) == before
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    before = snapshot(teacher)
    assert_usage_error(run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--test_data", test_csv,
                                      "--output_dir", teacher, "--overwrite"), "holds a teacher folder")
    assert snapshot(teacher) == before


def test_test_data_of_another_version_is_refused(scifact_version, tiny_minilm, tmp_path):
    """Issue #38."""
    root, v = scifact_version
    other = tmp_path / "data"
    shutil.copytree(root / v, other / "other")
    shutil.copytree(root / v, other / v)
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--data_root", other, "--data_version", v,
                          "--test_data", other / "other" / "test.csv", "--output_dir", tmp_path / "e")
    assert_usage_error(proc, "belongs to the data version other", "--data_version other")
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_a_student_is_not_scored_on_a_version_prepared_again(reference_student, scifact_version, tmp_path):
    """Issue #38: Its data fingerprint is recorded when it is published; a re-split version of the same name is refused."""
    student, _ = reference_student
    recorded = json.loads((student / "distillation_config.json").read_text())["data_fingerprint"]
    assert {"train.csv", "val.csv", "test.csv"} <= set(recorded)
    root, v = scifact_version
    again = tmp_path / "data"
    shutil.copytree(root / v, again / v)
    test = again / v / "test.csv"
    lines = test.read_text().splitlines(keepends=True)
    test.write_text("".join(lines[:1] + lines[1:][::-1]))  # the same rows in another order: a new split file
    proc = run_in_process("evaluate_final_model.py", "--model_path", student, "--data_root", again, "--data_version", v,
                          "--output_dir", tmp_path / "e")
    assert_usage_error(proc, "was prepared again", "test.csv")
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- 5: tracebacks become one line
def _student_copy(tmp_path, tiny_minilm, name="student"):
    from crossdistill.core.ownership import mark_owner

    folder = tmp_path / name
    shutil.copytree(tiny_minilm, folder)
    mark_owner(folder, "student")
    return folder


def test_a_garbage_onnx_model_in_evaluation_is_one_line(tmp_path, tiny_minilm, scifact_version):
    """Issue #38."""
    student = _student_copy(tmp_path, tiny_minilm)
    (student / "onnx").mkdir()
    (student / "onnx" / "model.onnx").write_bytes(b"not a model")
    root, v = scifact_version
    proc = run_in_process("evaluate_final_model.py", "--model_path", student, "--data_root", root, "--data_version", v,
                          "--output_dir", tmp_path / "e", "--backend", "onnx")
    assert_usage_error(proc, "model.onnx", "export it again")
    assert not (tmp_path / "e").exists()
