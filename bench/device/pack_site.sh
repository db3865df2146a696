#!/usr/bin/env bash
# Pack wheels as one unpacked site folder, xz-compressed, in $DEST/site.tar.xz (default .whlx):
# the PyAV and (trimmed) mediapipe wheels shrink from 54 to 39 MB, so they travel with a model's
# data within one call's 64 MiB (video.sh's end-to-end reenactment needs both). DROP: paths in
# the site left out (what the benchmark does not use). Run here, in the repo root:
#   echo /.whlx/ >> .git/info/exclude; bash bench/device/pack_site.sh .whlav/av-*.whl .whlmp/mediapipe-*.whl .whlmp/protobuf-*.whl
# The web app's server for web.sh (gradio and its needs beyond the GPU image, no browser front end
# files: web.sh drives it through gradio_client):
#   echo /.whlw/ >> .git/info/exclude; DEST=.whlw DROP="gradio/templates/node gradio/templates/frontend/static \
#     gradio/media_assets gradio/_frontend_code" bash bench/device/pack_site.sh .whlmp/mediapipe-*.whl \
#     .whlmp/protobuf-*.whl .whlweb/*.whl
set -euo pipefail
DEST=${DEST:-.whlx}
tmp=$(mktemp -d)
for w in "$@"; do unzip -q -o "$w" -d "$tmp"; done
for d in ${DROP:-}; do rm -rf "${tmp:?}/$d"; done
mkdir -p "$DEST"
tar -C "$tmp" -cJf "$DEST/site.tar.xz" .
rm -rf "$tmp"
ls -la "$DEST"
