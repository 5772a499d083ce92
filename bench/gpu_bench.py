#!/usr/bin/env python
"""Every GPU measurement of issue #29 in one run, written to one JSON (``docs/results/gpu_bench.json``'s schema):

- ``pipeline_s`` / ``stage_s``: the default SciFact pipeline — README's commands at their defaults: prepare, teacher,
  student, then the evaluation the monitor runs (the version's corpus, the starting model and BM25 beside it) —
  and the default row's test nDCG@10 (``pipeline_test_ndcg@10``, to compare with ``default@42`` in quality.jsonl);
- ``ratio_vs_st`` / ``peak_gpu_gib``: ours ÷ sentence-transformers on identical work, samples/s, medians of
  ``--repeats``: teacher training (``CrossEncoderTrainer``), distillation (``SentenceTransformerTrainer`` +
  ``DistillKLDivLoss``), scoring (``CrossEncoder.predict``) and encoding (``SentenceTransformer.encode``), through
  ``bench/teacher_training_throughput.py``, ``distill_throughput.py`` and ``inference_throughput.py``;
- ``large``: XLM-R-large-size teacher and student steps (``bench/large_step.py``): MFU, tokens/s, peak memory.

Parts run in the order given by ``--parts`` until ``--deadline_s``; a part that would start after it is recorded as
skipped. ``--tiny`` shrinks every part (a smoke test of this script on a CPU).

  python bench/gpu_bench.py --out "$OUT/gpu_bench.json"                       # on the GPU (bench/gpu_bench.sh)
  python bench/gpu_bench.py --tiny --out /tmp/gpu_bench.json                  # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SCIFACT = str(ROOT.parent / "shared" / "data" / "scifact")


def _run(cmd: list[str], log: Path, timeout: float) -> float:
    """Run ``cmd`` (its output appended to ``log``); its seconds. A failure raises with the log's tail."""
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} exited {proc.returncode}: " + log.read_text()[-1500:])
    return time.time() - t0


def pipeline(a, work: Path, log: Path, left: float) -> dict:
    tiny_t = ["--max_samples", "40", "--max_len", "32", "--epochs", "1", "--max_val_samples", "20", "--model_name", a.model]
    tiny_s = ["--max_samples", "40", "--max_len", "32", "--epochs", "1", "--max_val_samples", "20", "--student_name", a.model,
              "--allow_weaker_teacher"]
    data = ["--data_root", work / "data", "--data_version", "scifact"]
    stage = {"prepare": _run([PY, "prepare_data.py", "--source", SCIFACT, *data], log, left)}
    stage["teacher"] = _run([PY, "train_teacher_model.py", *data, "--output_dir", work / "teacher",
                             *(tiny_t if a.tiny else [])], log, left)
    stage["student"] = _run([PY, "train_distillation_pipeline.py", *data, "--teacher_path", work / "teacher", "--output_dir",
                             work / "student", *(tiny_s if a.tiny else [])], log, left)
    sys.path.insert(0, str(ROOT))
    from crossdistill.monitor.commands import evaluation_command

    cmd = evaluation_command(work / "student", work / "eval")  # exactly what the monitor runs after the student
    stage["evaluate"] = _run(cmd, log, left)
    res = json.loads((work / "eval" / "bi_encoder_evaluation_results.json").read_text())
    scope = "corpus" if "corpus" in res["retrieval"]["student"] else "pool"
    teacher = json.loads((work / "teacher" / "metrics.json").read_text())
    student = json.loads((work / "student" / "metrics.json").read_text())
    return {"pipeline_s": round(sum(stage.values()), 1), "stage_s": {k: round(v, 1) for k, v in stage.items()},
            "pipeline_test_ndcg@10": res["retrieval"]["student"][scope]["ndcg@10"], "pipeline_scope": scope,
            "encoding_passages_per_s": res["throughput"]["student"].get("corpus_passages_per_s"),
            "peak_gpu_gib_training": {"teacher": teacher.get("peak_gpu_memory_gib"),
                                      "student": student.get("peak_gpu_memory_gib")}}


def ratios(a, work: Path, log: Path, left: float) -> dict:
    out, peaks = {}, {}
    rep = ["--repeats", str(a.repeats)]
    j = work / "teacher_training.json"
    size = ["--rows", "40", "--max_len", "32"] if a.tiny else ["--rows", "2000", "--max_len", "256"]
    _run([PY, "bench/teacher_training_throughput.py", *size, "--model", a.model, *rep, "--out", j], log, left)
    r = json.loads(j.read_text())
    out["teacher"] = round(r["ratio_speed_ours_over_st"], 3)
    peaks["teacher"] = {k: r["median_gpu"].get(k) for k in ("ours", "sentence_transformers")} if "median_gpu" in r else None
    j = work / "inference.json"
    size = ["--pairs", "64", "--texts", "64", "--max_len", "32"] if a.tiny else ["--pairs", "8192", "--texts", "8192",
                                                                                  "--batch_size", "512"]
    _run([PY, "bench/inference_throughput.py", *size, "--model", a.model, *rep, "--out", j], log, left)
    r = json.loads(j.read_text())
    for stage in ("scoring", "encoding"):
        out[stage] = round(r[stage]["ratio_speed_ours_over_st"], 3)
        peaks[stage] = r[stage].get("median_gpu")
    if (work / "teacher").is_dir():  # the pipeline's teacher scores the distillation's lists
        j = work / "distill.json"
        size = ["--queries", "16", "--K", "4", "--max_len", "32"] if a.tiny else ["--queries", "512", "--K", "16",
                                                                                  "--max_len", "256", "--batch_size", "16"]
        _run([PY, "bench/distill_throughput.py", "--teacher", work / "teacher", "--data_root", work / "data",
              "--data_version", "scifact", "--student", a.model, *size, *rep, "--out", j], log, left)
        r = json.loads(j.read_text())
        out["student"] = round(r["ratio_ours_over_st"], 3)
    return {"ratio_vs_st": out, "peak_gpu_gib": peaks}


def large(a, work: Path, log: Path, left: float) -> dict:
    j = work / "large.json"
    extra = ["--tiny", "--steps", "2", "--warmup", "1", "--batch_sizes", "2", "--max_len", "64"] if a.tiny else []
    _run([PY, "bench/large_step.py", *extra, "--out", j], log, left)
    r = json.loads(j.read_text())
    return {"large": {k: r[k] for k in ("teacher_mfu", "student_mfu", "tokens_per_s", "peak_gpu_gib")} | {"rows": r["rows"]}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="pipeline,ratios,large")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--deadline_s", type=float, default=540)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default="bench/results/gpu_bench.json")
    a = p.parse_args()
    import torch

    t0 = time.time()
    result = {"machine": (f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}" if torch.cuda.is_available()
                          else f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"), "tiny": a.tiny, "skipped": {}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    log = Path(a.out).with_suffix(".log")
    parts = {"pipeline": pipeline, "ratios": ratios, "large": large}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in a.parts.split(","):
            left = a.deadline_s - (time.time() - t0)
            if left < 30:
                result["skipped"][name] = "deadline"
            else:
                try:
                    result.update(parts[name](a, work, log, left))
                except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others
                    result["skipped"][name] = str(exc)[-500:]
            result["seconds"] = round(time.time() - t0, 1)
            Path(a.out).write_text(json.dumps(result, indent=1))  # after every part: a timeout keeps what is done
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
