#!/usr/bin/env bash
# The avatar on one GPU in one call (carry .devdata/avatar_d10_256.safetensors, made where
# mediapipe is installed: see bench/bench_avatar.py): trains the 256 preset on the clip's first
# 80 % for MIN minutes, evaluates the held-out 20 % (PSNR/SSIM masked to the person), render fps
# at 256² and 512², a turntable picture, and the spatial-prior ablation (a second run of ABL
# minutes without it). Writes $OUT/avatar.json and pictures; ~8 min with the defaults (2 x 3 min of training, equal so the ablation compares like with like).
#   bash bench/device/avatar.sh [FRAMES] [MIN] [ABL]
set -o pipefail
FRAMES=${1:-.devdata/avatar_d10_256.safetensors}; MIN=${2:-3}; ABL=${3:-3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/bench_avatar.py --frames "$FRAMES" --out "$OUT" --minutes "$MIN" --ablation-minutes "$ABL" \
  2>&1 | grep -v Warn | tail -60
rm -rf "$OUT"/runs/*/ckpt-*.safetensors
ls -la "$OUT"
