"""Issue #38, part 1: a folder holds the user's files too. The toolkit replaces exactly the files its manifest names
(``.crossdistill.json``'s ``files``), never another; an input inside an output folder is refused before anything is
written; an export replaces its own model-card section only."""

import json

import pytest

from conftest import SCIFACT, assert_usage_error, run_in_process


def _prepare(root, *extra):
    return run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "v", "--data_root", root,
                          "--num_negatives", "1", "--random_negatives", "0", *extra)


@pytest.mark.slow
def test_prepare_overwrite_keeps_the_users_files_and_refuses_an_input_inside(tmp_path):
    root = tmp_path / "data"
    assert _prepare(root).returncode == 0
    version = root / "v"
    owner = json.loads((version / ".crossdistill.json").read_text())
    assert {"train.csv", "val.csv", "test.csv", "corpus.jsonl", "prepare_config.json"} <= set(owner["files"])
    (version / "my_notes.md").write_text("why I split it this way")
    (version / "extra").mkdir()
    (version / "extra" / "labels.csv").write_text("query,passage\nq,p\n")
    proc = _prepare(root, "--overwrite", "--seed", "7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (version / "my_notes.md").read_text() == "why I split it this way"
    assert (version / "extra" / "labels.csv").is_file()
    assert json.loads((version / "prepare_config.json").read_text())["seed"] == 7
    assert "my_notes.md" not in json.loads((version / ".crossdistill.json").read_text())["files"]
    # the user's only copy of the labels inside the version folder: refused, nothing touched
    before = (version / "train.csv").read_bytes()
    proc = run_in_process("prepare_data.py", "--source", version / "extra" / "labels.csv", "--data_version", "v",
                          "--data_root", root, "--overwrite")
    assert_usage_error(proc, "--source", "replace an input")
    assert (version / "extra" / "labels.csv").is_file() and (version / "train.csv").read_bytes() == before


def test_a_users_file_named_like_an_output_is_never_replaced(tmp_path):
    from crossdistill.core.errors import UsageError
    from crossdistill.core.ownership import atomic_dir, mark_owner

    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "report.md").write_text("ours")
        mark_owner(tmp, "evaluation")
    (target / "report.md").unlink()
    owner = json.loads((target / ".crossdistill.json").read_text())
    (target / ".crossdistill.json").write_text(json.dumps({**owner, "files": []}))  # report.md is not ours any more
    (target / "report.md").write_text("the user's")
    try:
        with atomic_dir(target) as tmp:
            (tmp / "report.md").write_text("new")
            mark_owner(tmp, "evaluation")
    except UsageError as exc:
        assert "report.md" in str(exc) and "did not write" in str(exc)
    else:
        raise AssertionError("a user's file would have been replaced")
    assert (target / "report.md").read_text() == "the user's"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_publishing_keeps_files_the_user_added_even_during_the_run(tmp_path):
    from crossdistill.core.runs import claim_output_dir, publish

    out = tmp_path / "student"
    claim_output_dir(out, "student")
    staging = out / ".staging"
    staging.mkdir()
    (staging / "model.safetensors").write_text("v1")
    (staging / "adapter").mkdir()
    publish(staging, out, {"stage": "student"})
    (out / "NOTES.md").write_text("my notes")  # added after the first run
    claim_output_dir(out, "student")  # --overwrite: a second run takes the folder
    (out / "plots").mkdir()  # added while it trains
    staging.mkdir()
    (staging / "model.safetensors").write_text("v2")  # no adapter/ this time
    publish(staging, out, {"stage": "student"})
    assert (out / "model.safetensors").read_text() == "v2"
    assert not (out / "adapter").exists()  # the toolkit's stale output is removed
    assert (out / "NOTES.md").read_text() == "my notes" and (out / "plots").is_dir()  # the user's stay
    files = json.loads((out / ".crossdistill.json").read_text())["files"]
    assert "model.safetensors" in files and "NOTES.md" not in files and "plots" not in files


def test_evaluation_refuses_queries_or_qrels_inside_its_output(tmp_path, tiny_minilm, scifact_version):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (out / "qrels.tsv").write_text("q1\td1\t1\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "text": "a passage"}\n')
    root, v = scifact_version
    proc = run_in_process("evaluate_final_model.py", "--model_path", tiny_minilm, "--data_root", root, "--data_version", v,
                          "--corpus", corpus, "--queries",
                          out / "queries.jsonl", "--qrels", out / "qrels.tsv", "--output_dir", out, "--overwrite")
    assert_usage_error(proc, "--queries", "replace an input")
    assert (out / "queries.jsonl").is_file() and (out / "qrels.tsv").is_file()


def test_the_export_replaces_its_own_card_section_only():
    from crossdistill.models.export import replace_card_section

    card = "# Student\n\nintro\n\n## Serving (ONNX)\n\nold export\n\n## My deployment notes\n\nkeep me\n"
    new = replace_card_section(card, "## Serving (ONNX)\n\nnew export")
    assert new == "# Student\n\nintro\n\n## Serving (ONNX)\n\nnew export\n\n## My deployment notes\n\nkeep me\n"
    assert replace_card_section(new, "## Serving (ONNX)\n\nnew export") == new  # idempotent
    assert replace_card_section("# Student\n", "## Serving (ONNX)\n\nx") == "# Student\n\n## Serving (ONNX)\n\nx\n"


def test_evaluation_overwrite_keeps_the_users_notes(tmp_path, tiny_minilm, scifact_version):
    """The monitor always passes --overwrite to its evaluation: a user's notes or plots in that folder stay."""
    root, v = scifact_version
    small = tmp_path / "test.csv"
    import pandas as pd

    pd.read_csv(root / v / "test.csv").head(40).to_csv(small, index=False)
    out = tmp_path / "eval"
    args = ["--model_path", tiny_minilm, "--test_data", small, "--data_root", tmp_path / "none", "--output_dir", out,
            "--max_len", "32"]
    assert run_in_process("evaluate_final_model.py", *args).returncode == 0
    (out / "notes.md").write_text("compare with last week")
    proc = run_in_process("evaluate_final_model.py", *args, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "notes.md").read_text() == "compare with last week"
    assert (out / "bi_encoder_evaluation_results.json").is_file()
