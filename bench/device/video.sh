#!/usr/bin/env bash
# The video renderer on one GPU in one call (carry .devdata/video, made here where mediapipe is
# installed: `python bench/bench_video.py prepare --video .../hdtf_katiehill.mp4 --driver
# .../liveportrait_d10.mp4 --dir .devdata/video`, ~20 MB): trains the 256 preset on the clip's
# first 80 % for MIN minutes, then on the held-out 20 %: self-reenactment PSNR / SSIM (crop,
# face-masked, full frame), render fps at 256² and 512², a compare picture, and a reenactment by
# the driver with a light orbit. Writes $OUT/video.json, video_compare.png and the reenactment
# videos; ~7.5 min with the defaults.
#   bash bench/device/video.sh [DIR] [MIN]
set -o pipefail
DIR=${1:-.devdata/video}; MIN=${2:-5}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/bench_video.py run --dir "$DIR" --out "$OUT" --minutes "$MIN" 2>&1 | grep -v Warn | tail -40
rm -rf "$OUT"/run/ckpt-*.safetensors
ls -la "$OUT" "$OUT"/reenact 2>/dev/null
