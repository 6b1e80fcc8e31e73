#!/usr/bin/env bash
# Device side of the reuse study (issue 15 item 4) on one H200: experiments/cake.yaml (compute vs
# load vs Cake over context length, read bandwidth 1/4/16 GB/s and uncapped, stored form full /
# KIVI-2 / 50% SnapKV) with the KV store in a directory on local disk, then `kvbench report`.
# Needs in /tmp/stage: smol.part* and kvbench-new.xz (the CUDA binary). EXP=experiments/cake_8b.yaml
# runs the study at the 8B shape instead (synthetic weights, SmolLM2's tokenizer). Results, the report's
# study tables, the machine and the logs land in $OUT.
set -euo pipefail
bash scripts/device/stage.sh >/dev/null
source scripts/device/setup.sh
OUT=${OUT:-/tmp/cake-out}
EXP=${EXP:-experiments/cake.yaml}
name=$(basename "$EXP" .yaml)${SET:+-part}  # SET='datasets.0.lengths=[65536]' runs part of a sweep
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h /tmp | tail -1; } > "$OUT/machine.txt"
run=/tmp/runs/$name
t0=$(date +%s)
# The store is a directory under the run (reuse.store: kv_store); `prime: true` writes each
# context's cache there before its first measured request.
/tmp/kvbench-new run "$EXP" --device cuda ${SET:+--set "$SET"} --output "$run" --fresh > "$OUT/run.log" 2>&1 || {
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
# other, and on average at least 1.5x below the slower of the two. Cells are stored form x
# context length (the niah length; its 3 samples' median TTFT) x read cap.
python3 - "$OUT" <<'PY' | tee -a "$OUT/study.md"
import glob, json, sys, statistics as st
from collections import defaultdict
recs = [json.loads(l) for f in glob.glob(sys.argv[1] + '/results*.jsonl') for l in open(f)]
recs = [r for r in recs if r.get('ttft_mode') and not r.get('error')]
form = lambda r: r['method'] + ' ' + r['budget_label']
comp, other = defaultdict(list), defaultdict(list)
for r in recs:
    length = r['meta'].get('length', r['context_tokens'])
    if r['ttft_mode'] == 'compute':
        comp[(form(r), length)].append(r['ttft_ms'])
    else:
        other[(form(r), length, r.get('bandwidth_gbps'), r['ttft_mode'])].append(r['ttft_ms'])
cells, below_both, eligible, ratios = 0, 0, 0, []
for (f, ctx, bw, mode), v in sorted(other.items(), key=str):
    if mode != 'cake' or (f, ctx) not in comp or (f, ctx, bw, 'load') not in other:
        continue
    c, l, k = st.median(comp[(f, ctx)]), st.median(other[(f, ctx, bw, 'load')]), st.median(v)
    cells += 1
    ratios.append(max(c, l) / k)
    win = k < min(c, l)
    if max(c, l) <= 4 * min(c, l):
        eligible += 1
        below_both += win
    print(f"  {f:14} {ctx:>5} {str(bw):>5} GB/s  compute {c:7.1f}  load {l:7.1f}  cake {k:7.1f} ms"
          f"  {'below both' if win else ''}")
print(f"cells {cells}; cake below both compute and load in {below_both}/{eligible} cells where "
      f"neither is 4x faster; mean speed-up over the slower: {st.mean(ratios) if ratios else float('nan'):.2f}x")
# Correctness: each loaded or Cake-built cache's greedy output against the computed one.
pred = {(form(r), r['sample_id']): r['prediction'] for r in recs if r['ttft_mode'] == 'compute'}
same = defaultdict(lambda: [0, 0])
for r in recs:
    if r['ttft_mode'] != 'compute' and (form(r), r['sample_id']) in pred:
        s = same[(form(r), r['ttft_mode'])]
        s[0] += r['prediction'] == pred[(form(r), r['sample_id'])]
        s[1] += 1
for (f, mode), (a, n) in sorted(same.items()):
    print(f"output equals the computed cache's: {f} {mode}: {a}/{n}")
PY
