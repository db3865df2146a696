#!/usr/bin/env bash
# The apps timed end to end on one GPU (~7 min): the web app's edit (bench/device/web.sh), then the
# video renderer trained for MIN minutes on .devdata/video and a driver VIDEO reenacted end to
# end, fits included, in 1 and 8 fitting processes: its first 300 frames (10 s of a 30-fps 512² driver: 250 at the target's 25 fps).
# Carry .whl, .whlx (PyAV, mediapipe, gradio: bench/device/pack_site.sh), the driver and
# .devdata/video's target.mp4, target_256.safetensors and target_256.video.safetensors.
#   bash bench/device/apps.sh [DRIVER] [MIN] [EDITS]
set -o pipefail
DRIVER=${1:-.devdata/drv/liveportrait_d10.mp4}; MIN=${2:-1}; EDITS=${3:-20}
QUIET='Warn|warn_once|originates|is_torch_version|\^\^\^|^\s*$|^W0000|^I0000|absl'
bash bench/device/web.sh "$EDITS" || exit 1
. bench/device/setup.sh >/dev/null || exit 1
unpack_site .whlx/site.tar.xz || exit 1
timeout 200 python3 bench/bench_video.py run --dir .devdata/video --out "$OUT" --minutes "$MIN" --no-fps \
  --reenact-frames 8 2>&1 | grep -v -E "$QUIET" | tail -4
timeout 240 python3 bench/bench_video.py e2e --out "$OUT" --driver "$DRIVER" --workers 1,8 --max-frames 300 2>&1 \
  | grep -v -E "$QUIET" | tail -12
rm -rf "$OUT"/run "$OUT"/e2e_* "$OUT"/reenact* "$OUT"/relight*
ls -la "$OUT"
