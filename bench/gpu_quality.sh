#!/usr/bin/env bash
# The quality runs of issue #13 (and the GPU numbers of #16) in one prepared call on a GPU machine:
#   source .device/setup.sh && bash bench/gpu_quality.sh "$OUT" default@42 default@43 ... (jobs of bench/quality.py)
# Writes into the given folder: quality.jsonl (one row per job), quality.log, gpu.txt, and gpu_check.json when
# time is left (QUICK_AFTER_S: run bench/gpu_check.sh only if the quality jobs ended within this many seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
t0=$(date +%s)
$PY bench/quality.py --work /tmp/quality --out "$out/quality.jsonl" --deadline_s "${DEADLINE_S:-400}" "$@" 2>&1 \
  | tr '\r' '\n' | grep --line-buffered -v -E "it/s\]|s/it\]|^ *$" > "$out/quality.log"
echo "quality jobs: $(( $(date +%s) - t0 )) s"
grep "^== \|Error\|error:" "$out/quality.log" | tail -40
if [ $(( $(date +%s) - t0 )) -lt "${QUICK_AFTER_S:-0}" ]; then
  bash bench/gpu_check.sh "$out/gpu_check.json" > "$out/gpu_check.log" 2>&1; tail -5 "$out/gpu_check.log"
fi
