#!/usr/bin/env bash
# The video renderer and its DiffusionRig baseline in one call on a 2-GPU machine (carry .whl,
# .whlav (the PyAV wheel: the reenactments write H.264), .devdata/video (made here where mediapipe
# is installed: `python bench/bench_video.py prepare --video .../hdtf_katiehill.mp4 --driver
# .../liveportrait_d10.mp4 --dir .devdata/video`, ~15 MB) and the stage-1 cache).
#   GPU 0: trains the 256 preset on the clip's first 80 % for MIN minutes, then on the held-out
#     20 %: self-reenactment PSNR / SSIM, relit frames, render fps at 256² and 512², a compare
#     picture, and three reenactments (driver; driver under an orbiting light; the target relit
#     by an orbiting light).
#   GPU 1 (when there is one): DiffusionRig with inversion on the same held-out frames, stage 1 on
#     the stage-1 cache for S1 minutes and stage 2 on the target's training frames for S2 minutes.
# The speed figures are measured after both are done. Brings back 8 files: video.json,
# video_compare.png, heldout_pred.npy, relit.npz, baseline/{baseline.json, baseline_pred.npy},
# reenact.tar (the reenactment videos + parameters), logs.tar; then, here, after untarring
# reenact.tar into the same folder: `python bench/bench_video.py score --out FILES_AT` (re-fits,
# identity, stability, relighting). ~9 min with the defaults; FRAMES=N driver frames (250).
# SITE=FILE: a packed site (bench/device/pack_site.sh; default .whlx/site.tar.xz) used instead of
# .whlav, e.g. PyAV alone (25 MB instead of 35) when a long clip's data leaves little carry room.
# With E2E_DRIVER=VIDEO (carry it) and .whlx/site.tar.xz (PyAV + mediapipe: bench/device/pack_site.sh)
# also the end-to-end reenactment of that driver video, fits included, in E2E_WORKERS processes
# (default 1,8), after the speed figures. EVERY=K: bring back every k-th held-out render and let
# the baseline invert only those (a long clip's held-out renders exceed what a call brings back,
# and inversion takes 1.6 s a frame).
# STAGE1_CACHE none: no baseline (one GPU is enough then).
#   bash bench/device/video.sh [DIR] [MIN] [STAGE1_CACHE] [S1] [S2]
set -o pipefail
DIR=${1:-.devdata/video}; MIN=${2:-5.5}; S1CACHE=${3:-.devdata/cache_stage1.safetensors}; S1=${4:-3.5}; S2=${5:-2}
. bench/device/setup.sh || exit 1
SITE=${SITE:-.whlx/site.tar.xz}
if [ -f "$SITE" ]; then
  unpack_site "$SITE" || exit 1
elif ls .whlav/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlav/*.whl || exit 1
fi
QUIET='Warn|warn_once|originates|is_torch_version|\^\^\^|^\s*$'
NGPU=$(nvidia-smi -L | wc -l)
if [ "$NGPU" -ge 2 ] && [ "$S1CACHE" != none ] && [ -f "$S1CACHE" ]; then
  CUDA_VISIBLE_DEVICES=1 python3 bench/bench_video.py baseline --dir "$DIR" --out "$OUT/baseline" \
    --stage1-cache "$S1CACHE" --minutes1 "$S1" --minutes2 "$S2" --every "${EVERY:-1}" > "$OUT/baseline.log" 2>&1 &
fi
CUDA_VISIBLE_DEVICES=0 python3 bench/bench_video.py run --dir "$DIR" --out "$OUT" --minutes "$MIN" --no-fps \
  --reenact-frames "${FRAMES:-250}" --every "${EVERY:-1}" 2>&1 | grep -v -E "$QUIET" | tail -40
wait   # the speed figures after the baseline is done: no other process on the host
CUDA_VISIBLE_DEVICES=0 python3 bench/bench_video.py fps --dir "$DIR" --out "$OUT" 2>&1 | grep -v -E "$QUIET" | tail -12
grep -v -E "$QUIET" "$OUT/baseline.log" 2>/dev/null | tail -3
if [ -n "${E2E_DRIVER:-}" ]; then
  CUDA_VISIBLE_DEVICES=0 python3 bench/bench_video.py e2e --out "$OUT" --driver "$E2E_DRIVER" \
    --workers "${E2E_WORKERS:-1,8}" 2>&1 | grep -v -E "$QUIET" | tail -25
  rm -rf "$OUT"/e2e_*
fi
# what comes back: at most 8 files, so the videos and logs travel as two tar files
(cd "$OUT" && tar -cf reenact.tar $REENACT_FILES 2>/dev/null; \
 tar -cf logs.tar run/log.jsonl run/samples baseline/s1/log.jsonl baseline/s2/log.jsonl baseline.log 2>/dev/null; \
 rm -rf run $REENACT_DIRS baseline/s1 baseline/s2 baseline.log)
ls -la "$OUT"; ls -la "$OUT"/baseline 2>/dev/null || true
