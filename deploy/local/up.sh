#!/usr/bin/env bash
# A one-machine dstrain service: one dstrain-coordinator and N dstrain-worker agents (one CPU slot
# each), in the background, logging under STATE_DIR (default out/local). Prints the coordinator's
# address as `export DSTRAIN_COORDINATOR=...` (eval-able) and where /metrics are; writes
# STATE_DIR/env with the same. Stop everything with deploy/local/down.sh.
# Usage: deploy/local/up.sh [WORKERS] [STATE_DIR]   (binaries from bazel-bin; build them first)
set -euo pipefail
cd "$(dirname "$0")/../.."
workers=${1:-2}
state=${2:-out/local}
bin=${DSTRAIN_BIN:-bazel-bin}
mkdir -p "$state"
state=$(cd "$state" && pwd)
if [[ -f $state/pids ]] && kill -0 $(head -n1 "$state/pids") 2>/dev/null; then
  echo "deploy/local: already running (see $state/env); stop it with deploy/local/down.sh" >&2
  exit 1
fi
: > "$state/pids"

await() {  # file pattern
  for _ in $(seq 200); do
    if line=$(grep -m1 -o "$2" "$1" 2>/dev/null); then echo "$line"; return 0; fi
    sleep 0.05
  done
  echo "deploy/local: no '$2' in $1:" >&2
  tail -n 20 "$1" >&2
  exit 1
}

"$bin/coordinator/server/dstrain-coordinator" --listen 127.0.0.1:0 --data-dir "$state/coordinator" \
  --metrics-listen 127.0.0.1:0 > "$state/coordinator.log" 2>&1 &
echo $! >> "$state/pids"
addr=$(await "$state/coordinator.log" "listening on 127.0.0.1:[0-9]*")
addr=${addr#listening on }
metrics=$(await "$state/coordinator.log" "http://127.0.0.1:[0-9]*/metrics")
{
  echo "export DSTRAIN_COORDINATOR=$addr"
  echo "# coordinator /metrics: $metrics"
} > "$state/env"
for i in $(seq "$workers"); do
  "$bin/worker/agent/dstrain-worker" --coordinator "$addr" --slots 1 --work-dir "$state/worker-$i" \
    --worker-id "local-$i" --trainer "$bin/client/cli/dstrain" --metrics-listen 127.0.0.1:0 \
    > "$state/worker-$i.log" 2>&1 &
  echo $! >> "$state/pids"
  echo "# worker local-$i /metrics: $(await "$state/worker-$i.log" "http://127.0.0.1:[0-9]*/metrics")" \
    >> "$state/env"
done
cat "$state/env"
