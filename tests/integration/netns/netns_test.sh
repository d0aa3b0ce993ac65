#!/usr/bin/env bash
# Several hosts on one machine: the coordinator and each worker in a network namespace of its own
# (made here with `ip netns`), joined by a bridge in a further namespace, each with its own
# address on 10.99.0.0/24. Loopback stays down everywhere, so nothing can lean on 127.0.0.1: the
# daemons listen on their namespace's address, the trainers' Gloo connections go host to host,
# and the CLI talks to the coordinator from a namespace of its own. The workers share the checkpoint
# directory by path, as pods share an NFS / ReadWriteMany volume.
#   1. a 2-rank ZeRO-2 job trains across workers a and b, saving every 2 steps;
#   2. mid-run, b's namespace is torn down with everything in it (a host lost);
#   3. the coordinator declares b LOST after its lease, stops a's rank, and the job resumes on a
#      and a third worker c (started after the loss) from its last committed checkpoint, and
#      finishes;
#   4. nothing the coordinator hands out names a loopback address or a path outside the shared
#      directories.
# Needs root and network namespaces; where they cannot be made the test reports itself skipped
# (JUnit XML). Runs outside Bazel's sandbox ("local": `ip netns` mounts under /run/netns).
set -euo pipefail
out="$TEST_TMPDIR/netns"
rm -rf "$out" && mkdir -p "$out"

source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/skip.sh"
skip() { skip_test netns_test netns "$1"; }

[[ $(id -u) == 0 ]] || skip "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"
command -v ip > /dev/null || skip "no ip command (iproute2)"
# Namespaces an earlier run left behind (killed before its trap ran): their owner is gone.
for n in $(ip netns list 2> /dev/null | awk '{print $1}' | grep -E '^dsn[0-9]+' || true); do
  owner=${n#dsn}
  owner=${owner%%[a-z]*}
  if [[ ! -d /proc/$owner ]]; then
    ip netns pids "$n" 2> /dev/null | xargs -r kill -9 2> /dev/null || true
    ip netns del "$n" 2> /dev/null || true
  fi
done
tag="dsn$$"
probe="${tag}p"
ip netns add "$probe" 2> "$out/probe.err" || skip "cannot create a network namespace: $(cat "$out/probe.err")"
ip netns del "$probe"

net=10.99.0
coord_ip=$net.1
export DSTRAIN_PKI_SANS="IP:$coord_ip"
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/service.sh"
real_dstrain=$dstrain

namespaces=()
ns_cleanup() {
  cleanup
  for n in "${namespaces[@]}"; do
    ip netns pids "$n" 2> /dev/null | xargs -r kill -9 2> /dev/null || true
    ip netns del "$n" 2> /dev/null || true
  done
}
trap ns_cleanup EXIT
trap "exit 1" TERM INT

switch="${tag}s"
ip netns add "$switch"
namespaces+=("$switch")
ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
declare -A ns_of addr_of
host() {  # name index: a namespace with eth0 at $net.index on the bridge, loopback down
  local n="${tag}$1"
  ip netns add "$n"
  namespaces+=("$n")
  ip -n "$switch" link add "v$2" type veth peer name eth0 netns "$n"
  ip -n "$switch" link set "v$2" master br0 up
  ip -n "$n" addr add "$net.$2/24" dev eth0
  ip -n "$n" link set eth0 up
  ns_of[$1]=$n
  addr_of[$1]=$net.$2
}
host coord 1
host a 2
host b 3
host c 4
host cli 5  # the CLI's host (a daemon's own address is reached over loopback, which is down)
for n in "${ns_of[@]}"; do
  [[ $(ip -n "$n" -o link show lo) == *"state DOWN"* ]] || fail "loopback of $n is up"
done

# The CLI runs in its own namespace (service.sh's helpers call $dstrain).
cat > "$out/dstrain-in-ns" <<SH
#!/bin/sh
exec ip netns exec ${ns_of[cli]} $real_dstrain "\$@"
SH
chmod +x "$out/dstrain-in-ns"
dstrain="$out/dstrain-in-ns"

"$make_pki" "$pki" a b c
ip netns exec "${ns_of[coord]}" "$coordinator" --listen "$coord_ip:0" --data-dir "$out/coord" \
  --metrics-listen "$coord_ip:0" --lease-seconds 3 --heartbeat-seconds 0.5 \
  --tls-ca "$pki/ca.pem" --tls-cert "$pki/coordinator.pem" --tls-key "$pki/coordinator.key" \
  --tokens "$pki/tokens" > "$out/coordinator.log" 2>&1 &
pids+=("$!")
addr=$(await_line "$out/coordinator.log" 10 "listening on $coord_ip:[0-9]*")
export DSTRAIN_COORDINATOR=${addr#listening on }

netns_worker() {  # id: one slot, its own address for health, metrics and the trainers
  local id=$1
  ip netns exec "${ns_of[$id]}" "$worker" --coordinator "$DSTRAIN_COORDINATOR" --slots 1 \
    --work-dir "$out/work_$id" --worker-id "$id" --trainer "$real_dstrain" --data-root "$out" \
    --listen "${addr_of[$id]}:0" --metrics-listen "${addr_of[$id]}:0" \
    --tls-ca "$pki/ca.pem" --tls-cert "$pki/worker-$id.pem" --tls-key "$pki/worker-$id.key" \
    > "$out/worker_$id.log" 2>&1 &
  pids+=("$!")
  await_line "$out/worker_$id.log" 10 "trainers listen on ${addr_of[$id]} " > /dev/null
}
netns_worker a
netns_worker b
await_workers() {  # count of READY workers
  for _ in $(seq 100); do
    [[ $("$dstrain" workers -o json | $py -c "import json,sys; print(sum(w['state'] == 'WORKER_STATE_READY' for w in json.load(sys.stdin).get('workers', [])))") == "$1" ]] && return 0
    sleep 0.2
  done
  fail "not $1 READY workers"
}
await_workers 2

echo "== 1. a 2-rank ZeRO-2 job across hosts a and b"
shared="$out/shared"
mkdir -p "$shared"
make_job "$out/job.json" 2 80 "$shared/ckpt" '{"max_restarts": 2}' \
  "{\"model\": {\"type\": \"gpt\", \"n_layer\": 2, \"n_head\": 4, \"n_embd\": 128, \"vocab_size\": 256, \"block_size\": 128}, \"data\": {\"train\": \"$text\", \"seq_len\": 128}}"
"$dstrain" submit "$out/job.json" --id hosts > /dev/null
await_state hosts JOB_STATE_RUNNING 60
job_field hosts "sorted(r['worker_id'] for r in j['job']['assignments'])" > "$out/placed.txt"
grep -q "'a', 'b'" "$out/placed.txt" || fail "attempt 1 not on a and b: $(cat "$out/placed.txt")"
await_step hosts 7 180

echo "== 2. host b lost"
ip netns pids "${ns_of[b]}" | xargs -r kill -9
ip netns del "${ns_of[b]}"
# The last step any rank finished: rank 0 on a blocks in its next collective without b.
sleep 1
killed_at=$(job_field hosts "int(j['job']['current_step'])")
netns_worker c

echo "== 3. b LOST, the job resumes on a and c"
for _ in $(seq 150); do
  [[ $(job_field hosts "j['job']['attempt']") -ge 2 && $(job_field hosts "j['job']['state']") == JOB_STATE_RUNNING ]] && break
  sleep 0.2
done
job_field hosts "(j['job']['attempt'], j['job']['state'])"
job_field hosts "sorted(r['worker_id'] for r in j['job']['assignments'])" > "$out/placed2.txt"
grep -q "'a', 'c'" "$out/placed2.txt" || fail "attempt 2 not on a and c: $(cat "$out/placed2.txt")"
"$dstrain" workers -o json > "$out/workers.json"
$py - "$out/workers.json" <<'PY' || fail "b is not LOST"
import json, sys
w = {x["worker_id"]: x["state"] for x in json.load(open(sys.argv[1]))["workers"]}
assert w["b"] == "WORKER_STATE_LOST", w
PY
"$dstrain" watch hosts > "$out/watch.txt" || fail "the job did not succeed: $(tail -5 "$out/watch.txt")"
"$dstrain" status hosts -o json > "$out/status.json"
"$dstrain" checkpoints hosts -o json > "$out/ckpts.json"
$py - "$out/status.json" "$out/ckpts.json" "$killed_at" "$shared" <<'PY' || fail "resume"
import json, sys
status, ckpts, killed_at, shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
job = json.load(open(status))["job"]
assert job["state"] == "JOB_STATE_SUCCEEDED", job["state"]
assert int(job["current_step"]) == 80, job["current_step"]
assert int(job["restarts"]) == 1, job.get("restarts")
events = json.load(open(status)).get("events", [])
reasons = [e.get("reason") for e in events]
assert "LeaseExpired" in reasons or any("lost" in (e.get("message") or "").lower() for e in events), reasons
# Every committed shard lies in the shared directory.
for c in json.load(open(ckpts))["checkpoints"]:
    for s in c.get("shards", []):
        assert s["path"].startswith(shared + "/"), s["path"]
print("killed at step", killed_at, "reasons", reasons)
PY
# Attempt 2 started from a checkpoint taken before the loss (not from scratch, at most two
# steps, one checkpoint interval, before the step last seen running).
"$dstrain" logs hosts --rank 0 > "$out/logs.txt"
resumed=$(sed -n 's/.*resumed from .* at step \([0-9]*\)$/\1/p' "$out/logs.txt" | tail -1)
[[ -n $resumed ]] || fail "no 'resumed from' line in rank 0's log"
((resumed >= 2 && resumed <= killed_at && resumed >= killed_at - 4)) ||
  fail "resumed at step $resumed, lost at step $killed_at"
echo "lost at step $killed_at, resumed at step $resumed"

echo "== 4. nothing handed out names loopback"
$py - "$out/workers.json" <<'PY' || fail "a loopback address in the worker records"
import json, sys
for w in json.load(open(sys.argv[1]))["workers"]:
    text = json.dumps(w)
    assert "127.0.0.1" not in text and "localhost" not in text, text
PY
! grep -l "127.0.0.1" "$out/status.json" > /dev/null || fail "status names 127.0.0.1"
echo PASS
