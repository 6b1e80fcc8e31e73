#!/usr/bin/env bash
# Device-side (one H200): issue 14's memory targets on the Llama-3-8B shape (random bf16 weights
# built on the GPU, nothing downloaded), through `kvbench bench`:
#   - 128k tokens prefilled with the full cache in chunks of 4k, then decoded from: peak against
#     weights + KV + 2 GiB (`--long-context`);
#   - 32k tokens, full cache against SnapKV at ratio 0.75 compressing each layer during the
#     prefill: the fall in peak as a share of the KV bytes saved, >= 80% (`--memory-context`);
#     then the same with knorm and streaming_llm (methods with other observations).
# Needs only the CUDA binary staged as /tmp/stage/kvbench-new.xz (scripts/device/stage.sh);
# writes memory_bench_*.json / .txt into $OUT.
set -uo pipefail
source scripts/device/setup.sh
set +e
K=/tmp/kvbench-new
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
run() {  # name, seconds, then bench arguments
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  timeout "$limit" $K bench --device cuda --model synthetic:llama3-8b --lengths 4096 \
    --decode-lengths 4096 --sample-length 4096 --repeats 3 --skip-compression \
    --batch-sequences 0 --output "$OUT/memory_bench_$name.json" "$@" \
    > "$OUT/memory_bench_$name.txt" 2> "$OUT/memory_bench_$name.err"
  echo "rc=$?"; cat "$OUT/memory_bench_$name.txt"; tail -n 3 "$OUT/memory_bench_$name.err"
}
run long 300 --long-context 131072 --prefill-chunk 4096 --memory-context 32768
run knorm 90 --memory-context 32768 --memory-method knorm
run streaming 90 --memory-context 32768 --memory-method streaming_llm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
