#!/usr/bin/env bash
# Device-side: every tiny architecture oracle (carried in .stage/cur/arch) through `kvbench run`
# on CUDA in bf16: the 200-token reference input as context (all but the last id) and question
# (the last id), full cache, snapkv and streaming_llm at ratio 0.5, 12 greedy tokens. The answer
# is transformers' f32 first greedy token, so `score` is first-token agreement with transformers.
source scripts/device/setup.sh
set +e
for a in /tmp/stage/arch/*/; do
  n=$(basename $a)
  python3 - "$a" <<'PY'
import json, sys
d = sys.argv[1]
c = json.load(open(d + "reference.json"))["cases"][1]
ids = c["input_ids"]
line = {"context": " ".join(f"t{i}" for i in ids[:-1]), "question": f" t{ids[-1]}",
        "answers": [f"t{c['greedy_12'][0]}"]}
open("/tmp/arch.jsonl", "w").write(json.dumps(line) + "\n")
PY
  cat > /tmp/arch.yaml <<YAML
experiment: arch_$n
model: $a
datasets:
  - name: jsonl
    path: /tmp/arch.jsonl
    context_template: "{context}"
    question_template: "{question}"
    max_new_tokens: 12
    metric: substring
    chat_template: false
methods:
  - method: full
  - method: snapkv
  - method: streaming_llm
budgets:
  - compression_ratio: 0.5
YAML
  echo "== $n"
  /tmp/kvbench-new run /tmp/arch.yaml --device cuda --output /tmp/runs/arch-$n 2>&1 | grep -E "^\| jsonl|error" 
  python3 -c "import json;[print(' ', r['method'], r.get('prediction','')[:60]) for r in map(json.loads, open('/tmp/runs/arch-$n/results.jsonl'))]"
done
