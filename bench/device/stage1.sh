#!/usr/bin/env bash
# First of two chained calls on one GPU (carry .whl and the stage-1 cache): the training benchmark
# (plain eager fp16 vs the fast path, with a kernel breakdown), then a 256 px stage-1 prior
# (preset stage1-256) into /tmp/runs/s1, kept on the warm machine for bench/device/stage2.sh, for
# whatever is left of END seconds after the benchmark (a call's limit is 600 s).
# PROFILE=0 skips the benchmark (the whole call trains); LIGHT_AUG=P trains with lighting
# augmentation (--light-augment P). If the compiled variant fails in the benchmark, trains eager.
#   [PROFILE=0] [LIGHT_AUG=P] bash bench/device/stage1.sh [CACHE] [END]
START=$(date +%s)
set -o pipefail
. bench/device/setup.sh || exit 1
CACHE=${1:-.devdata/cache_stage1.safetensors}; END=${2:-545}
QUIET='Warn|warn_once|originates|is_torch_version|\^\^\^|^\s*$'
FLAGS=
if [ "${PROFILE:-1}" != 0 ]; then
  timeout 330 python3 bench/profile_train.py --variants eager16-b16,fast-b32 --steps 10 \
    --out "$OUT/profile_train.json" 2>&1 | grep -v -E "$QUIET" | tee "$OUT/profile.log"
  python3 -c "import json,os,sys; d=json.load(open(os.environ['OUT']+'/profile_train.json')); sys.exit('images_per_s' not in d.get('fast-b32', {}))" || FLAGS=--no-compile
fi
R=/tmp/runs; mkdir -p $R
MIN=$(python3 -c "print(round(max(1.0, ($END - ($(date +%s) - $START)) / 60 - 0.5), 2))")
echo "stage 1 for $MIN min ${FLAGS:-compiled}"
timeout $(python3 -c "print(int($MIN * 60 + 75))") python3 -m portraitrig.cli train diffusion "$CACHE" -o $R/s1 \
  --preset stage1-256 --steps 100000 $FLAGS --log-every 50 --ckpt-every 100000 \
  --sample-every 100000 --time-limit "$MIN" --light-augment "${LIGHT_AUG:-0}" -q 2>&1 | grep -v -E "$QUIET" | tail -4
cp $R/s1/log.jsonl "$OUT/s1_log.jsonl"; cp $R/s1/samples/*.png "$OUT/" 2>/dev/null
ls -la $R/s1/model
