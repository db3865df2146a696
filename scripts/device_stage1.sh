#!/usr/bin/env bash
# Device call 1 of 2 (nvidia-h100-x1, carry .whl and the stage-1 cache): the training benchmark
# (plain eager fp16 vs the fast path, side by side, with a kernel breakdown), then a stage-1
# prior at 256 px into /tmp/runs/s1 (kept on the warm machine for call 2) for whatever is left
# of END seconds after the benchmark (the call's limit is 600 s). PROFILE=0 skips the benchmark
# (the whole call trains); LIGHT_AUG=P trains with lighting augmentation (--light-augment P).
#   [PROFILE=0] [LIGHT_AUG=P] bash scripts/device_stage1.sh [CACHE] [END]
START=$(date +%s)
set -o pipefail
. scripts/device_setup.sh || exit 1
CACHE=${1:-.devdata/cache_stage1.safetensors}; END=${2:-545}
QUIET='Warn|warn_once|originates|is_torch_version|\^\^\^|^\s*$'
FLAGS=--compile
if [ "${PROFILE:-1}" != 0 ]; then
  timeout 330 python3 bench/profile_train.py --variants eager16-b16,fast-b32 --steps 10 \
    --out "$OUT/profile_train.json" 2>&1 | grep -v -E "$QUIET" | tee "$OUT/profile.log"
  # eager if the compiled variant failed in the benchmark
  python3 -c "import json,os,sys; d=json.load(open(os.environ['OUT']+'/profile_train.json')); sys.exit('images_per_s' not in d.get('fast-b32', {}))" || FLAGS=--no-compile
fi
R=/tmp/runs; mkdir -p $R
MIN=$(python3 -c "print(round(max(1.0, ($END - ($(date +%s) - $START)) / 60 - 0.5), 2))")
echo "stage 1 for $MIN min ($FLAGS)"
timeout $(python3 -c "print(int($MIN * 60 + 75))") python3 -m portraitrig.cli train "$CACHE" -o $R/s1 --config 256 \
  --steps 100000 --batch-size 32 --lr 2e-4 --warmup 200 $FLAGS --log-every 50 --ckpt-every 100000 \
  --sample-every 100000 --time-limit "$MIN" --light-augment "${LIGHT_AUG:-0}" -q 2>&1 | grep -v -E "$QUIET" | tail -4
cp $R/s1/log.jsonl "$OUT/s1_log.jsonl"; cp $R/s1/samples/*.png "$OUT/" 2>/dev/null
ls -la $R/s1/model
