#!/usr/bin/env bash
# One lent-GPU session, prepared to fit a short lease (about 8 minutes of commands):
#   1. a third fine-tune of the bundle's recipe with a learning-rate cooldown (issue 15),
#   2. the choice between it and the current float32 checkpoint on the validation crops
#      (data/sample/val, masks of seed 1: training photos, never the held-out set),
#   3. the held-out numbers of the new checkpoint (reported whatever step 2 decides),
#   4. bench/gpu.py (issue 10: torch CUDA float32/float16, rows path and channels first),
#   5. the gpu-marked tests.
# Decision rule, fixed before the run: the new checkpoint replaces the current one if, on the
# validation crops, its mean inpainting PSNR over the three buckets and its mean upscaling PSNR
# over x2/x3/x4 are both at least the current checkpoint's.
#
# Usage there: OUT=/some/dir bash scripts/gpu_session.sh   (needs data/sample, runs/demo-gpu2)
# The device image has torch but not open_clip, which the paper config's benchmark and the gpu
# tests import: copy it here first (an ignored folder, carried with the call), e.g.
#   mkdir -p .gpu/site && cp -r .venv/lib/python3*/site-packages/{open_clip,ftfy,wcwidth} .gpu/site/
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${OUT:-/tmp/out}
mkdir -p "$RES"
MINUTES=${MINUTES:-3.5}
RUN=${RUN:-runs/demo-gpu3}
PREV=${PREV:-runs/demo-gpu2/model.safetensors}
DEV=${DEVICE:-cuda}  # DEVICE=cpu LIMIT=2 MINUTES=0.1 WORKERS=2: a dry run of this script on a CPU
LIM=()
[ -n "${LIMIT:-}" ] && LIM=(--limit "$LIMIT")
export PYTHONUNBUFFERED=1
LOG="$RES/session.txt"

source scripts/device_env.sh
EVAL=(python3 -m sair_train.evaluate)

step() { echo; echo "== $* ($(date +%T))"; }
{
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'ort', ort.__version__, ort.get_available_providers())"

  step "1. fine-tune $MINUTES min from $PREV -> $RUN"
  OUT="$RUN" MINUTES="$MINUTES" FILL=onion BASE=lanczos SR_PROB=0.5 LR=2e-4 LR_STEP=5 \
      bash scripts/train_demo_gpu.sh --init "$PREV" 2>&1 | grep -v '"stage"' | tail -n 15
  cp "$RUN/model.safetensors" "$RES/model.safetensors" && cp "$RUN/log.jsonl" "$RES/log.jsonl"

  step "2. validation crops (seed 1): new against current"
  "${EVAL[@]}" "$RUN/model.safetensors" data/sample/val --seed 1 --second "$PREV" --name new \
      --second-name current --no-baselines --device "$DEV" "${LIM[@]}" --precision fp32 -o /tmp/ev/val >/dev/null 2>&1 \
      && cat /tmp/ev/val/results.md || echo "FAILED: validation"
  "${EVAL[@]}" "$RUN/model.safetensors" data/sample/val --seed 1 --second "$PREV" --name new \
      --second-name current --device "$DEV" "${LIM[@]}" --precision fp32 --sr -o /tmp/ev/val_sr >/dev/null 2>&1 \
      && cat /tmp/ev/val_sr/*.md || echo "FAILED: validation --sr"

  step "3. held-out (reported, not selected on)"
  "${EVAL[@]}" "$RUN/model.safetensors" data/sample/heldout --name new --no-baselines --device "$DEV" "${LIM[@]}" \
      --precision fp32 -o /tmp/ev/heldout >/dev/null 2>&1 && cat /tmp/ev/heldout/results.md || echo "FAILED: held-out"
  "${EVAL[@]}" "$RUN/model.safetensors" data/sample/heldout --name new --device "$DEV" "${LIM[@]}" \
      --precision fp32 --sr -o /tmp/ev/heldout_sr >/dev/null 2>&1 && cat /tmp/ev/heldout_sr/*.md \
      || echo "FAILED: held-out --sr"
} 2>&1 | tee "$LOG"

{
  step "4. bench/gpu.py"
  (cd bench && timeout 200 python3 gpu.py --sizes ${BENCH_SIZES:-1024 512} --device "$DEV")
  step "5. gpu tests"
  timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -n 15
} 2>&1 | tee "$RES/bench_gpu.md"
rm -rf "$SHIM"
