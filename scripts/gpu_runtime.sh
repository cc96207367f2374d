#!/usr/bin/env bash
# One lent-GPU check of the device-resident runtime (issue 10), prepared to fit a short lease
# (about 6 minutes of commands):
#   1. bench/gpu.py on the paper widths (random weights): torch CUDA float32, float16 (rows path)
#      and float16 channels first, 1024² and 512², scales 1 and 2, with stages;
#   2. bench/gpu.py on the bundled model: torch CUDA against ONNX Runtime's CUDA provider (IO
#      binding) on its export, where onnxruntime-gpu is installed;
#   3. the gpu-marked tests (the ONNX Runtime CUDA parity test runs where onnxruntime-gpu is);
#   4. a torch profile of 1024² scale 2 float16, by graph.
#
# Usage there: OUT=/some/dir bash scripts/gpu_runtime.sh
# The device image has torch but neither open_clip (the paper config's semantic encoder, the gpu
# tests' small models) nor onnxruntime-gpu. Carry them:
#   mkdir -p .gpu/site && cp -r .venv/lib/python3*/site-packages/{open_clip,ftfy,wcwidth} .gpu/site/
#   onnxruntime-gpu (CUDA 13 build, 255 MB, over one transfer's limit): its package folder
#   (onnxruntime/ and its dist-info, less the TensorRT provider and the C library) as a
#   zstd-compressed tar (ORT_TAR, default /tmp/ort.tar.zst), sent in pieces and joined there;
#   unpacked with pyarrow's zstd stream, which the device image has.
# DEVICE=cpu BENCH_SIZES=64 PROFILE_SIZE=64: a dry run of the script's plumbing on a CPU;
# STEPS="1 3": only those steps.
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-/tmp/out}
mkdir -p "$RES"
DEV=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
ORT_TAR=${ORT_TAR:-/tmp/ort.tar.zst}
if [ -f "$ORT_TAR" ]; then
  mkdir -p /tmp/ortsite
  [ -d /tmp/ortsite/onnxruntime ] || python3 -c "
import sys, tarfile, pyarrow as pa
with pa.input_stream(sys.argv[1], compression='zstd') as f:
    tarfile.open(fileobj=f, mode='r|').extractall('/tmp/ortsite')" "$ORT_TAR"
  export PYTHONPATH="/tmp/ortsite${PYTHONPATH:+:$PYTHONPATH}"
fi
source scripts/device_env.sh
BUNDLE=sair_deploy/assets/sair-small-demo.safetensors
EXPORT=sair_deploy/assets/sair-small-demo-onnx

step() { echo; echo "== $* ($(date +%T))"; }
want() { [[ " ${STEPS:-1 2 3 4} " == *" $1 "* ]]; }
{
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  # torch first: it loads the CUDA 13 libraries (cuBLAS, cuDNN) that onnxruntime-gpu links to
  python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'ort', ort.__version__, ort.get_available_providers())"

  want 1 && step "1. bench/gpu.py, paper widths" && (cd bench && timeout 210 python3 gpu.py --sizes ${BENCH_SIZES:-1024 512} --device "$DEV")

  want 2 && step "2. bench/gpu.py, the bundled model: torch against ONNX Runtime CUDA" && (cd bench && timeout 90 python3 gpu.py --checkpoint "../$BUNDLE" --export "../$EXPORT" --no-channels-first --sizes ${BENCH_SIZES:-1024} --device "$DEV")

  want 3 && step "3. gpu tests" && timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu.py 2>&1 | tail -n 25

  want 4 && step "4. profile, 1024² scale 2 float16" && (cd bench && timeout 90 python3 gpu_profile.py --size ${PROFILE_SIZE:-1024} --scale 2 --pieces 262144 \
      --rows 30 --device "$DEV")
} 2>&1 | tee "$RES/bench_gpu.md"
rm -rf "$SHIM"
