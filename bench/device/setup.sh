#!/usr/bin/env bash
# Source first on a lent GPU machine, from the repository root: installs the carried wheels
# (.whl/: diffusers and what it needs beyond the machine's image) into /tmp/site, puts it and
# src/ on PYTHONPATH, sets OUT, and prints the GPU, torch and diffusers versions. Without .whl/
# (a call that needs no DiffusionRig, short of carry room) it installs nothing.
# Defines unpack_site FILE (a packed site from bench/device/pack_site.sh into /tmp/site) and
# REENACT_FILES (the reenactment outputs of `bench_video.py run` that a call brings back) and
# REENACT_DIRS (their folders, removed once packed).
#   . bench/device/setup.sh
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "
import importlib.util, torch
d = __import__('diffusers').__version__ if importlib.util.find_spec('diffusers') else 'not installed'
print('torch', torch.__version__, 'diffusers', d, torch.cuda.get_device_name())"
unpack_site() { mkdir -p /tmp/site && tar -C /tmp/site -xJf "$1"; }
REENACT_DIRS="reenact reenact_nomatte reenact_orbit relight_orbit"   # what bench_video.py run writes
REENACT_FILES="reenact/result.mp4 reenact/params.safetensors reenact/compare.mp4 reenact_orbit/result.mp4
  reenact_orbit/compare.mp4 relight_orbit/result.mp4 relight_orbit/compare.mp4 reenact_nomatte/result.mp4"
