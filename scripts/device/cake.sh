#!/usr/bin/env bash
# Device side of the reuse study (issue 15 item 4) on one H200: experiments/cake.yaml (compute vs
# load vs Cake over context length, read bandwidth 1/4/16 GB/s and uncapped, stored form full /
# KIVI-2 / 50% SnapKV) with the KV store in a directory on local disk, then `kvbench report`.
# Needs in /tmp/stage: smol.part* and kvbench-new.xz (the CUDA binary). Results, the report's
# study tables, the machine and the logs land in $OUT.
set -euo pipefail
bash scripts/device/stage.sh >/dev/null
source scripts/device/setup.sh
OUT=${OUT:-/tmp/cake-out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h /tmp | tail -1; } > "$OUT/machine.txt"
run=/tmp/runs/cake
t0=$(date +%s)
# The store is a directory under the run (reuse.store: kv_store); `prime: true` writes each
# context's cache there before its first measured request.
/tmp/kvbench-new run experiments/cake.yaml --device cuda --output "$run" --fresh > "$OUT/run.log" 2>&1 || {
  tail -n 30 "$OUT/run.log"; exit 1; }
t1=$(date +%s)
echo "run: $((t1 - t0)) s" | tee -a "$OUT/run.log"
cp "$run"/results*.jsonl "$run/run.json" "$OUT/"
du -sh "$run/kv_store" >> "$OUT/machine.txt" 2>/dev/null || true
/tmp/kvbench-new report "$run" --output "$OUT/report" > "$OUT/report.log" 2>&1 || tail -n 20 "$OUT/report.log"
for t in ttft_vs_context cake_vs_bandwidth; do
  [ -f "$OUT/report/tables/$t.md" ] && { echo "== $t"; cat "$OUT/report/tables/$t.md"; }
done | tee "$OUT/study.md"
# The issue's target, from the records: Cake below both where neither is 4x faster than the
# other, and on average at least 1.5x below the slower of the two.
python3 - "$OUT" <<'PY' | tee -a "$OUT/study.md"
import glob, json, sys, statistics as st
from collections import defaultdict
recs = [json.loads(l) for f in glob.glob(sys.argv[1] + '/results*.jsonl') for l in open(f)]
recs = [r for r in recs if r.get('ttft_mode') and not r.get('error')]
comp, other = defaultdict(list), defaultdict(list)
for r in recs:
    form = r['method'] + ' ' + r['budget_label']
    if r['ttft_mode'] == 'compute':
        comp[(form, r['context_tokens'])].append(r['ttft_ms'])
    else:
        other[(form, r['context_tokens'], r.get('bandwidth_gbps'), r['ttft_mode'])].append(r['ttft_ms'])
cells, below_both, eligible, ratios = 0, 0, 0, []
for (form, ctx, bw, mode), v in sorted(other.items(), key=str):
    if mode != 'cake' or (form, ctx) not in comp or (form, ctx, bw, 'load') not in other:
        continue
    c, l, k = st.mean(comp[(form, ctx)]), st.mean(other[(form, ctx, bw, 'load')]), st.mean(v)
    cells += 1
    ratios.append(max(c, l) / k)
    if max(c, l) <= 4 * min(c, l):
        eligible += 1
        below_both += k < min(c, l)
print(f"cells {cells}; cake below both compute and load in {below_both}/{eligible} cells where "
      f"neither is 4x faster; mean speed-up over the slower: {st.mean(ratios) if ratios else float('nan'):.2f}x")
PY
