#!/usr/bin/env bash
# Device side of the scale-out measurement (issue 20 item 5) on the two-GPU H200 machine: the GPU
# sweep (experiments/gpu_sweep.yaml, SAMPLES samples per RULER cell) on one GPU, then with
# `--gpus 0,1` (GPUS) into another directory, timed end to end (model load and warm-up included), and
# the two runs' records compared (timings aside). Needs in /tmp/stage: smol.part*,
# kvbench-new.xz and words/ (RULER's word lists). Results and logs land in $OUT.
set -euo pipefail
bash scripts/device/stage.sh >/dev/null
source scripts/device/setup.sh
mkdir -p ../shared/data && cp -r /tmp/stage/words ../shared/data/
OUT=${OUT:-/tmp/scale-out}
mkdir -p "$OUT"
samples=${SAMPLES:-3}
nvidia-smi --query-gpu=index,name --format=csv,noheader
t0=$(date +%s.%N)
/tmp/kvbench-new run experiments/gpu_sweep.yaml --device cuda:0 --output "$OUT/one" \
  --set "datasets.0.samples=$samples" > "$OUT/one.log" 2>&1
t1=$(date +%s.%N)
/tmp/kvbench-new run experiments/gpu_sweep.yaml --gpus "${GPUS:-0,1}" --output "$OUT/two" \
  --set "datasets.0.samples=$samples" > "$OUT/two.log" 2>&1
t2=$(date +%s.%N)
python3 - "$OUT" "$t0" "$t1" "$t2" <<'PY'
import glob, json, sys
out, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
T = ('prefill_ms', 'compress_ms', 'question_ms', 'ttft_ms', 'decode_ms_per_token',
     'peak_device_bytes', 'device', 'kvbench_version')
def load(d):
    o = {}
    for f in sorted(glob.glob(d + '/results*.jsonl')):
        for l in open(f):
            r = json.loads(l)
            for k in T:
                r.pop(k, None)
            o.setdefault(r['key'], r)
    return o
a, b = load(out + '/one'), load(out + '/two')
same = sum(1 for k in a if k in b and a[k] == b[k])
print(f"one GPU: {t1 - t0:.1f} s, {len(a)} records; two GPUs: {t2 - t1:.1f} s, {len(b)} records; "
      f"speed-up {(t1 - t0) / (t2 - t1):.2f}x; identical records (timings aside): {same}/{len(a)}")
diff = [k for k in a if k in b and a[k] != b[k]]
for k in diff[:3]:
    print("differs:", {f: (a[k][f], b[k][f]) for f in a[k] if a[k][f] != b[k].get(f)})
PY
tail -n 3 "$OUT/one.log" "$OUT/two.log"
