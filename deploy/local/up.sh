#!/usr/bin/env bash
# A one-machine dstrain service: one dstrain-coordinator and N dstrain-worker agents (one CPU slot
# each), in the background, logging under STATE_DIR (default out/local). Secure by default
# (docs/security.md): a throwaway CA and certificates under STATE_DIR/pki (make_pki.sh), TLS on
# every port, workers known by their certificates, the CLI by an admin token, and trainers
# confined to DATA_ROOT (default: this repository). Prints what the CLI needs as eval-able
# `export` lines (DSTRAIN_COORDINATOR, DSTRAIN_TLS_CA, DSTRAIN_TOKEN_FILE) and where /metrics are;
# writes STATE_DIR/env with the same. Stop everything with deploy/local/down.sh.
# Usage: deploy/local/up.sh [WORKERS] [STATE_DIR]   (binaries from bazel-bin; build them first)
#   DSTRAIN_DATA_ROOT=DIR   the workers' --data-root
#   DSTRAIN_LOCAL_INSECURE=1  plaintext and no tokens instead (each daemon logs a warning)
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

data_root=${DSTRAIN_DATA_ROOT:-$PWD}
pki="$state/pki"
coordinator_tls=(--insecure)
worker_tls() { echo --insecure; }
if [[ ${DSTRAIN_LOCAL_INSECURE:-0} != 1 ]]; then
  deploy/local/make_pki.sh "$pki" $(for i in $(seq "$workers"); do echo "local-$i"; done)
  coordinator_tls=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/coordinator.pem"
    --tls-key "$pki/coordinator.key" --tokens "$pki/tokens")
  worker_tls() {
    echo --tls-ca "$pki/ca.pem" --tls-cert "$pki/worker-$1.pem" --tls-key "$pki/worker-$1.key"
  }
fi

"$bin/coordinator/server/dstrain-coordinator" --listen 127.0.0.1:0 --data-dir "$state/coordinator" \
  --metrics-listen 127.0.0.1:0 "${coordinator_tls[@]}" > "$state/coordinator.log" 2>&1 &
echo $! >> "$state/pids"
addr=$(await "$state/coordinator.log" "listening on 127.0.0.1:[0-9]*")
addr=${addr#listening on }
metrics=$(await "$state/coordinator.log" "http://127.0.0.1:[0-9]*/metrics")
{
  echo "export DSTRAIN_COORDINATOR=$addr"
  if [[ ${DSTRAIN_LOCAL_INSECURE:-0} == 1 ]]; then
    echo "export DSTRAIN_INSECURE=1"
  else
    echo "export DSTRAIN_TLS_CA=$pki/ca.pem"
    echo "export DSTRAIN_TOKEN_FILE=$pki/admin.token"
  fi
  echo "# coordinator /metrics: $metrics"
} > "$state/env"
for i in $(seq "$workers"); do
  # shellcheck disable=SC2046  # worker_tls prints flags and paths without spaces
  "$bin/worker/agent/dstrain-worker" --coordinator "$addr" --slots 1 --work-dir "$state/worker-$i" \
    --worker-id "local-$i" --trainer "$bin/client/cli/dstrain" --metrics-listen 127.0.0.1:0 \
    --data-root "$data_root" $(worker_tls "local-$i") > "$state/worker-$i.log" 2>&1 &
  echo $! >> "$state/pids"
  echo "# worker local-$i /metrics: $(await "$state/worker-$i.log" "http://127.0.0.1:[0-9]*/metrics")" \
    >> "$state/env"
done
cat "$state/env"
