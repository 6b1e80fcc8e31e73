#!/usr/bin/env bash
# Device-side staging for scripts/device/*.sh: move the files a call carried in `.stage/NAME/`
# into /tmp/stage (which survives between calls while the machine stays warm).
set -euo pipefail
mkdir -p /tmp/stage
for d in .stage/*/; do
  [ -d "$d" ] && cp -a "$d"* /tmp/stage/ 2>/dev/null || true
done
ls -la /tmp/stage | tail -n +2
