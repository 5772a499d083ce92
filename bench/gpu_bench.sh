#!/usr/bin/env bash
# Issue #29's GPU measurements in one prepared call (about 9 minutes on one H200), one JSON back:
#   bash ../shared/device/pack.sh && bash bench/device_extra.sh          # here, once: the kit and the wheels it lacks
#   source .device/setup.sh && bash bench/gpu_bench.sh "$OUT"            # on the GPU machine (carry .device)
# Writes "$OUT/gpu_bench.json" (commit it as docs/results/gpu_bench.json) and "$OUT/gpu_bench.log".
# A smoke test of the script on a CPU: GPU_BENCH_ARGS="--tiny --model <a small model folder>" bash bench/gpu_bench.sh /tmp/gb
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
# ranx compiles its kernels once per machine: warm them before any timed stage (not part of a run's cost)
$PY -c "from crossdistill.metrics import ranking_metrics; ranking_metrics({'q': {'d': 1}}, {'q': {'d': 1.0}})" > /dev/null 2>&1
$PY bench/gpu_bench.py --deadline_s "${DEADLINE_S:-520}" --out "$out/gpu_bench.json" ${GPU_BENCH_ARGS:-}
