"""Every command line in README.md's and docs/'s code blocks parses (a dry run of each script's argument parser),
so the documentation cannot drift from the flags again."""

import re
import shlex

import pytest

from conftest import ROOT, load_script

SCRIPTS = ("prepare_data.py", "train_teacher_model.py", "train_distillation_pipeline.py", "evaluate_final_model.py",
           "realtime_monitor.py", "export_student.py", "teacher_scores.py")


def commands(text: str) -> list[list[str]]:
    """Our scripts' argument lists from the ```bash blocks of a markdown text (continuations joined, '&&' split)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
            for part in line.split("&&"):
                if "..." in part or not part.strip():
                    continue
                words = shlex.split(part)
                for i, w in enumerate(words):
                    if w.endswith(SCRIPTS):
                        out.append([w.split("/")[-1], *words[i + 1:]])
                        break
    return out


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CASES = [(doc.name, c) for doc in DOCS for c in commands(doc.read_text(encoding="utf-8"))]


def test_readme_has_the_two_newcomer_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = text.split("```bash\n")[1].split("```")[0]  # the newcomer's first command: install + the CPU-sized job
    assert first.startswith("python3 -m venv .venv") and "realtime_monitor.py --pipeline cpu --data_version scifact" in first
    assert "realtime_monitor.py --pipeline default --data_version scifact" in text  # the GPU one beside it
    ci_test_command = next(x for x in (ROOT / ".ci" / "run").read_text().splitlines()  # CI runs the README's test
                           if x.startswith(".venv/bin/python -m pytest"))  # command
    assert ci_test_command.startswith(".venv/bin/python -m pytest") and f"HF_HUB_OFFLINE=1 {ci_test_command}\n" in text
    assert len([c for c in CASES if c[0] == "README.md"]) >= 5
    assert len(text.splitlines()) <= 150  # the front page; everything else is linked into docs/ (issue #37)
    assert "## Architecture" in text and "crossdistill/" in text.split("## Architecture")[1]


@pytest.mark.parametrize("doc, argv", CASES, ids=[f"{d}:{' '.join(a)[:60]}" for d, a in CASES])
def test_documented_command_parses(doc, argv):
    module = load_script(argv[0])
    try:
        module.parse_args(argv[1:])
    except SystemExit as exc:  # argparse's own refusal
        pytest.fail(f"{doc}: `{shlex.join(argv)}` does not parse (exit {exc.code})")


def test_documented_quick_commands_are_the_preset():
    """Where the docs spell the original's quick setting out stage by stage (its output folder ends in ``_quick``),
    those flags are exactly ``crossdistill.monitor.pipeline.PRESETS["quick"]``'s: the preset has one definition."""
    from crossdistill.monitor.pipeline import PRESETS

    def flags(words):  # the settings, without where the data and outputs are
        skip = {"--data_version", "--data_root", "--output_dir", "--teacher_path", "--model_name", "--student_name"}
        out, i = [], 0
        while i < len(words):
            if words[i] in skip:
                i += 2
                continue
            out.append(words[i])
            i += 1
        return out

    stage = {"train_teacher_model.py": "teacher", "train_distillation_pipeline.py": "student"}
    found = 0
    for doc, argv in CASES:
        out_dir = argv[argv.index("--output_dir") + 1] if "--output_dir" in argv else ""
        if argv[0] in stage and out_dir.rstrip("/").endswith("_quick"):
            assert flags(argv[1:]) == PRESETS["quick"][stage[argv[0]]], (doc, argv)
            found += 1
    assert found >= 2
