#!/usr/bin/env bash
# Device-side (issue 18): every method's compression time on a Llama-3-8B-shaped random
# checkpoint (bf16, one H200).
#  1. `kvbench bench` at 4k tokens: prefill, decode, and the compression table with each method's
#     time as a percentage of the 4k prefill and its peak device memory (bench-4k.{txt,json}).
#  2. At 32k tokens, every registered method at ratio 0.5 (one repeat): time, % of the 32k prefill
#     and peak device memory per method, to show the sweep fits on one H200 (bench-32k.{txt,json}).
# Needs /tmp/stage/kvbench-new.xz (a CUDA build); torch, transformers and tokenizers on the device.
# MODEL_DIR overrides where the checkpoint is built (default /tmp/llama8b-random); PARTS="4k" or
# PARTS="32k" runs one half (default both), for two calls if one would pass the time limit (the
# checkpoint survives between calls while the machine stays warm).
source scripts/device/setup.sh
set +e
MODEL_DIR=${MODEL_DIR:-/tmp/llama8b-random}
PARTS=${PARTS:-"4k 32k"}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt 2>&1
python3 scripts/device/make_random_llama8b.py "$MODEL_DIR" > $OUT/make_model.txt 2>&1
echo "make_model rc=$?"; tail -3 $OUT/make_model.txt
if [[ " $PARTS " == *" 4k "* ]]; then
/tmp/kvbench-new bench --model "$MODEL_DIR" --device cuda --lengths 4096 --decode-lengths 4096 \
  --sample-length 4096 --repeats 5 --output $OUT/bench-4k.json > $OUT/bench-4k.txt 2>&1
echo "bench 4k rc=$?"; sed -n '/^compression/,/^one sample/p' $OUT/bench-4k.txt; grep -A2 "^prefill" $OUT/bench-4k.txt
tail -3 $OUT/bench-4k.txt
fi
if [[ " $PARTS " == *" 32k "* ]]; then
/tmp/kvbench-new bench --model "$MODEL_DIR" --device cuda --lengths 32768 --decode-lengths 32768 \
  --sample-length 32768 --repeats 1 --output $OUT/bench-32k.json > $OUT/bench-32k.txt 2>&1
echo "bench 32k rc=$?"; sed -n '/^compression/,/^one sample/p' $OUT/bench-32k.txt; grep -A2 "^prefill" $OUT/bench-32k.txt
tail -5 $OUT/bench-32k.txt
fi
