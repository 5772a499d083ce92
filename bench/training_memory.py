#!/usr/bin/env python
"""Peak memory and step time of the two training stages at the original's quick settings, with and without
``--attention_dropout 0``.

Each run is the real script (``train_teacher_model.py`` / ``train_distillation_pipeline.py``) in a fresh process
on a seeded subset of SciFact, so its ``peak_rss_mib`` (metrics.json) is its own. Runs alternate between the
variants, ``--repeats`` times; the report gives medians and the ratios against the model's own dropout.

  python bench/training_memory.py --rows 160 --repeats 2

Why this exists (issue #16): the quick teacher (LoRA r16, batch 32, max_len 256) held 7.5-8 GB. With dropout
on the attention probabilities, PyTorch's scaled-dot-product attention on CPU takes its unfused path and keeps
every (heads x tokens x tokens) probability and dropout matrix for backward; at 0 it runs the fused kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossdistill.monitor.pipeline import PRESETS  # noqa: E402

VARIANTS = {"model's own (0.1)": [], "--attention_dropout 0": ["--attention_dropout", "0"]}


def _step_seconds(events: Path) -> float:
    """Median seconds per optimizer step between logged step events (start-up and validation excluded)."""
    steps = [json.loads(line) for line in events.read_text().splitlines() if '"event": "step"' in line]
    gaps = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(steps, steps[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def _run(cmd: list[str], out: Path) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"peak_rss_mib": metrics["peak_rss_mib"], "s_per_step": _step_seconds(out / "events.jsonl"),
            "wall_s": time.time() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_version", default="scifact", help="prepared data under --data_root")
    p.add_argument("--data_root", default="preprocessed")
    p.add_argument("--rows", type=int, default=160, help="training rows per run (--max_samples)")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if not (ROOT / a.data_root / a.data_version / "train.csv").is_file():
        sys.exit(f"no {a.data_root}/{a.data_version}/train.csv: run prepare_data.py --source ../shared/data/scifact "
                 f"--data_version {a.data_version} first")
    quick = PRESETS["quick"]
    common = ["--data_version", a.data_version, "--data_root", a.data_root, "--max_samples", str(a.rows),
              "--max_val_samples", "32", "--log_steps", "1", "--save_steps", "0"]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = Path(tmp) / "teacher_for_student"
        for r in range(a.repeats):
            for name, flags in VARIANTS.items():
                out = Path(tmp) / f"teacher{r}{len(flags)}"
                cmd = [sys.executable, "train_teacher_model.py", *quick["teacher"], *common, *flags, "--output_dir", str(out)]
                results.setdefault(("teacher", name), []).append(_run(cmd, out))
                if not teacher_dir.exists():
                    out.rename(teacher_dir)
            for name, flags in VARIANTS.items():
                out = Path(tmp) / f"student{r}{len(flags)}"
                # a few-step teacher is weaker than the student (the guard would refuse it): this measures memory and
                # speed, not quality
                cmd = [sys.executable, "train_distillation_pipeline.py", *quick["student"], *common, *flags,
                       "--teacher_path", str(teacher_dir), "--output_dir", str(out), "--allow_weaker_teacher"]
                results.setdefault(("student", name), []).append(_run(cmd, out))
    print(f"quick preset, {a.rows} rows, medians of {a.repeats}; teacher: LoRA r16, batch 32, max_len 256; "
          f"student: LoRA, batch 16, K 4, max_len 128")
    print("| stage | attention dropout | peak RSS MiB | s / step | RSS ratio | speed ratio |")
    print("|---|---|---|---|---|---|")
    for stage in ("teacher", "student"):
        base = None
        for name in VARIANTS:
            rows = results[(stage, name)]
            rss = statistics.median(x["peak_rss_mib"] for x in rows)
            sps = statistics.median(x["s_per_step"] for x in rows)
            base = base or (rss, sps)
            print(f"| {stage} | {name} | {rss:,.0f} | {sps:.2f} | {rss / base[0]:.2f}x | {base[1] / sps:.2f}x |")


if __name__ == "__main__":
    main()
