#!/usr/bin/env bash
# Second of two chained calls, on the machine bench/device/stage1.sh left warm (carry .whl and the
# person's cache): stage 2 at 256 px (preset stage2-256) from /tmp/runs/s1 on 20 frames of PERSON
# for MIN minutes (start-up included), then held-out reconstructions / edits of the personal model
# and of the stage-1 prior (portraitrig.cli heldout generate), split into parts under the 16 MiB
# per returned file. BENCH=1 also runs the edit benchmarks (bench/bench_diffusion.py, ~3 min).
# RUN=NAME trains into /tmp/runs/NAME (default s2) and writes eval_NAME.partK.npz; S1=0 skips the
# prior's generations; LIGHT_AUG=P trains with lighting augmentation; COMPILE=--compile compiles
# (the preset trains eager: for a run of a few minutes eager finishes more steps than compiling).
#   [BENCH=1] [RUN=NAME] [S1=0] [LIGHT_AUG=P] [COMPILE=--compile] bash bench/device/stage2.sh [CACHE] [PERSON] [MIN]
set -o pipefail
. bench/device/setup.sh || exit 1
CACHE=${1:-.devdata/cache_person.safetensors}; P=${2:-hdtf_katiehill}; MIN=${3:-6}
QUIET='Warn|warn_once|originates|is_torch_version|\^\^\^|^\s*$'
R=/tmp/runs; RUN=${RUN:-s2}
test -f $R/s1/model/model.safetensors || { echo "no stage-1 model on this machine (run bench/device/stage1.sh first)"; exit 3; }
T0=$(date +%s)
timeout $(python3 -c "print(int($MIN * 60 + 60))") python3 -m portraitrig.cli train diffusion "$CACHE" -o $R/$RUN \
  --preset stage2-256 --init $R/s1/model --group "$P" --train-items 20 --steps 100000 ${COMPILE:-} \
  --light-augment "${LIGHT_AUG:-0}" --log-every 50 --ckpt-every 100000 --sample-every 100000 --time-limit "$MIN" -q 2>&1 \
  | grep -v -E "$QUIET" | tail -4
echo "stage 2 wall time (process start to model written): $(( $(date +%s) - T0 )) s"
MODELS=$RUN; [ "${S1:-1}" = 1 ] && MODELS="$RUN s1"
for m in $MODELS; do
  timeout 150 python3 -m portraitrig.cli heldout generate --model $R/$m/model --cache "$CACHE" --group "$P" \
    --train-items 20 --n 16 --parts 2 --no-fast --out "$OUT/eval_$m.npz" 2>&1 | grep -v -E "$QUIET" | tail -1
done
tar -C $R -cf "$OUT/runs.tar" s1/log.jsonl s1/samples $RUN/log.jsonl $RUN/samples
if [ "${BENCH:-0}" = 1 ]; then
  timeout 240 python3 bench/bench_diffusion.py --device cuda --skip train,render --out "$OUT/bench_edit.json" 2>&1 \
    | grep -v -E "$QUIET" | tail -16
fi
ls -la "$OUT"
