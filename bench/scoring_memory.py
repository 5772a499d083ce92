#!/usr/bin/env python
"""Where a scoring process's peak memory goes: the model loaded, then one batch of real SciFact pairs.

Each measurement is a fresh process (so ``ru_maxrss`` is its own): load a MiniLM-L6 cross-encoder folder with the
given attention implementation, record peak RSS, score one batch under ``torch.inference_mode``, record it again.
A third variant imports sentence-transformers first (what ``CrossEncoder.predict`` pays and our scorer does not).
Medians over ``--repeats`` interleaved runs.

  python bench/scoring_memory.py --batch_size 64 --max_len 256 --repeats 3

Why this exists (issue #16): it bounds what a peak-RSS ratio against sentence-transformers can reach on identical
work (same model, batch and max_len).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = {"sdpa": ("sdpa", False), "eager": ("eager", False), "sdpa + sentence-transformers imported": ("sdpa", True)}


def child(folder: str, attn: str, import_st: bool, batch_size: int, max_len: int) -> dict:
    import torch
    from inference_throughput import _workload
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if import_st:
        import sentence_transformers  # noqa: F401

    pairs, _ = _workload(batch_size, 0)
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_len, padding=True,
                return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attn).eval()
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(**batch)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"loaded_mib": loaded, "peak_mib": peak, "batch_mib": peak - loaded, "batch_s": secs,
            "tokens": int(batch["attention_mask"].sum())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/scoring_memory.json")
    p.add_argument("--child", nargs=3, metavar=("FOLDER", "ATTN", "IMPORT_ST"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.child[2] == "1", a.batch_size, a.max_len)))
        return
    from inference_throughput import make_teacher

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "teacher"
        make_teacher(folder, a.max_len)
        runs = {name: [] for name in VARIANTS}
        for _ in range(a.repeats):  # interleaved
            for name, (attn, import_st) in VARIANTS.items():
                cmd = [sys.executable, __file__, "--batch_size", str(a.batch_size), "--max_len", str(a.max_len),
                       "--child", str(folder), attn, "1" if import_st else "0"]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out.strip().splitlines()[-1]))
    report = {"setup": {"model": "all-MiniLM-L6-v2 cross-encoder (untrained head)", "batch_size": a.batch_size,
                        "max_len": a.max_len, "repeats": a.repeats}}
    for name, rs in runs.items():
        report[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        m = report[name]
        print(f"{name:40s} loaded {m['loaded_mib']:6.0f} MiB  +batch {m['batch_mib']:5.0f} MiB  "
              f"peak {m['peak_mib']:6.0f} MiB  {m['batch_s']:.2f} s")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
