#!/usr/bin/env bash
# The web app's DiffusionRig edit timed on one GPU (~6 min) through Gradio's HTTP client (no
# browser there): a 256 model of seeded random weights (the time does not depend on them); the
# server loads and compiles it in the background as it starts. Carry .whl and .whlx (mediapipe
# and gradio: bench/device/pack_site.sh).
#   bash bench/device/web.sh [EDITS]
set -o pipefail
. bench/device/setup.sh || exit 1
unpack_site .whlx/site.tar.xz || exit 1
timeout 400 python3 bench/bench_web.py --client http --edit-model random:256 --edits "${1:-20}" --out "$OUT" 2>&1 \
  | grep -v -E 'Warn|warn_once|^W0000|^I0000|absl|^\s*$' | tail -8
# the same edit in parts, in one process (the model's share and the edit job's), after the same warm-up
timeout 300 python3 bench/bench_web.py --client none --edit-model random:256 --edits "${1:-20}" --out "$OUT" 2>&1 \
  | grep -v -E 'Warn|warn_once|^W0000|^I0000|absl|^\s*$' | tail -3
