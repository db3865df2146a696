#!/usr/bin/env bash
# Stage-1 training throughput at 256 px (reference model size, compiled fast path) in the real
# training loop, on 1 GPU and on every GPU of the machine (torchrun/DDP, same per-GPU batch);
# prints both rates (median of the logged windows after the first) and the scaling factor.
# Run on a multi-GPU kind (e.g. nvidia-h200-x2); carry .whl and .devdata/cache_stage1.safetensors.
#   bash bench/device/scaling.sh [BATCH] [STEPS]
set -o pipefail
. bench/device/setup.sh || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
B=${1:-32}; S=${2:-300}; N=$(nvidia-smi -L | wc -l)
C=.devdata/cache_stage1.safetensors
A="$C --preset stage1-256 --steps $S --batch-size $B --log-every 20 --ckpt-every 100000 --sample-every 100000 -q"
timeout 250 python3 -m portraitrig.cli train diffusion $A -o /tmp/g1 2>&1 | grep -v Warn | tail -2
cp /tmp/g1/log.jsonl $OUT/log_1gpu.jsonl
timeout 280 python3 -m torch.distributed.run --standalone --nproc_per_node $N -m portraitrig.cli train diffusion $A -o /tmp/gN 2>&1 \
  | grep -v Warn | tail -2
cp /tmp/gN/log.jsonl $OUT/log_${N}gpu.jsonl
python3 - "$N" <<'PY'
import json, os, statistics, sys
n = sys.argv[1]
out = os.environ["OUT"]
def ips(f):  # median over the windows after the first (which holds compilation)
    rows = [json.loads(l) for l in open(f)][1:]
    return statistics.median(r["images_per_s"] for r in rows)
one, many = ips(f"{out}/log_1gpu.jsonl"), ips(f"{out}/log_{n}gpu.jsonl")
print(f"1 GPU: {one:.1f} img/s; {n} GPUs: {many:.1f} img/s; scaling {many / one:.2f}x ({many / one / int(n):.0%} of linear)")
PY
