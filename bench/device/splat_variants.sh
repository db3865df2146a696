#!/usr/bin/env bash
# Variants of the Gaussian avatar trained side by side (an ablation under equal conditions, or
# the preset on several clips at once): the splat tests run once on the GPU (bench/device/gsplat_setup.sh:
# gsplat against the plain reference; its kernels build, ~70 s), then every variant trains at once, variant k on
# GPU k mod (number of GPUs), each for MIN minutes on its clip's first 80 % (a cosine schedule
# sized to the budget: variants sharing a GPU each get a share of it), then renders the held-out
# 20 %, a turntable and, with DRIVER, frames driven by another clip (bench_avatar.py, no
# spatial-prior ablation; DRIVER - for none). Carry .whlgs, the frames files and the driver's rig.
# Each variant is NAME=SETS: comma-separated KEY=VALUE settings for bench_avatar.py --set (a list
# goes on after its commas: model.x=1,2,3), or
# NAME=- for the preset as it is; a setting frames=PATH trains that variant on another frames
# file than FRAMES. Each brings back $OUT/NAME.tar (avatar.json, renders.tar, log.txt, its
# training log and newest sample picture, turntable.png); at most 8 variants. Then, here:
#   mkdir D && tar -C D -xf FILES_AT/NAME.tar && python bench/bench_avatar.py --score D --frames FRAMES
#   bash bench/device/splat_variants.sh FRAMES DRIVER MIN NAME=SETS [NAME=SETS ...]
#   e.g. bash bench/device/splat_variants.sh .devdata/avatar_d6s3_512q.safetensors .devdata/driver_d9.safetensors 6 \
#          d6=- big=model.per_face=48,model.free=120000 d14=frames=.devdata/avatar_d14s2_512q.safetensors
set -o pipefail
FRAMES=$1; DRIVER=$2; MIN=$3; shift 3
[ -f "$FRAMES" ] && [ $# -ge 1 ] && [ $# -le 8 ] || { echo "usage: splat_variants.sh FRAMES DRIVER MIN NAME=SETS ... (1 to 8)"; exit 2; }
. bench/device/gsplat_setup.sh || exit 1
NGPU=$(nvidia-smi -L | wc -l)
drv=(); [ -f "$DRIVER" ] && drv=(--driver "$DRIVER")
k=0; names=()
for v in "$@"; do
  name=${v%%=*}; sets=${v#*=}; args=(); f=$FRAMES
  if [ "$sets" != "-" ]; then
    IFS=, read -ra kv <<< "$sets"
    for x in "${kv[@]}"; do
      # a part without '=' continues the last setting's list (model.widths=48,96,192)
      if [[ "$x" != *=* ]] && [ ${#args[@]} -gt 0 ]; then args[-1]="${args[-1]},$x"; continue; fi
      if [ "${x%%=*}" = frames ]; then f=${x#frames=}; else args+=(--set "$x"); fi
    done
  fi
  [ -f "$f" ] || { echo "$name: no frames file $f"; exit 2; }
  mkdir -p "$OUT/w/$name"
  CUDA_VISIBLE_DEVICES=$(( k % NGPU )) python3 bench/bench_avatar.py --method splat --frames "$f" "${drv[@]}" \
    --out "$OUT/w/$name" --minutes "$MIN" --ablation-minutes 0 --fps-sizes 512 "${args[@]}" \
    > "$OUT/w/$name/log.txt" 2>&1 &
  names+=("$name"); k=$((k + 1))
done
wait
for name in "${names[@]}"; do
  d=$OUT/w/$name
  echo "== $name"; grep -E "Error|Traceback" -A3 "$d/log.txt" | head -8
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r.get(k) for k in ('train','heldout','gaussians','fps')}))" \
    "$d/avatar.json" 2>/dev/null
  grep -v Warn "$d/log.txt" > "$d/log.tmp"; mv "$d/log.tmp" "$d/log.txt"
  pics=$(ls "$d"/runs/prior/samples/*.png 2>/dev/null | tail -1)
  (cd "$d" && tar -cf "$OUT/$name.tar" avatar.json renders.tar log.txt turntable.png runs/prior/log.jsonl \
     ${pics:+runs/prior/samples/$(basename "$pics")} 2>/dev/null)
done
rm -rf "$OUT/w"
ls -la "$OUT"
