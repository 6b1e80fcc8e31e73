#!/usr/bin/env bash
# Device-side: from the parts in /tmp/stage build the kvbench cache (GGUFs joined and
# sha256-checked, with kvbench's .verified markers), unpack the binaries and install the gguf
# wheel for transformers. Source it: it exports KVBENCH_CACHE, PYTHONPATH and LD_LIBRARY_PATH.
set -euo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64
export KVBENCH_CACHE=/tmp/kvcache
join_model() {  # name sha256 file
  local dir=$KVBENCH_CACHE/files/sha256-$2
  # Only the models whose parts this session staged.
  compgen -G "/tmp/stage/$1.part*" >/dev/null || [ -f "$dir/$3.verified" ] || return 0
  if [ ! -f "$dir/$3.verified" ]; then
    mkdir -p "$dir"
    cat /tmp/stage/$1.part* > "$dir/$3"
    echo "$2  $dir/$3" | sha256sum -c -
    echo -n "$2" > "$dir/$3.verified"
  fi
}
join_model gemma a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 gemma-3-270m-q4_k_m.gguf
join_model smol b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 SmolLM2-135M-Instruct.Q4_1.gguf
for b in new old; do
  [ -f /tmp/stage/kvbench-$b.xz ] || continue
  [ -x /tmp/kvbench-$b ] || { xz -dc /tmp/stage/kvbench-$b.xz > /tmp/kvbench-$b; chmod +x /tmp/kvbench-$b; }
done
if [ ! -d /tmp/site/gguf ] && compgen -G "/tmp/stage/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/stage/*.whl
fi
export PYTHONPATH=/tmp/site
