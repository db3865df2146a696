#!/usr/bin/env bash
# Call 1 on the device: smoke test of train + edit at 256 px on a small real cache, then the
# speed benchmarks. Usage (device `run`, carry .whl .devdata):  bash scripts/device_bench.sh
set -o pipefail
. scripts/device_setup.sh || exit 1
SMOKE=.devdata/smoke.safetensors
if [ -f "$SMOKE" ]; then
  timeout 120 python3 -m portraitrig.cli train "$SMOKE" -o /tmp/smoke --config 256 --steps 20 --batch-size 8 \
    --sample-every 20 --ckpt-every 10 --log-every 5 -q 2>&1 | tail -3
  cp /tmp/smoke/samples/step-00000020.png "$OUT/smoke_samples.png" 2>/dev/null
  timeout 120 python3 -m portraitrig.cli edit /tmp/smoke/model .devdata/smoke_fits/*.safetensors -o /tmp/smoke_edit \
    --light left --smile 0.8 --yaw 15 --steps 10 --no-fast 2>&1 | tail -2
fi
timeout 420 python3 bench/bench_diffusion.py --device cuda --out "$OUT/bench_diffusion.json" 2>&1 | tee "$OUT/bench_diffusion.log" | grep -v Warning
timeout 60 python3 bench/bench_render.py --device cuda --sizes 256 --batches 16 64 --fit-batches --repeat 5 \
  --out "$OUT/bench_render.json" 2>&1 | tail -8
