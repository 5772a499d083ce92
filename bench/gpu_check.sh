#!/usr/bin/env bash
# One prepared GPU check: the original's quick settings (`realtime_monitor.py --pipeline quick`) end to end on SciFact
# (prepare, teacher, student, evaluation), timed per stage, with samples/s, peak GPU memory and the final metrics in one JSON.
# Usage (on a GPU machine, from the repository root): bash bench/gpu_check.sh [out.json]
# A smoke test of the script itself on a CPU: TEACHER_EXTRA='--max_samples 16 --max_len 32' \
#   STUDENT_EXTRA='--max_samples 16 --max_len 32' EVAL_EXTRA='--rerank_k 2' bash bench/gpu_check.sh /tmp/gpu_check.json
#   (flags given after the preset's win)
# Budget: under 8 minutes on one H100/H200 (prepare ~5 s, teacher ~1-2 min, student ~1-2 min, evaluation ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-bench/results}/gpu_check.json}
mkdir -p "$(dirname "$OUT")"
PY=${PY:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! $PY -c "import crossdistill, torch, transformers, peft, sentence_transformers" 2>/dev/null; then
  $PY -m pip install -q -r requirements.txt
fi
work=$(mktemp -d)
t0=$(date +%s%N)
$PY prepare_data.py --source ../shared/data/scifact --data_version gpu_check --data_root "$work/data" \
  --num_negatives 4 --random_negatives 3 > "$work/prepare.log" 2>&1 || { tail -30 "$work/prepare.log"; exit 1; }
echo "prepare $(( ($(date +%s%N) - t0) / 1000000 ))" > "$work/times"  # milliseconds
# the quick preset as crossdistill/pipeline.py defines it (the one definition), under the monitor, evaluation included;
# the only additions: a teacher this short may rank worse than the student (the guard would stop the job), and the
# evaluation's baselines (BM25 and the starting student are added by the monitor; here also the teacher reranking)
$PY realtime_monitor.py --pipeline quick --data_version gpu_check --data_root "$work/data" --models_dir "$work/models" \
  --teacher_args "${TEACHER_EXTRA:-}" --student_args "--allow_weaker_teacher ${STUDENT_EXTRA:-}" --eval_output_dir "$work/eval" \
  --eval_args "--batch_size 128 --beir_dir ../shared/data/scifact --teacher_path $work/models/gpu_check/cross_encoder_teacher_quick --rerank_k 30 ${EVAL_EXTRA:-}" \
  > "$work/monitor.log" 2>&1 || { tail -40 "$work/monitor.log"; exit 1; }
ln -s models/gpu_check/cross_encoder_teacher_quick "$work/teacher"
ln -s models/gpu_check/bi_encoder_distilled_quick "$work/student"
$PY - "$work" "$OUT" <<'PY'
import json, sys, pathlib
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
times = {k: float(v) / 1000 for k, v in (l.split() for l in (work / "times").read_text().splitlines())}
def monitor_events(folder):
    return [json.loads(l) for l in (work / folder / "monitor.jsonl").read_text().splitlines()]
for stage in ("teacher", "student"):  # first launch to the completed decision (restarts included)
    ev = monitor_events(stage)
    times[stage] = next(e["time"] for e in ev if e["event"] == "decision" and e["decision"] == "completed") - ev[0]["time"]
ev = monitor_events("student")
times["evaluate"] = (next(e["time"] for e in ev if e["event"] == "evaluated")
                     - next(e["time"] for e in ev if e["event"] == "decision" and e["decision"] == "evaluate"))
def rate(folder):
    steps = [json.loads(l) for l in (work / folder / "events.jsonl").read_text().splitlines() if '"event": "step"' in l]
    return steps[-1]["samples_per_s"] if steps else None
ev = json.loads((work / "eval" / "bi_encoder_evaluation_results.json").read_text())
try:
    import torch
    gpu = {"name": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {"name": "none"}
except Exception:
    gpu = {"name": "unknown"}
res = {"gpu": gpu, "seconds": {k: round(v, 1) for k, v in times.items()},
       "total_seconds": round(sum(times.values()), 1),
       "teacher_samples_per_s": rate("teacher"), "student_samples_per_s": rate("student"),
       "peak_gpu_memory_gib": {s: json.loads((work / s / "metrics.json").read_text()).get("peak_gpu_memory_gib") for s in ("teacher", "student")},
       "retrieval": ev["retrieval"], "throughput": ev["throughput"],
       "scores": {k: ev[k] for k in ("avg_positive_score", "avg_negative_score", "avg_margin", "accuracy", "roc_auc")}}
out.write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
PY
