#!/usr/bin/env bash
# Smoke test and speed benchmarks on one GPU (~5 min): 20 training steps and one edit at 256 px on
# a small real cache (if carried), then bench/bench_diffusion.py and bench/bench_render.py.
# Carry .whl, .devdata/smoke.safetensors and .devdata/smoke_fits.
#   bash bench/device/bench.sh
set -o pipefail
. bench/device/setup.sh || exit 1
SMOKE=.devdata/smoke.safetensors
if [ -f "$SMOKE" ]; then
  timeout 120 python3 -m portraitrig.cli train diffusion "$SMOKE" -o /tmp/smoke --preset stage1-256 --steps 20 --batch-size 8 \
    --sample-every 20 --ckpt-every 10 --log-every 5 -q 2>&1 | tail -3
  cp /tmp/smoke/samples/step-00000020.png "$OUT/smoke_samples.png" 2>/dev/null
  timeout 120 python3 -m portraitrig.cli edit /tmp/smoke/model .devdata/smoke_fits/*.safetensors -o /tmp/smoke_edit \
    --light left --smile 0.8 --yaw 15 --steps 10 --no-fast 2>&1 | tail -2
fi
timeout 420 python3 bench/bench_diffusion.py --device cuda --out "$OUT/bench_diffusion.json" 2>&1 | tee "$OUT/bench_diffusion.log" | grep -v Warning
timeout 60 python3 bench/bench_render.py --device cuda --sizes 256 --batches 16 64 --fit-batches --repeat 5 \
  --out "$OUT/bench_render.json" 2>&1 | tail -8
