#!/usr/bin/env bash
# dstrain-health-probe (deploy/container/health_probe.cc), the Kubernetes exec probe, against a
# real dstrain-coordinator and dstrain-worker serving TLS as in deploy/k8s:
#   - the coordinator's "" service and the worker's "liveness" and "readiness" answer SERVING
#     over TLS with the CA alone (no client certificate, as a probe has none);
#   - a plaintext call, which is all the kubelet's own grpc: probe can make, fails against the
#     TLS port: the reason deploy/k8s uses exec probes (deploy/k8s/README.md, "Probes");
#   - the worker's readiness follows its coordinator session and its liveness does not;
#   - unknown services, wrong certificate names and bad command lines fail with 1 and 2.
# Every address is an IP, as in deploy/k8s's probes: a host name would go through gRPC's c-ares
# resolver, which Debian's gRPC 1.51 leaks a few bytes in (LeakSanitizer fails the asan run), and
# its native resolver cannot be chosen there (GRPC_DNS_RESOLVER=native aborts at start).
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
probe="$ws/deploy/container/dstrain-health-probe"
coordinator="$ws/coordinator/server/dstrain-coordinator"
worker="$ws/worker/agent/dstrain-worker"
dstrain="$ws/client/cli/dstrain"
out="$TEST_TMPDIR/health"
rm -rf "$out"
mkdir -p "$out/data"
pki="$out/pki"
"$ws/deploy/local/make_pki.sh" "$pki" probe-1

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$out"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
  exit 1
}
await_line() {  # FILE SECONDS PATTERN: prints the first match
  for _ in $(seq $(($2 * 10))); do
    if grep -m1 -o "$3" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  fail "no '$3' in $1 within $2 s"
}
expect() {  # EXIT_CODE DESCRIPTION PROBE_ARGS...: runs the probe once, checks its exit code
  local want=$1 what=$2 got=0
  shift 2
  "$probe" "$@" > "$out/probe.out" 2>&1 || got=$?
  if [[ $got != "$want" ]]; then
    fail "$what: dstrain-health-probe $* exited $got, expected $want: $(cat "$out/probe.out")"
  fi
  echo "ok: $what (exit $got: $(cat "$out/probe.out"))"
}
eventually() {  # EXIT_CODE DESCRIPTION PROBE_ARGS...: within 15 s
  local want=$1 what=$2 got
  shift 2
  for _ in $(seq 150); do
    got=0
    "$probe" "$@" > "$out/probe.out" 2>&1 || got=$?
    if [[ $got == "$want" ]]; then
      echo "ok: $what (exit $got: $(cat "$out/probe.out"))"
      return 0
    fi
    sleep 0.1
  done
  fail "$what: dstrain-health-probe $* still exits $got, expected $want: $(cat "$out/probe.out")"
}

"$coordinator" --listen 127.0.0.1:0 --data-dir "$out/coord" --metrics-listen 127.0.0.1:0 \
  --tls-ca "$pki/ca.pem" --tls-cert "$pki/coordinator.pem" --tls-key "$pki/coordinator.key" \
  --tokens "$pki/tokens" > "$out/coordinator.log" 2>&1 &
coord_pid=$!
pids+=("$coord_pid")
coord=$(await_line "$out/coordinator.log" 10 "listening on 127.0.0.1:[0-9]*")
coord=${coord#listening on }

expect 0 "coordinator health over TLS" --addr "$coord" --tls-ca "$pki/ca.pem"
expect 1 "plaintext (the kubelet's grpc: probe) against the TLS port" --addr "$coord" \
  --insecure --timeout 2
expect 1 "a certificate name that does not match" --addr "$coord" --tls-ca "$pki/ca.pem" \
  --server-name dstrain-coordinator.elsewhere.svc --timeout 2
expect 0 "a certificate name that matches" --addr "$coord" --tls-ca "$pki/ca.pem" \
  --server-name localhost
expect 1 "an unknown service" --addr "$coord" --tls-ca "$pki/ca.pem" --service nosuch
expect 1 "nothing listening" --addr 127.0.0.1:1 --tls-ca "$pki/ca.pem" --timeout 2
expect 2 "no --addr" --tls-ca "$pki/ca.pem"
expect 2 "neither --tls-ca nor --insecure" --addr "$coord"
expect 2 "an unknown flag" --addr "$coord" --insecure --tls-verify none

"$worker" --coordinator "$coord" --slots 1 --work-dir "$out/worker" --data-root "$out/data" \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --trainer "$dstrain" --gpus none \
  --tls-ca "$pki/ca.pem" --tls-cert "$pki/worker-probe-1.pem" \
  --tls-key "$pki/worker-probe-1.key" > "$out/worker.log" 2>&1 &
pids+=("$!")
health=$(await_line "$out/worker.log" 10 "health on 127.0.0.1:[0-9]*")
health=${health#health on }

expect 0 "worker liveness over TLS" --addr "$health" --tls-ca "$pki/ca.pem" --service liveness
eventually 0 "worker readiness once registered" --addr "$health" --tls-ca "$pki/ca.pem" \
  --service readiness
expect 1 "plaintext against the worker's TLS health port" --addr "$health" --insecure \
  --service liveness --timeout 2

kill -TERM "$coord_pid"
eventually 1 "worker readiness without its coordinator" --addr "$health" \
  --tls-ca "$pki/ca.pem" --service readiness --timeout 1
expect 0 "worker liveness without its coordinator" --addr "$health" --tls-ca "$pki/ca.pem" \
  --service liveness
echo "PASS"
