#!/usr/bin/env bash
# Pack wheels as one unpacked site folder, xz-compressed, in .whlx/site.tar.xz: the PyAV and
# (trimmed) mediapipe wheels shrink from 54 to 39 MB, so they travel with a model's data within
# one call's 64 MiB (video.sh's end-to-end reenactment needs both). Run here, in the repo root:
#   echo /.whlx/ >> .git/info/exclude; bash bench/device/pack_site.sh .whlav/av-*.whl .whlmp/mediapipe-*.whl .whlmp/protobuf-*.whl
set -euo pipefail
tmp=$(mktemp -d)
for w in "$@"; do unzip -q -o "$w" -d "$tmp"; done
mkdir -p .whlx
tar -C "$tmp" -cJf .whlx/site.tar.xz .
rm -rf "$tmp"
ls -la .whlx
