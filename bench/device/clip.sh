#!/usr/bin/env bash
# Both person-specific renderers on the same clip in one call on a 2-GPU machine: the Gaussian
# avatar (bench/device/splat.sh: its GPU tests, training, held-out renders, turntable, driven
# frames and the spatial-prior ablation) on GPU 0, and the video renderer (bench_video.py run:
# held-out self-reenactment, relit frames) on GPU 1. Carry .whlgs, the clip's video data
# (bench_video.py prepare, with its target.mp4), its avatar frames file and a driver's fitted rig
# (bench/bench_avatar.py). Brings back $OUT/s/{splat.tar,renders.tar,avatar.json} and
# $OUT/v/{video.json,video_compare.png,heldout_pred.npy,relit.npz,logs.tar}; then, here:
#   python bench/bench_avatar.py --score FILES_AT/s --frames FRAMES
#   python bench/bench_video.py score --dir VIDEO_DIR --out FILES_AT/v
#   bash bench/device/clip.sh VIDEO_DIR FRAMES DRIVER [VIDEO_MIN] [SPLAT_MIN] [ABLATION_MIN] [EVERY]
set -o pipefail
VDIR=$1; FRAMES=$2; DRIVER=$3; VMIN=${4:-6}; SMIN=${5:-5}; ABL=${6:-1}; EVERY=${7:-4}
[ -f "$VDIR/target_256.safetensors" ] && [ -f "$FRAMES" ] || { echo "usage: clip.sh VIDEO_DIR FRAMES DRIVER ..."; exit 2; }
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/s" "$OUT/v"
OUT="$OUT/s" CUDA_VISIBLE_DEVICES=0 bash bench/device/splat.sh "$FRAMES" "$DRIVER" "$SMIN" "$ABL" > "$OUT/splat.log" 2>&1 &
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=1 python3 bench/bench_video.py run --dir "$VDIR" --out "$OUT/v" --minutes "$VMIN" --no-fps \
  --every "$EVERY" 2>&1 | grep -v -E 'Warn|warn_once|originates|\^\^\^|^\s*$' | tail -12
wait
tail -60 "$OUT/splat.log"; rm -f "$OUT/splat.log"
(cd "$OUT/v" && tar -cf logs.tar run/log.jsonl run/samples 2>/dev/null; rm -rf run reenact reenact_orbit relight_orbit)
ls -la "$OUT"/s "$OUT"/v
