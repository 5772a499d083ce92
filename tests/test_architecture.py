"""The package's shape, kept true (issue #37): the stages as sub-packages whose imports run one way, a few loose
modules, modules and functions that fit on a screen, and no ``sys.path`` manipulation outside ``bench/``.

The direction (each layer imports only those before it)::

    core, losses  <-  models  <-  data  <-  teachers  <-  evaluate  <-  teach  <-  distill  <-  monitor  <-  the scripts

``teachers`` (every kind of teacher behind one interface, the :class:`Teachers` object, their caches and the fusion)
lies below both stages and the evaluation: ``distill`` never imports ``teach``.

``losses`` (pure tensor functions) and ``core`` (settings, errors, files, events, the engine) import nothing else of
the package. Every import counts, a lazy one inside a function too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "crossdistill"
BELOW = {
    "core": set(),
    "losses": set(),
    "models": {"core"},
    "data": {"core", "models"},
    "teachers": {"core", "models", "data"},
    "evaluate": {"core", "models", "data", "teachers"},
    "teach": {"core", "losses", "models", "data", "teachers", "evaluate"},
    "distill": {"core", "losses", "models", "data", "teachers", "evaluate"},
    "monitor": {"core", "losses", "models", "data", "teachers", "evaluate", "teach", "distill"},
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 320, 60


def imported_layers(source: str, own: str) -> set[str]:
    """The sub-packages of crossdistill that ``source`` (a module of sub-package ``own``) imports, relative imports
    resolved against ``own``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["crossdistill", own][: 3 - node.level] if node.level <= 2 else []
                names = [".".join([*base, *([node.module] if node.module else [])])]
                if not node.module:
                    names = [".".join([*base, a.name]) for a in node.names]
            else:
                names = [node.module or ""]
                if node.module == "crossdistill":
                    names = [f"crossdistill.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "crossdistill" and len(parts) > 1:
                found.add(parts[1])
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    """Every import of a sub-package that its layer may not use, as 'file -> layer'."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if len(rel.parts) < 2:
            continue  # the package's __init__: imports nothing (checked below)
        own = rel.parts[0]
        for layer in sorted(imported_layers(path.read_text(encoding="utf-8"), own) - {own}):
            if layer not in BELOW.get(own, set()):
                bad.append(f"{rel} -> {layer}")
    return bad


def test_imports_run_one_way():
    assert layer_violations() == []


def test_an_upward_import_is_caught(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reader.py").write_text("def f():\n    from crossdistill.distill.train import train_student\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.py").write_text("from crossdistill.core import errors\nfrom ..evaluate import metrics\n")
    assert layer_violations(tmp_path) == ["data/reader.py -> distill", "models/m.py -> evaluate"]


def test_the_tree_is_the_stages():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert subpackages == sorted(BELOW), "a new sub-package needs its place in BELOW (and in README's Architecture)"
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py"]
    init = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(init))


def test_modules_and_functions_fit_on_a_screen():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if len(src.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{rel}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long_functions.append(f"{rel}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long_modules == [] and long_functions == []


def test_no_sys_path_manipulation_outside_bench():
    """The package is installed (pyproject.toml); tests reach it through pytest's configured pythonpath."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("bench", ".venv") or any(p.startswith(".") for p in rel.parts):
            continue
        text = path.read_text(encoding="utf-8")
        if "sys.path.insert" in text or "sys.path.append" in text:
            offenders.append(str(rel))
    assert offenders == [str(Path(__file__).relative_to(ROOT))]  # this file names them, in its check


def dotted_names(text: str) -> set[str]:
    """Every ``crossdistill.x.y`` written in ``text`` (file names such as ``crossdistill.egg-info`` aside)."""
    import re

    return {m.rstrip(".") for m in re.findall(r"crossdistill(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text)
            if not m.rstrip(".").endswith((".py", ".json", ".md", ".egg"))}


def resolves(name: str) -> bool:
    """Whether ``name`` is a module of the package, or an attribute (a class, a function, a constant) of one."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_name_in_code_help_and_docs_resolves():
    """Issue #45: a name such as ``crossdistill.teachers.fusion.build_soft_labels`` written in a docstring, a help text,
    a bench or a doc points to something that exists (moved modules leave no dead names behind)."""
    files = [*PACKAGE.rglob("*.py"), *(p for p in (ROOT / "tests").rglob("*.py") if p.name != "test_architecture.py"),
             *(ROOT / "bench").glob("*.py"),
             *(ROOT / "docs").glob("*.md"), ROOT / "README.md", *ROOT.glob("*.py")]
    dead = {name: str(f.relative_to(ROOT)) for f in files for name in dotted_names(f.read_text(encoding="utf-8"))
            if not resolves(name)}
    assert dead == {}


def test_a_dead_dotted_name_is_caught():
    assert dotted_names("see :func:`crossdistill.teach.scores.combine` and crossdistill.egg-info") == \
        {"crossdistill.teach.scores.combine"}
    assert not resolves("crossdistill.teach.scores.combine") and resolves("crossdistill.teachers.ensemble.combine")


def test_formats_of_earlier_versions_are_read_in_one_place():
    """Issue #45 (9): what earlier versions wrote to disk (file names, a checkpoint layout, a cache schema) is named
    only in crossdistill/core/legacy.py, which states the version that drops it."""
    from crossdistill.core import legacy

    assert legacy.DROP_AT == "1.0.0"
    names = ("lora_config.json", ".crossdistill-run", ".done.previous.json", '{"scores": ["k", "logit"]}',
             "parent / BEST")
    found = [f"{p.relative_to(ROOT)}: {n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "legacy.py"
             for n in names if n in p.read_text(encoding="utf-8")]
    assert found == []
