#!/usr/bin/env bash
# The Gaussian avatar on one GPU in one call. Carry .whlgs (gsplat 1.5.3's wheel: its CUDA
# kernels build on first use, ~70 s, for the H200's sm_90 only), the frames file and a driver
# clip's fitted rig (made where mediapipe is installed: see bench/bench_avatar.py). Runs the
# splat tests on the GPU (gsplat against the plain reference), trains MIN minutes on the clip's
# first 80 % (cosine schedule sized to the budget), evaluates the held-out 20 %, times renders,
# and runs the spatial-prior ablation (ABL minutes). Packs what comes back into $OUT/splat.tar,
# $OUT/renders.tar and $OUT/avatar.json; re-fit the renders afterwards where mediapipe is:
#   python bench/bench_avatar.py --score DIR --frames FRAMES
#   bash bench/device/splat.sh [FRAMES] [DRIVER] [MIN] [ABL] [--set KEY=VALUE ...]   (e.g. --set model.body=20000)
set -o pipefail
FRAMES=${1:-.devdata/avatar_d10_512q.safetensors}; DRIVER=${2:-.devdata/driver_d9.safetensors}
MIN=${3:-4}; ABL=${4:-1.5}; shift $(( $# < 4 ? $# : 4 ))
. bench/device/gsplat_setup.sh || exit 1
python3 bench/bench_avatar.py --method splat --frames "$FRAMES" --driver "$DRIVER" --out "$OUT/w" \
  --minutes "$MIN" --ablation-minutes "$ABL" "$@" 2>&1 | grep -v Warn | tee "$OUT/w/log.txt" | tail -80
mv "$OUT/w/renders.tar" "$OUT/w/avatar.json" "$OUT/" 2>/dev/null
rm -rf "$OUT"/w/runs/*/ckpt-*.safetensors "$OUT"/w/runs/*/model
tar -C "$OUT/w" -cf "$OUT/splat.tar" . && rm -rf "$OUT/w"
ls -la "$OUT"
