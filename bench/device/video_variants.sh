#!/usr/bin/env bash
# Variants of the video renderer trained side by side on one clip (an ablation under equal
# conditions): variant k runs on GPU k mod (number of GPUs), all at once, each for MIN minutes
# on the clip's first 80 %, then on the held-out 20 % (bench_video.py run, no speed figures).
# Carry the clip's video data (bench_video.py prepare). Each variant is NAME=SETS, SETS being
# comma-separated KEY=VALUE settings for bench_video.py --set (a list goes on after its commas:
# model.widths=48,96,192), or NAME=- for the preset as it is;
# a setting dir=PATH trains that variant on another clip's video data (the preset on several clips
# at once, e.g. v6=- v14=dir=.devdata/v14).
# The first variant brings back its renders ($OUT/NAME/{video.json,heldout_pred.npy,relit.npz,
# video_compare.png,logs.tar}) for `bench_video.py score`; the others their video.json only
# ($OUT/NAME.json): at most 4 variants (8 files come back). SITE=FILE: a packed site with PyAV
# (bench/device/pack_site.sh; e.g. .whlxav/site.tar.xz): the first variant then also brings back
# its reenactments (reenact.tar, FRAMES driver frames, default 250) for the cross-reenactment scores.
# KEEP_PRED=1: the other variants also bring back their held-out renders ($OUT/NAME.heldout_pred.npy;
# mind the 8 files).
#   bash bench/device/video_variants.sh DIR MIN NAME=SETS [NAME=SETS ...]
#   e.g. bash bench/device/video_variants.sh .devdata/v6 5.5 full=- plain=model.texture=0,model.follow_head=false
set -o pipefail
DIR=$1; MIN=$2; shift 2
[ -f "$DIR/target_256.safetensors" ] && [ $# -ge 1 ] && [ $# -le 4 ] || { echo "usage: video_variants.sh DIR MIN NAME=SETS ... (1 to 4)"; exit 2; }
. bench/device/setup.sh || exit 1
if [ -n "${SITE:-}" ]; then unpack_site "$SITE" || exit 1; fi
NGPU=$(nvidia-smi -L | wc -l)
k=0; names=()
for v in "$@"; do
  name=${v%%=*}; sets=${v#*=}; args=(); vdir=$DIR
  if [ "$sets" != "-" ]; then
    IFS=, read -ra kv <<< "$sets"
    for x in "${kv[@]}"; do
      # a part without '=' continues the last setting's list (model.widths=48,96,192)
      if [[ "$x" != *=* ]] && [ ${#args[@]} -gt 0 ]; then args[-1]="${args[-1]},$x"; continue; fi
      if [ "${x%%=*}" = dir ]; then vdir=${x#dir=}; else args+=(--set "$x"); fi
    done
  fi
  [ -f "$vdir/target_256.safetensors" ] || { echo "$name: no video data in $vdir"; exit 2; }
  mkdir -p "$OUT/$name"
  CUDA_VISIBLE_DEVICES=$(( k % NGPU )) python3 bench/bench_video.py run --dir "$vdir" --out "$OUT/$name" --minutes "$MIN" \
    --no-fps --every 4 --reenact-frames "${FRAMES:-250}" "${args[@]}" > "$OUT/$name.log" 2>&1 &
  names+=("$name"); k=$((k + 1))
done
wait
first=${names[0]}
for name in "${names[@]}"; do
  echo "== $name"; grep -E "^video renderer|held-out" "$OUT/$name.log" | grep -v "^{" | head -12
  grep -E "Error|Traceback" -A3 "$OUT/$name.log" | grep -v "No module named 'av'" | head -8
  rm -f "$OUT/$name.log"
  if [ "$name" = "$first" ]; then
    (cd "$OUT/$name" && tar -cf logs.tar run/log.jsonl run/samples 2>/dev/null
     [ -n "${SITE:-}" ] && tar -cf reenact.tar $REENACT_FILES 2>/dev/null
     rm -rf run $REENACT_DIRS)
  else
    mv "$OUT/$name/video.json" "$OUT/$name.json"
    [ -n "${KEEP_PRED:-}" ] && mv "$OUT/$name/heldout_pred.npy" "$OUT/$name.heldout_pred.npy"
    rm -rf "$OUT/$name"
  fi
done
ls -la "$OUT" "$OUT/$first"
