#!/usr/bin/env bash
# The package as a user installs it (issue #45): `pip install .` (not editable) into a fresh venv, then every console
# command and `--pipeline quick` (cut to a few rows) run from a folder outside the repository.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$(cd "$REPO/../shared/data" && pwd)"
WORK="$(mktemp -d /tmp/crossdistill-installed.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m venv "$WORK/venv"
grep -v '^-e \.' "$REPO/requirements.txt" | grep -v '^pytest\|^ruff' > "$WORK/deps.txt"
"$WORK/venv/bin/pip" install --disable-pip-version-check -q -r "$WORK/deps.txt" > "$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; exit 1; }
"$WORK/venv/bin/pip" install --disable-pip-version-check -q "$REPO" >> "$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; exit 1; }
cd "$WORK"  # outside the repository: only the installed package is importable here
BIN="$WORK/venv/bin"
"$BIN/python" -c "import crossdistill, sys; assert '$REPO' not in crossdistill.__file__, crossdistill.__file__; print('installed at', crossdistill.__file__)"
for cmd in crossdistill-prepare crossdistill-teacher crossdistill-teacher-scores crossdistill-distill crossdistill-evaluate \
           crossdistill-export crossdistill-monitor crossdistill-model-path; do
  "$BIN/$cmd" --help > /dev/null
done
"$BIN/crossdistill-prepare" --source "$DATA/scifact" --data_version sf --num_negatives 2 --random_negatives 0
SMALL="--max_samples 40 --max_val_samples 20 --max_len 64 --epochs 1"
"$BIN/crossdistill-monitor" --pipeline quick --data_version sf --teacher_args "$SMALL" \
    --student_args "$SMALL --allow_weaker_teacher" --eval_args "--batch_size 64" --eval_output_dir "$WORK/eval" --poll 1
test -f "$WORK/models/sf/bi_encoder_distilled_quick/done.json"
test -f "$WORK/eval/bi_encoder_evaluation_results.json"
"$BIN/crossdistill-teacher-scores" --teacher_path models/sf/cross_encoder_teacher_quick --data_version sf --K 4 \
    --max_samples 20 --output scores.jsonl
"$BIN/crossdistill-export" --model_path models/sf/bi_encoder_distilled_quick --formats onnx-int8
"$BIN/python" -m crossdistill.evaluate --model_path models/sf/bi_encoder_distilled_quick --data_version sf \
    --output_dir eval_int8 --backend onnx-int8 > /dev/null
echo "installed package: every command ran from $WORK"
