#!/usr/bin/env bash
# One prepared run on a lent GPU machine: install the few wheels it lacks, run the gpu tests and
# the GPU benchmark. Usage there: bash bench/device_check.sh (writes logs under $OUT if set).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'ort', ort.__version__, ort.get_available_providers())" | tee -a "$OUT/gpu.txt"
python3 -c "import tensorrt" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt"
(cd bench && timeout 300 python3 gpu.py --sizes 512 1024 2>&1) | tee "$OUT/bench_gpu.md"
