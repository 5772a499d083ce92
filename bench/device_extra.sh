#!/usr/bin/env bash
# After ../shared/device/pack.sh: the wheels bench/gpu_bench.sh needs that the GPU image lacks (sentence-transformers'
# trainers need `datasets`; the image has pyarrow, pandas, fsspec, xxhash, requests, tqdm, huggingface-hub), into
# .device/whl, which .device/setup.sh installs. About 1 MB more of the 64 MiB the working tree may carry.
set -euo pipefail
[ -d .device/whl ] || { echo "run bash ../shared/device/pack.sh first (from the project root)"; exit 2; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .device/whl "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19"
du -sh .device
