#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (workers first, so their trainers are stopped and
# reported, then the coordinator). Usage: deploy/local/down.sh [STATE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
state=${1:-out/local}
[[ -f $state/pids ]] || exit 0
mapfile -t pids < "$state/pids"
for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
  kill -TERM "${pids[i]}" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
done
rm -f "$state/pids"
