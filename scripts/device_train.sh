#!/usr/bin/env bash
# Training + evaluation call on the device (carry .whl and the cache):
#   bash scripts/device_train.sh CACHE PERSON [CONFIG] [S1_MIN] [S2_MIN]
# stage 1 on everyone but PERSON, stage 2 on 20 frames of PERSON (from stage 1 and from
# scratch), then held-out reconstructions/edits of all three models into $OUT/*.npz.
set -o pipefail
CACHE=$1; PERSON=$2; CONFIG=${3:-128}; S1=${4:-3.75}; S2=${5:-1.25}
. scripts/device_setup.sh || exit 1
R=/tmp/runs; mkdir -p $R
T="python3 -m portraitrig.cli train $CACHE --config $CONFIG --log-every 50 --ckpt-every 100000 -q"
$T -o $R/s1 --exclude-group "$PERSON" --steps 100000 --batch-size 32 --lr 2e-4 --warmup 200 \
   --sample-every 1000 --time-limit $S1 2>&1 | grep -v Warn | tail -3
tail -2 $R/s1/log.jsonl
$T -o $R/s2 --stage 2 --init $R/s1/model --group "$PERSON" --train-items 20 --steps 100000 --batch-size 16 \
   --lr 5e-5 --warmup 20 --sample-every 400 --time-limit $S2 2>&1 | grep -v Warn | tail -3
tail -1 $R/s2/log.jsonl
$T -o $R/scratch --stage 2 --group "$PERSON" --train-items 20 --steps 100000 --batch-size 16 \
   --lr 2e-4 --warmup 20 --sample-every 400 --time-limit $S2 2>&1 | grep -v Warn | tail -3
tail -1 $R/scratch/log.jsonl
for m in s2 scratch s1; do
  timeout 100 python3 scripts/eval_diffusion.py generate --model $R/$m/model --cache $CACHE --group "$PERSON" \
    --train-items 20 --n 16 --no-fast --out $OUT/eval_$m.npz 2>&1 | grep -v Warn | tail -1
done
tar -C $R -cf $OUT/runs.tar s1/log.jsonl s1/samples s2/log.jsonl s2/samples scratch/log.jsonl scratch/samples
ls -la $OUT
