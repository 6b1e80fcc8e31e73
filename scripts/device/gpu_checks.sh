#!/usr/bin/env bash
# Device-side (one H200): the GPU checks of issue 12, after scripts/device/stage.sh calls have put
# the GGUF parts, the CUDA binary and the gguf wheel in /tmp/stage.
#   1. transformers on the Gemma 3 270M GGUF: reference ids/argmax/greedy (f32 and bf16);
#   2. kvbench (CUDA, bf16) on the same prompts as kvbench samples, and the Gemma 3 quickstart;
#   3. the SmolLM2 quickstart on CUDA;
#   4. every tiny architecture oracle through `kvbench bench` on CUDA (bf16 runs at all).
set -uo pipefail
source scripts/device/setup.sh
log=$OUT/gpu_checks.log
g=$KVBENCH_CACHE/files/sha256-a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
PYTHONUNBUFFERED=1 python3 scripts/device/gemma_transformers_reference.py "$g" gemma-3-270m-q4_k_m.gguf \
  $OUT/gemma3_270m_transformers.json 2>&1 | grep -v Warning | tail -n 20 | tee -a $log
cat > /tmp/agree.yaml <<YAML
experiment: gemma3_transformers_agreement
model: gemma3-270m-q4_k_m
datasets:
  - name: jsonl
    path: $OUT/gemma3_270m_transformers.jsonl
    context_template: "{context}"
    question_template: "{question}"
    max_new_tokens: 16
    chat_template: false
methods:
  - method: full
YAML
/tmp/kvbench-new run /tmp/agree.yaml --device cuda --output /tmp/runs/agree 2>&1 | tail -n 5 | tee -a $log
cp /tmp/runs/agree/results.jsonl $OUT/gemma_agree_results.jsonl
/tmp/kvbench-new run experiments/gemma3_quickstart.yaml --device cuda --output /tmp/runs/gemma 2>&1 | tail -n 9 | tee -a $log
cp /tmp/runs/gemma/results.jsonl $OUT/gemma_quickstart_results.jsonl
cp /tmp/runs/gemma/run.json $OUT/gemma_quickstart_run.json
/tmp/kvbench-new run experiments/quickstart.yaml --device cuda --output /tmp/runs/smol 2>&1 | tail -n 6 | tee -a $log
for a in /tmp/stage/arch/*/; do
  echo "== $(basename $a)" | tee -a $log
  /tmp/kvbench-new bench --model "$a" --device cuda --lengths 512,2048 --decode-lengths 512 \
    --sample-length 512 --repeats 3 --output /tmp/bench-arch.json 2>&1 | sed -n '1,12p' | tee -a $log
done
