#!/usr/bin/env bash
# Device side: what cudarc's per-allocation event tracking costs kvbench on one H200. kvbench
# turns it off (harness/src/device.rs); KVBENCH_CUDA_EVENT_TRACKING=1 keeps it on. Runs
# `kvbench bench` (prefill and decode at 4k, medians of 5) on the 135M and 8B shapes, tracked and
# untracked in alternation (A B A B), so drift hits both alike. Needs /tmp/stage/kvbench-new.xz.
set -euo pipefail
bash scripts/device/stage.sh >/dev/null
source scripts/device/setup.sh
set +e
OUT=${OUT:-/tmp/et-out}
mkdir -p "$OUT"
bench() {  # shape tracking round
  KVBENCH_CUDA_EVENT_TRACKING=$2 /tmp/kvbench-new bench --model "synthetic:$1" --device cuda \
    --lengths 4096 --decode-lengths 4096 --skip-compression --batch-sequences 0 --repeats 5 \
    --output "$OUT/$1-tracking$2-$3.json" > "$OUT/$1-tracking$2-$3.txt" 2>&1
}
for round in 1 2; do
  for t in 1 0; do bench smollm2-135m $t $round; done
done
for t in 1 0; do bench llama3-8b $t 1; done
for f in "$OUT"/*.txt; do echo "== $(basename "$f")"; grep -v "^building\|^wrote" "$f" | head -24; done
