#!/usr/bin/env bash
# Train the bundled demo model's recipe on one GPU for a fixed number of minutes.
#
# Config: sair-small --no-semantic (the LIIF ablation), the in-graph fill FILL under the holes with
# AIR predicting a residual over it, a BASE (bicubic) resampled base under that residual at
# scales > 1, an SSIM term, super-resolution samples (downsampled like a user's image), colour
# jitter and LaMa-style generated masks, on data/sample/train (python scripts/make_sample_data.py).
# No validation set: the held-out set (data/sample/heldout) is for sair-eval only, never seen here.
# Checkpoints (model.safetensors, state.pt) are written atomically every CKPT_EVERY steps and at
# the end, so an interrupted run leaves a usable model; `sair-train --resume OUT` continues it.
#
# Runs with no network and only what `pip install -e .[train]` gives; without an install it
# imports this checkout's packages through a temporary shim folder.
#
# Usage: [MINUTES=7] [DEVICE=cuda] [OUT=runs/demo-gpu] [FILL=biharmonic] [BASE=bicubic]
#        [WORKERS=12] [BATCH=32] bash scripts/train_demo_gpu.sh [extra sair-train options]
# BASE= (empty) leaves the config's base alone (for a sair-deploy without the base option).
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/demo-gpu}
DATA=${DATA:-data/sample/train}
FILL=${FILL:-biharmonic}
BASE=${BASE-bicubic}
WORKERS=${WORKERS:-12}       # data loading is the bottleneck on a GPU host: 12 of 16 cores
BATCH=${BATCH:-32}
SIZE=${SIZE:-128}
QUERIES=${QUERIES:-1024}
LR=${LR:-4e-4}
LR_STEP=${LR_STEP:-1000}     # epochs between halvings (1000: constant over a short run)
REPEAT=${REPEAT:-64}         # passes over the ~66 images per epoch
SR_PROB=${SR_PROB:-0.3}      # super-resolution samples (known pixels, S in [1, 4])
SCALE_PROB=${SCALE_PROB:-0.3}  # inpainting samples queried at a scale > 1
SSIM_WEIGHT=${SSIM_WEIGHT:-0.5}
JITTER=${JITTER:-0.2}
CKPT_EVERY=${CKPT_EVERY:-200}
SEED=${SEED:-0}

if [ ! -d "$DATA" ] || [ -z "$(ls -A "$DATA" 2>/dev/null)" ]; then
  echo "error: no training images in $DATA; run python scripts/make_sample_data.py first" >&2
  exit 2
fi

if command -v sair-train >/dev/null 2>&1 && python3 -c "import sair_train" 2>/dev/null; then
  TRAIN=(sair-train)
else  # not installed: import this checkout's packages by their installed names
  SHIM=$(mktemp -d)
  trap 'rm -rf "$SHIM"' EXIT
  ln -s "$PWD/train" "$SHIM/sair_train"
  ln -s "$PWD/export" "$SHIM/sair_export"
  ln -s "$PWD/sair_deploy" "$SHIM/sair_deploy"
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
  TRAIN=(python3 -m sair_train.cli)
fi

BASE_OPT=()
[ -n "$BASE" ] && BASE_OPT=(--base "$BASE")
export PYTHONUNBUFFERED=1

echo "training $MINUTES min on $DEVICE: fill=$FILL base=${BASE:-config} data=$DATA -> $OUT"
"${TRAIN[@]}" "$DATA" -o "$OUT" --config sair-small --no-semantic --recipe liif-sr \
    --fill "$FILL" --residual "${BASE_OPT[@]}" \
    --size "$SIZE" --batch "$BATCH" --lr "$LR" --lr-step "$LR_STEP" --queries "$QUERIES" \
    --scale-max 4 --scale-prob "$SCALE_PROB" --sr-prob "$SR_PROB" \
    --ssim-weight "$SSIM_WEIGHT" --patch 32 --color-jitter "$JITTER" \
    --repeat "$REPEAT" --epochs 100000 --val-count 0 --seed "$SEED" \
    --workers "$WORKERS" --ckpt-every "$CKPT_EVERY" --log-every 50 \
    --max-minutes "$MINUTES" --device "$DEVICE" --no-progress "$@"
echo "done: $OUT/model.safetensors ($(du -h "$OUT/model.safetensors" | cut -f1)); last log lines:"
tail -n 3 "$OUT/log.jsonl"
