#!/usr/bin/env bash
# Device side of issue 17 item 8 with a real device out-of-memory (not KVBENCH_TEST_OOM): a torch
# process holds all but LEAVE MiB of the GPU while `kvbench run` works through an 8k-token needle
# (which needs more than that) and then a 512-token one (which does not). Tried at a few LEAVE
# sizes; the run should write the 8k samples as failed records naming the OOM, go on, and score
# the 512-token ones. Needs the SmolLM2 parts and kvbench-new.xz in /tmp/stage. Results in $OUT.
set -uo pipefail
bash scripts/device/stage.sh >/dev/null
source scripts/device/setup.sh
set +e  # setup.sh sets -e; a killed holder's `wait` status must not end the loop
OUT=${OUT:-/tmp/oom}
mkdir -p "$OUT"
cat > /tmp/oom.yaml <<'YAML'
experiment: oom_probe
model: smollm2-135m-instruct-q4_1
device: cuda:0
datasets:
  - name: niah
    chat_template: false
    lengths: [8000, 512]
    depths: [0.5]
    samples_per_cell: 1
methods:
  - method: full
  - method: h2o
budgets:
  - compression_ratio: 0.5
YAML
for leave in ${LEAVES:-3000 2000 1500 1000 700}; do
  python3 - "$leave" > "$OUT/hold-$leave.log" 2>&1 <<'PY' &
import sys, time, torch
leave = int(sys.argv[1]) << 20
free, total = torch.cuda.mem_get_info()
x = torch.empty(free - leave, dtype=torch.uint8, device="cuda")
print(f"holding {(free - leave) >> 20} MiB of {total >> 20}, leaving {leave >> 20} MiB", flush=True)
open("/tmp/oom-held", "w").write("1")
time.sleep(300)
PY
  holder=$!
  rm -f /tmp/oom-held
  for _ in $(seq 100); do [ -f /tmp/oom-held ] && break; sleep 0.2; done
  /tmp/kvbench-new run /tmp/oom.yaml --output "$OUT/leave-$leave" --fresh > "$OUT/run-$leave.log" 2>&1
  echo "leave $leave MiB: exit $?"
  kill $holder; wait $holder 2>/dev/null
  python3 - "$OUT/leave-$leave/results.jsonl" <<'PY'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1])]
except FileNotFoundError:
    rows = []
for r in rows:
    print(f"  {r.get('sample_id')} {r.get('method')}: "
          + (f"FAILED {r.get('error', '')[:100]}" if r.get('failed') or r.get('error') else f"ok score {r.get('score')}"))
PY
done
