#!/usr/bin/env bash
# Training throughput in the real training loop (`portraitrig train`), on 1 GPU and on every GPU
# of the machine (torchrun/DDP, same per-GPU batch); prints both rates (median of the logged
# windows after the first, which holds compilation) and the scaling factor. Run on a multi-GPU
# kind (e.g. nvidia-h200-x2).
#   bash bench/device/scaling.sh [BATCH] [STEPS] [METHOD] [DATA] [PRESET]
# Defaults: DiffusionRig's stage 1 at 256 px (carry .whl and .devdata/cache_stage1.safetensors),
# BATCH 32, STEPS 300. BATCH - keeps the preset's. METHOD splat needs .whlgs (gsplat; its kernels
# build first, ~70 s). LOG=N: steps per logged window (default 20).
#   e.g. bash bench/device/scaling.sh - 2000 video .devdata/v14/target_256.safetensors 256
set -o pipefail
B=${1:-32}; S=${2:-300}; M=${3:-diffusion}; C=${4:-.devdata/cache_stage1.safetensors}; P=${5:-stage1-256}
if [ "$M" = splat ]; then . bench/device/gsplat_setup.sh || exit 1; else . bench/device/setup.sh || exit 1; fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
N=$(nvidia-smi -L | wc -l)
A="$C --preset $P --steps $S --log-every ${LOG:-20} --ckpt-every 100000 --sample-every 100000 -q"
[ "$B" != - ] && A="$A --batch-size $B"
timeout 250 python3 -m portraitrig.cli train "$M" $A -o /tmp/g1 2>&1 | grep -v Warn | tail -2
cp /tmp/g1/log.jsonl "$OUT/log_${M}_1gpu.jsonl"
timeout 280 python3 -m torch.distributed.run --standalone --nproc_per_node "$N" -m portraitrig.cli train "$M" $A -o /tmp/gN \
  2>&1 | grep -v Warn | tail -2
cp /tmp/gN/log.jsonl "$OUT/log_${M}_${N}gpu.jsonl"
rm -rf /tmp/g1 /tmp/gN
python3 - "$N" "$M" <<'PY'
import json, os, statistics, sys
n, m = sys.argv[1], sys.argv[2]
out = os.environ["OUT"]
def rates(f):  # medians over the windows after the first (which holds compilation)
    rows = [json.loads(l) for l in open(f)]
    dt = [b["time"] - a["time"] for a, b in zip(rows[1:], rows[2:])]
    steps = rows[2]["step"] - rows[1]["step"] if len(rows) > 2 else 0
    return statistics.median(r["images_per_s"] for r in rows[1:]), steps / statistics.median(dt) if dt else 0.0
(one, s1), (many, sn) = rates(f"{out}/log_{m}_1gpu.jsonl"), rates(f"{out}/log_{m}_{n}gpu.jsonl")
print(f"{m}: 1 GPU: {one:.1f} img/s ({s1:.1f} steps/s); {n} GPUs: {many:.1f} img/s ({sn:.1f} steps/s); "
      f"scaling {many / one:.2f}x ({many / one / int(n):.0%} of linear)")
PY
