#!/usr/bin/env bash
# Source first in the Gaussian avatar's scripts (splat.sh, splat_variants.sh), from the repository
# root on a lent GPU machine: installs the carried gsplat wheel and what it needs (.whlgs/) into
# /tmp/site, puts it and src/ on PYTHONPATH (and its ninja on PATH), sets OUT, then runs the splat
# tests on the GPU, which builds gsplat's CUDA kernels (~70 s, sm_90 only) and checks them against
# the plain PyTorch reference. Returns non-zero when the tests fail or the gsplat path was skipped.
#   . bench/device/gsplat_setup.sh || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whlgs/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PATH=/tmp/site/bin:$PATH
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/w"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
python3 -m pytest -x -rs tests/methods/splat -p no:cacheprovider > "$OUT/w/gpu_tests.txt" 2>&1 || { tail -30 "$OUT/w/gpu_tests.txt"; return 1; }
grep -q SKIP "$OUT/w/gpu_tests.txt" && { echo "gsplat path not tested"; tail -5 "$OUT/w/gpu_tests.txt"; return 1; }
tail -1 "$OUT/w/gpu_tests.txt"
echo "tests + gsplat build: $(( $(date +%s) - t0 )) s"
