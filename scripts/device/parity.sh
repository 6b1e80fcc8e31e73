#!/usr/bin/env bash
# Device side of the kvpress parity check (issue 19 item 7): kvpress 0.5.5 and kvbench on the same
# generated prompts, the same model (SmolLM2-135M-Instruct Q4_1; transformers dequantizes it to
# bf16 for kvpress, kvbench runs it in bf16 on CUDA), the same presses with kvpress's defaults, at
# the same ratios, query-agnostic and query-aware. Prints both accuracy tables and the per-cell
# difference (scripts/parity/compare.py); everything lands in $OUT.
#
# Needs in /tmp/stage (staged by earlier calls, see docs/parity.md): smol.part*, kvbench-new.xz
# and the wheels kvpress==0.5.5, transformers==5.2.0, tokenizers==0.22.1, gguf==0.19.0,
# cachetools==5.5.2. Env: PER_TASK (20 prompts per task), RATIOS (0.5,0.75).
set -euo pipefail
bash scripts/device/stage.sh >/dev/null
source scripts/device/setup.sh
cp -r scripts/parity/shims/* /tmp/site/
OUT=${OUT:-/tmp/parity-out}
mkdir -p "$OUT"
python3 scripts/parity/make_prompts.py "$OUT/prompts.jsonl" --per-task "${PER_TASK:-20}"
ratios=${RATIOS:-0.5,0.75}
sed "s#PROMPTS#$OUT/prompts.jsonl#" scripts/parity/parity.yaml > "$OUT/parity.yaml"
python3 - "$OUT/parity.yaml" "$ratios" <<'PY'
import sys
path, ratios = sys.argv[1], sys.argv[2].split(",")
text = open(path).read()
head, _, tail = text.partition("budgets:\n")
rest = tail.split("query_aware:", 1)[1]
budgets = "".join(f"  - compression_ratio: {r}\n" for r in ratios)
open(path, "w").write(head + "budgets:\n" + budgets + "query_aware:" + rest)
PY
smol_dir=$KVBENCH_CACHE/files/sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
start=$(date +%s)
/tmp/kvbench-new run "$OUT/parity.yaml" --device cuda --output "$OUT/kvbench" --fresh 2>&1 | tail -n 3
echo "kvbench: $(( $(date +%s) - start )) s"
start=$(date +%s)
RATIOS=$ratios python3 scripts/parity/kvpress_side.py "$smol_dir" SmolLM2-135M-Instruct.Q4_1.gguf "$OUT/prompts.jsonl" 2>&1 \
  | grep -v Warning | tail -n 40
echo "kvpress: $(( $(date +%s) - start )) s"
python3 scripts/parity/compare.py "$OUT/kvpress.json" "$OUT/kvbench/results.jsonl" | tee "$OUT/parity.txt"
