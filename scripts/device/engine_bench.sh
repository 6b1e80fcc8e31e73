#!/usr/bin/env bash
# Device-side (one H200): issue 14's speed measurements with synthetic models of real shapes
# (random bf16 weights built on the GPU, nothing downloaded), through `kvbench bench`:
#   - synthetic:llama3-8b: prefill 4k, decode at 4k (one sequence), 16 sequences batched at 4k,
#     8 configurations vs one (one after another and batched);
#   - synthetic:qwen3-8b: the same without the batch sweep;
#   - 135M: the staged SmolLM2 GGUF when present, else synthetic:smollm2-135m, at the issue's
#     lengths (prefill 4k and 32k, decode at 32k, 8 configurations vs one).
# Needs only the CUDA binary staged as /tmp/stage/kvbench-new.xz (scripts/device/stage.sh);
# writes engine_bench_*.json / .txt and engine_bench.md into $OUT. Arguments pick a subset of
# llama3-8b llama3-8b-b1 qwen3-8b small (all by default; each bench is capped at 540 s, so run
# subsets when one device call must stay under 10 minutes).
set -uo pipefail
source scripts/device/setup.sh
set +e
K=/tmp/kvbench-new
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
wanted=" ${*:-llama3-8b llama3-8b-b1 qwen3-8b small} "
run() {  # name, then bench arguments
  local name=$1; shift
  [[ $wanted == *" $name "* ]] || return 0
  echo "== $name: $*"
  timeout 540 $K bench --device cuda --output "$OUT/engine_bench_$name.json" "$@" \
    > "$OUT/engine_bench_$name.txt" 2> "$OUT/engine_bench_$name.err"
  echo "rc=$?"; cat "$OUT/engine_bench_$name.txt"; tail -n 3 "$OUT/engine_bench_$name.err"
}
run llama3-8b --model synthetic:llama3-8b --lengths 4096 --decode-lengths 4096 \
  --sample-length 4096 --repeats 5 --skip-compression --batch-sequences 16 --batch-context 4096
run llama3-8b-b1 --model synthetic:llama3-8b --lengths 1024 --decode-lengths 1024 \
  --sample-length 1024 --repeats 3 --skip-compression --batch-sequences 1 --batch-context 4096
run qwen3-8b --model synthetic:qwen3-8b --lengths 4096 --decode-lengths 4096 \
  --sample-length 4096 --repeats 5 --skip-compression --batch-sequences 16 --batch-context 4096
small=synthetic:smollm2-135m
[ -f "$KVBENCH_CACHE/files/sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53/SmolLM2-135M-Instruct.Q4_1.gguf.verified" ] \
  && small=smollm2-135m-instruct-q4_1
run small --model $small --lengths 4096,32768 --decode-lengths 4096,32768 --sample-length 4096 \
  --repeats 5 --batch-sequences 16 --batch-context 4096
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
lines = ["| bench | model | prefill (tokens: ms) | decode 1 seq (context: ms/token) | batched decode | 8 configs vs 1 (serial / batched) |",
         "|---|---|---|---|---|---|"]
for name in ["llama3-8b", "llama3-8b-b1", "qwen3-8b", "small"]:
    p = os.path.join(out, f"engine_bench_{name}.json")
    if not os.path.exists(p):
        lines.append(f"| {name} | (no report) | | | | |")
        continue
    r = json.load(open(p))
    pre = ", ".join(f"{x['context_tokens']}: {x['median_ms']:.1f}" for x in r["prefill"])
    dec = ", ".join(f"{x['context_tokens']}: {x['median_ms']:.2f}" for x in r["decode"])
    b = r.get("batched_decode")
    bat = f"{b['sequences']} x {b['context_tokens']}: {b['median_step_ms']:.2f} ms/step" if b else "-"
    share = f"{r['sharing_ratio']:.2f}x / {r['sharing_batched_ratio']:.2f}x"
    lines.append(f"| {name} | {r['model']} ({r['dtype']}) | {pre} | {dec} | {bat} | {share} |")
open(os.path.join(out, "engine_bench.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
