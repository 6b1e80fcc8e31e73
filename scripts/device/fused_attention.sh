#!/usr/bin/env bash
# Device-side (one H200): the fused attention kernel (harness/kernels/flash_attention.cu).
#   1. `kvbench bench --check-attention`: kernel vs the eager path (f32 oracle) over decode,
#      prefill, prefix, GQA, d=64..256, windows, soft-capping, ragged heads; exits non-zero on a
#      failing case.
#   2. `kvbench bench` on synthetic:llama3-8b and synthetic:smollm2-135m with --attention fused
#      and eager, one after the other in the same lease (prefill, decode, batched decode).
# Needs /tmp/stage/kvbench-new.xz (scripts/device/stage.sh). Writes into $OUT.
# Arguments pick a subset of: check 8b 8b-eager small small-eager (all by default).
set -uo pipefail
source scripts/device/setup.sh
set +e
K=/tmp/kvbench-new
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
wanted=" ${*:-check 8b 8b-eager small small-eager} "
run() {  # name, then bench arguments
  local name=$1; shift
  [[ $wanted == *" $name "* ]] || return 0
  echo "== $name: $*"
  local t0=$SECONDS
  timeout 400 $K bench --device cuda --output "$OUT/fused_$name.json" "$@" \
    > "$OUT/fused_$name.txt" 2> "$OUT/fused_$name.err"
  echo "rc=$? (${SECONDS}-${t0} s)"; cat "$OUT/fused_$name.txt"; tail -n 3 "$OUT/fused_$name.err"
}
run check --check-attention --repeats 5
eight=(--model synthetic:llama3-8b --lengths 4096,16384 --decode-lengths 4096,32768
  --sample-length 4096 --repeats 3 --skip-compression --batch-sequences 16 --batch-context 4096)
run 8b "${eight[@]}" --attention fused
run 8b-eager "${eight[@]}" --attention eager
small=(--model synthetic:smollm2-135m --lengths 4096,32768 --decode-lengths 4096,32768
  --sample-length 4096 --repeats 5 --skip-compression --batch-sequences 16 --batch-context 4096)
run small "${small[@]}" --attention fused
run small-eager "${small[@]}" --attention eager
