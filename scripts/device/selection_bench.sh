#!/usr/bin/env bash
# Device-side (one H200), issue 18: the methods' CUDA kernels and what they change.
#  1. `kvbench bench --check-kernels`: the top-k selection and run-sum kernels against their host
#     paths (exact results per case) with timings (kernels.{txt,json}).
#  2. `kvbench bench` on the Llama-3-8B shape (random bf16 weights built on the GPU) at 4k tokens,
#     medians of 3: prefill, decode and every method's compression as % of the prefill
#     (bench-4k.{txt,json}).
#  3. The same at 32k tokens, one repeat: every method at ratio 0.5 with its peak device memory
#     (bench-32k.{txt,json}).
#  4. With PROFILE=1, the 4k compression once more with KVBENCH_PROFILE_COMPRESS=1: each method's
#     time split by phase, device-synchronised (profile-4k.err).
# Needs the CUDA binary staged as /tmp/stage/kvbench-new.xz (scripts/device/stage.sh).
source scripts/device/setup.sh
set +e
K=/tmp/kvbench-new
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
timeout 300 $K bench --device cuda --check-kernels --repeats 5 --output "$OUT/kernels.json" \
  > "$OUT/kernels.txt" 2> "$OUT/kernels.err"
echo "check-kernels rc=$?"; grep -c pass "$OUT/kernels.txt"; grep FAIL "$OUT/kernels.txt"; tail -n 3 "$OUT/kernels.err"
bench() {  # name, seconds, length, repeats
  timeout "$2" $K bench --device cuda --model synthetic:llama3-8b --lengths "$3" \
    --decode-lengths "$3" --sample-length "$3" --repeats "$4" --batch-sequences 0 \
    --output "$OUT/bench-$1.json" > "$OUT/bench-$1.txt" 2> "$OUT/bench-$1.err"
  echo "bench $1 rc=$?"; sed -n '/^compression/,$p' "$OUT/bench-$1.txt" | head -n 40
  tail -n 3 "$OUT/bench-$1.err"
}
bench 4k 200 4096 3
if [ "${PROFILE:-}" = 1 ]; then
  KVBENCH_PROFILE_COMPRESS=1 timeout 200 $K bench --device cuda --model synthetic:llama3-8b \
    --lengths 4096 --decode-lengths 4096 --sample-length 4096 --repeats 1 --batch-sequences 0 \
    --output "$OUT/profile-4k.json" > "$OUT/profile-4k.txt" 2> "$OUT/profile-4k.err"
  echo "profile rc=$?"; grep -E '^  [a-z_]+ \(' "$OUT/profile-4k.err"
fi
[ "${SKIP_32K:-}" = 1 ] || bench 32k 240 32768 1
