#!/usr/bin/env bash
# Device-side: `kvbench bench` (SmolLM2, CUDA, defaults) of the previous landing (old) and this
# change (new), alternated in one lease, twice each.
source scripts/device/setup.sh
set +e
for i in 1 2; do
  for b in old new; do
    /tmp/kvbench-$b bench --device cuda --output $OUT/bench-$b-$i.json > $OUT/bench-$b-$i.txt 2>&1
    echo "$b $i rc=$?"; grep -A7 "^prefill" $OUT/bench-$b-$i.txt | head -8
  done
done
