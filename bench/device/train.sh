#!/usr/bin/env bash
# Training and evaluation in one call (carry .whl and the cache): stage 1 on everyone but PERSON,
# stage 2 on 20 frames of PERSON (from the stage-1 prior, and from scratch), then held-out
# reconstructions / edits of all three models into $OUT/eval_{s2,scratch,s1}.npz and the runs'
# logs and sample grids into $OUT/runs.tar. SIZE picks the presets (stage1-SIZE, stage2-SIZE).
#   bash bench/device/train.sh CACHE PERSON [SIZE] [S1_MIN] [S2_MIN]
set -o pipefail
CACHE=$1; PERSON=$2; SIZE=${3:-128}; S1=${4:-3.75}; S2=${5:-1.25}
. bench/device/setup.sh || exit 1
R=/tmp/runs; mkdir -p $R
T="python3 -m portraitrig.cli train diffusion $CACHE --log-every 50 --ckpt-every 100000 -q"
$T -o $R/s1 --preset stage1-$SIZE --exclude-group "$PERSON" --steps 100000 \
   --sample-every 1000 --time-limit $S1 2>&1 | grep -v Warn | tail -3
tail -2 $R/s1/log.jsonl
$T -o $R/s2 --preset stage2-$SIZE --init $R/s1/model --group "$PERSON" --train-items 20 --steps 100000 \
   --sample-every 400 --time-limit $S2 2>&1 | grep -v Warn | tail -3
tail -1 $R/s2/log.jsonl
$T -o $R/scratch --preset stage2-$SIZE --group "$PERSON" --train-items 20 --steps 100000 \
   --lr 2e-4 --sample-every 400 --time-limit $S2 2>&1 | grep -v Warn | tail -3
tail -1 $R/scratch/log.jsonl
for m in s2 scratch s1; do
  timeout 100 python3 -m portraitrig.cli heldout generate --model $R/$m/model --cache $CACHE --group "$PERSON" \
    --train-items 20 --n 16 --no-fast --out $OUT/eval_$m.npz 2>&1 | grep -v Warn | tail -1
done
tar -C $R -cf $OUT/runs.tar s1/log.jsonl s1/samples s2/log.jsonl s2/samples scratch/log.jsonl scratch/samples
ls -la $OUT
