#!/usr/bin/env bash
# One prepared GPU check: the original's quick settings end to end on SciFact (prepare, teacher, student,
# evaluation), timed per stage, with samples/s, peak GPU memory and the final metrics in one JSON.
# Usage (on a GPU machine, from the repository root): bash bench/gpu_check.sh [out.json]
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
stage() {  # name, command...
  local name=$1; shift
  local t0=$(date +%s%N)
  "$@" > "$work/$name.log" 2>&1 || { tail -30 "$work/$name.log"; exit 1; }
  echo "$name $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$work/times"  # milliseconds
}
stage prepare $PY prepare_data.py --source ../shared/data/scifact --data_version gpu_check --output_root "$work/data" \
  --num_negatives 4 --random_negatives 3
stage teacher $PY train_teacher_model.py --data_root "$work/data" --data_version gpu_check --output_dir "$work/teacher" \
  --epochs 1 --batch_size 32 --lr 2e-5 --use_lora --lora_r 16 --lora_alpha 32 --max_samples 2000
stage student $PY train_distillation_pipeline.py --data_root "$work/data" --data_version gpu_check --teacher_path "$work/teacher" \
  --output_dir "$work/student" --epochs 1 --batch_size 16 --lr 2e-5 --K 4 --tau 0.2 --contrastive_weight 0.3 \
  --negative_penalty_weight 0.4 --use_lora --max_len 128 --max_samples 2000 --allow_weaker_teacher
stage evaluate $PY evaluate_final_model.py --model_path "$work/student" --test_data "$work/data/gpu_check/test.csv" \
  --output_dir "$work/eval" --batch_size 128 --beir_dir ../shared/data/scifact --base_model minilm-l6 --bm25 \
  --teacher_path "$work/teacher" --rerank_k 30
$PY - "$work" "$OUT" <<'PY'
import json, sys, pathlib
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
times = dict(l.split() for l in (work / "times").read_text().splitlines())
def rate(folder):
    steps = [json.loads(l) for l in (work / folder / "events.jsonl").read_text().splitlines() if '"event": "step"' in l]
    return steps[-1]["samples_per_s"] if steps else None
ev = json.loads((work / "eval" / "bi_encoder_evaluation_results.json").read_text())
try:
    import torch
    gpu = {"name": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {"name": "none"}
except Exception:
    gpu = {"name": "unknown"}
res = {"gpu": gpu, "seconds": {k: round(float(v) / 1000, 1) for k, v in times.items()},
       "total_seconds": round(sum(float(v) for v in times.values()) / 1000, 1),
       "teacher_samples_per_s": rate("teacher"), "student_samples_per_s": rate("student"),
       "peak_gpu_memory_gib": {s: json.loads((work / s / "metrics.json").read_text()).get("peak_gpu_memory_gib") for s in ("teacher", "student")},
       "retrieval": ev["retrieval"], "throughput": ev["throughput"],
       "scores": {k: ev[k] for k in ("avg_positive_score", "avg_negative_score", "avg_margin", "accuracy", "roc_auc")}}
out.write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
PY
