#!/usr/bin/env python
"""The shape of the code, measured (issue #28): longest functions, biggest modules, library functions that take an
argparse Namespace, flags defined in more than one parser.

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


def _files(rev: str | None) -> dict[str, str]:
    if rev is None:
        paths = [p.relative_to(ROOT).as_posix() for p in (ROOT / "crossdistill").rglob("*.py")] + list(SCRIPTS)
        return {p: (ROOT / p).read_text(encoding="utf-8") for p in paths if (ROOT / p).is_file()}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    wanted = [n for n in names if (n.startswith("crossdistill/") and n.endswith(".py")) or n in SCRIPTS]
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default=None, help="a git revision (default: the working tree)")
    a = p.parse_args()
    print(json.dumps(measure(_files(a.rev)), indent=1))


if __name__ == "__main__":
    main()
