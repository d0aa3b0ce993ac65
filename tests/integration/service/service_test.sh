#!/usr/bin/env bash
# The service end to end with real processes on 127.0.0.1 (every port picked by the OS): a
# dstrain-coordinator, dstrain-worker agents that spawn real trainers, and the dstrain CLI.
#   1. submit → run → SUCCEEDED on two workers (ZeRO-2, two ranks rendezvousing through the
#      coordinator's store), with step metrics and COMMITTED checkpoints in RocksDB and the
#      trainers' output in the job log; a duplicate submit returns the same job;
#   2. cancel while running: CANCELLED with the reason given (state and event), each agent gets the
#      STOP and reports its rank KILLED by SIGTERM, and the slots are free for the next job;
#   3. the gang rule: 3 one-slot workers and a 4-rank job: it waits, and runs when a 4th
#      registers;
#   4. a coordinator restart mid-queue restores every job (queued ones stay queued, finished ones
#      keep their metrics and checkpoints) and the workers reconnect;
#   5. a real Prometheus (Debian's) scrapes the coordinator and a worker; promtool finds nothing
#      to complain about in either exposition;
#   1b. who may do what, over TLS with tokens (as every section runs): no token, a plaintext
#      client, a viewer changing things and a submitter touching another's job are refused with
#      their codes and change nothing; a submitter cancels and deletes its own job;
#   6. GPU slots, on two workers with fake GPUs (--fake-gpus) running the agent tests' stand-in
#      trainer: a job.device cuda job of 4 ranks stays PENDING beside free CPU slots, its reason
#      naming what it needs and what is registered, and runs, one rank per GPU, each rank seeing
#      its own GPU (CUDA_VISIBLE_DEVICES) and --device cuda, once the second worker's GPUs join.
set -euo pipefail
out="$TEST_TMPDIR/service"
rm -rf "$out" && mkdir -p "$out"
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/service.sh"

# Two more principals besides the admin service.sh made (tokens are read at the coordinator's
# start).
alice=$("$dstrain" token alice submitter --append "$pki/tokens")
vera=$("$dstrain" token vera viewer --append "$pki/tokens" 2> /dev/null)
start_coordinator
start_worker wa 1
start_worker wb 1

echo "== 1. submit, run, SUCCEEDED"
make_job "$out/run.json" 2 6 "$out/ckpt_run"
[[ $("$dstrain" submit "$out/run.json" --id run-a) == run-a ]] || fail "submit did not print the id"
"$dstrain" watch run-a > "$out/watch.txt" || fail "watch run-a did not exit 0"
grep -q "SUCCEEDED" "$out/watch.txt" || fail "watch did not report SUCCEEDED"
[[ $(job_field run-a "j['job']['state']") == JOB_STATE_SUCCEEDED ]] || fail "run-a not SUCCEEDED"
[[ $(job_field run-a "j['job']['latest_metrics']['step']") == 6 ]] || fail "metrics: no step 6"
"$dstrain" checkpoints run-a -o json > "$out/ckpts.json"
$py - "$out/ckpts.json" <<'PY' || fail "checkpoint catalog"
import json, sys
c = json.load(open(sys.argv[1]))["checkpoints"]
steps = [x["step"] for x in c if x["state"] == "CHECKPOINT_STATE_COMMITTED" and len(x["shards"]) == 2]
assert steps == ["2", "4", "6"] or steps == [2, 4, 6], c
PY
"$dstrain" logs run-a > "$out/logs.txt"
grep -q "^\[rank 0\] " "$out/logs.txt" || fail "no rank-0 output in the job log"
"$dstrain" submit "$out/run.json" --id run-a > "$out/dup.txt" 2> "$out/dup.err" ||
  fail "duplicate submit failed"
grep -q "already existed" "$out/dup.err" || fail "duplicate submit not reported as existing"
[[ $("$dstrain" list -o json | $py -c "import json,sys; print(len(json.load(sys.stdin)['jobs']))") == 1 ]] ||
  fail "duplicate submit created a second job"

echo "== 1b. who may do what"
expect_refusal() {  # code-name description command...
  local code=$1 what=$2
  shift 2
  local err
  if err=$("$@" 2>&1 > /dev/null); then fail "$what: succeeded"; fi
  grep -q "$code" <<<"$err" || fail "$what: not $code: $err"
}
expect_refusal UNAUTHENTICATED "no token" env -u DSTRAIN_TOKEN "$dstrain" list
expect_refusal UNAUTHENTICATED "an unknown token" env DSTRAIN_TOKEN=dst_0123 "$dstrain" list
expect_refusal UNAVAILABLE "a plaintext client" env -u DSTRAIN_TLS_CA DSTRAIN_INSECURE=1 "$dstrain" list
expect_refusal UNAVAILABLE "a client not trusting the CA" env -u DSTRAIN_TLS_CA "$dstrain" list
[[ $(DSTRAIN_TOKEN=$vera "$dstrain" list -o json | $py -c "import json,sys; print([j['job_id'] for j in json.load(sys.stdin)['jobs']])") == "['run-a']" ]] ||
  fail "a viewer does not see every job"
expect_refusal PERMISSION_DENIED "a viewer cancelling" env DSTRAIN_TOKEN="$vera" "$dstrain" cancel run-a
expect_refusal PERMISSION_DENIED "a viewer submitting" env DSTRAIN_TOKEN="$vera" "$dstrain" submit "$out/run.json" --id vera-1
expect_refusal PERMISSION_DENIED "a submitter reading another's job" env DSTRAIN_TOKEN="$alice" "$dstrain" status run-a
expect_refusal PERMISSION_DENIED "a submitter deleting another's job" env DSTRAIN_TOKEN="$alice" "$dstrain" delete run-a
[[ $(DSTRAIN_TOKEN=$alice "$dstrain" list -o json | $py -c "import json,sys; print(len(json.load(sys.stdin).get('jobs', [])))") == 0 ]] ||
  fail "a submitter sees another's job in the list"
[[ $(job_field run-a "j['job']['state']") == JOB_STATE_SUCCEEDED ]] || fail "run-a changed"
make_job "$out/alice.json" 2 100000
DSTRAIN_TOKEN=$alice "$dstrain" submit "$out/alice.json" --id alice-1 > /dev/null
DSTRAIN_TOKEN=$alice "$dstrain" cancel alice-1 --reason "changed my mind" > /dev/null
[[ $(DSTRAIN_TOKEN=$alice job_field alice-1 "j['job']['owner'], j['job']['state_message']") == "alice changed my mind (by alice)" ]] ||
  fail "alice-1: owner and cancel message"
DSTRAIN_TOKEN=$alice "$dstrain" delete alice-1 > /dev/null || fail "alice cannot delete her job"
expect_refusal NOT_FOUND "a deleted job" "$dstrain" status alice-1

echo "== 2. cancel while running frees the workers"
make_job "$out/long.json" 2 100000
"$dstrain" submit "$out/long.json" --id long > /dev/null
await_state long JOB_STATE_RUNNING 30
"$dstrain" cancel long --reason "integration test" > /dev/null
# The coordinator ends the job with the reason given and who gave it (the token's principal), and
# records the one transition.
[[ $(job_field long "j['job']['state']") == JOB_STATE_CANCELLED ]] || fail "long not CANCELLED"
[[ $(job_field long "j['job']['state_reason'], j['job']['state_message']") == "Cancelled integration test (by admin)" ]] ||
  fail "long: state reason and message are not the cancel's"
[[ $(job_field long "j['job']['owner']") == admin ]] || fail "long: the owner is not the submitter"
[[ $(job_field long "[(e['from_state'], e['reason'], e['message']) for e in j['events'] if e['to_state'] == 'JOB_STATE_CANCELLED']") == "[('JOB_STATE_RUNNING', 'Cancelled', 'integration test (by admin)')]" ]] ||
  fail "long: no single RUNNING -> CANCELLED event with the reason"
"$dstrain" watch long > /dev/null && fail "watch of a cancelled job exited 0"
make_job "$out/short.json" 2 2
"$dstrain" submit "$out/short.json" --id after-cancel --follow > "$out/after_cancel.txt" ||
  fail "the job after the cancelled one did not succeed"
# Each agent got the coordinator's STOP and ended its rank with SIGTERM (the trainer does not
# handle it), which it reports as KILLED. It logs the end before it frees the slot, and
# after-cancel could only start in that slot, so the lines are there by now.
ranks=""
for w in wa wb; do
  grep -q "stopping 1 rank(s) of job long attempt 1: STOP from the coordinator (Cancelled)$" \
    "$out/worker_$w.log" || fail "$w: no STOP for the cancelled job"
  r=$(sed -n 's/^dstrain-worker: job long attempt 1 rank \([0-9]\) KILLED: killed by signal 15 (Terminated)$/\1/p' \
    "$out/worker_$w.log")
  [[ -n $r ]] || fail "$w: the cancelled job's rank did not end KILLED by SIGTERM"
  ranks="$ranks$r"
done
[[ $ranks == 01 || $ranks == 10 ]] || fail "the cancelled ranks are '$ranks', not 0 and 1"
pgrep -f "job-id long" > /dev/null && fail "trainers of the cancelled job still run"

echo "== 3. gang: a 4-rank job waits for a 4th worker"
start_worker wc 1
make_job "$out/gang.json" 4 2
"$dstrain" submit "$out/gang.json" --id gang > /dev/null
sleep 3
[[ $(job_field gang "j['job']['state']") == JOB_STATE_PENDING ]] || fail "gang started on 3 slots"
start_worker wd 1
"$dstrain" watch gang > /dev/null || fail "gang did not succeed once the 4th worker came"

echo "== 4. coordinator restart mid-queue"
make_job "$out/huge.json" 8 2
"$dstrain" submit "$out/huge.json" --id queued-1 > /dev/null
"$dstrain" submit "$out/huge.json" --id queued-2 --priority 5 > /dev/null
kill -TERM "$coord_pid"
# SIGTERM is the coordinator's orderly shutdown: it exits 0 (coordinator/server/main.cc).
wait "$coord_pid" || fail "the coordinator did not exit 0 on SIGTERM (status $?)"
start_coordinator  # same port and data directory
for j in queued-1 queued-2; do
  [[ $(job_field $j "j['job']['state']") == JOB_STATE_PENDING ]] || fail "$j lost its place"
done
[[ $(job_field run-a "j['job']['state']") == JOB_STATE_SUCCEEDED ]] || fail "run-a lost"
[[ $(job_field run-a "len(j['metrics'])") -ge 1 ]] || fail "run-a lost its metrics"
[[ $(job_field long "j['job']['state']") == JOB_STATE_CANCELLED ]] || fail "long lost"
[[ $("$dstrain" checkpoints run-a -o json | $py -c "import json,sys; print(len(json.load(sys.stdin)['checkpoints']))") == 3 ]] ||
  fail "run-a lost its checkpoints"
# The workers reconnect to the restarted coordinator and can run again.
for _ in $(seq 100); do
  ready=$("$dstrain" workers -o json | $py -c "import json,sys; print(sum(w['state']=='WORKER_STATE_READY' for w in json.load(sys.stdin)['workers']))")
  [[ $ready == 4 ]] && break
  sleep 0.1
done
[[ $ready == 4 ]] || fail "workers did not come back ($ready ready)"
"$dstrain" cancel queued-1 > /dev/null
"$dstrain" cancel queued-2 > /dev/null
"$dstrain" submit "$out/short.json" --id after-restart --follow > /dev/null ||
  fail "no job runs after the restart"

echo "== 5. Prometheus scrapes both daemons"
scrape() {  # name url: saves the exposition as $out/name.prom, which promtool must pass
  curl -sf "$2" > "$out/$1.prom" || fail "cannot scrape $2"
  promtool check metrics < "$out/$1.prom" || fail "promtool: $1"
}
scrape coordinator "$coord_metrics"
scrape worker "${worker_metrics[wa]}"
grep -q '^dstrain_jobs{state="SUCCEEDED"} 4' "$out/coordinator.prom" ||
  fail "dstrain_jobs does not count the 4 succeeded jobs"
prom_port=$($py -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
cat > "$out/prometheus.yml" <<YML
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: dstrain
    static_configs:
      - targets: ['${coord_metrics#http://}', '${worker_metrics[wa]#http://}']
YML
sed -i 's|/metrics||g' "$out/prometheus.yml"
prometheus --config.file="$out/prometheus.yml" --storage.tsdb.path="$out/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$out/prometheus.log" 2>&1 &
pids+=("$!")
up=0
for _ in $(seq 200); do
  up=$(curl -s "http://127.0.0.1:$prom_port/api/v1/query?query=sum(up)" |
    $py -c "import json,sys; r=json.load(sys.stdin)['data']['result']; print(r[0]['value'][1] if r else 0)" 2>/dev/null || echo 0)
  [[ $up == 2 ]] && break
  sleep 0.1
done
[[ $up == 2 ]] || fail "Prometheus does not see both targets up ($up)"
for q in 'dstrain_workers{state="READY"}' 'dstrain_worker_slots'; do
  v=$(curl -s -G "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$q" |
    $py -c "import json,sys; r=json.load(sys.stdin)['data']['result']; print(r[0]['value'][1] if r else '')")
  [[ -n $v ]] || fail "Prometheus has no $q"
done

echo "== 6. GPU slots: a cuda job waits for GPUs, then runs one rank per GPU"
gib=1073741824
start_worker ga 0 --fake-gpus "FakeGPU:$gib,FakeGPU:$gib" --trainer "$fake_trainer"
make_job "$out/gpu.json" 4 2 "" '{"device": "cuda"}'
"$dstrain" submit "$out/gpu.json" --id on-gpus > /dev/null
sleep 1
[[ $(job_field on-gpus "j['job']['state']") == JOB_STATE_PENDING ]] ||
  fail "the cuda job started without 4 GPUs (4 CPU slots are free)"
[[ $(job_field on-gpus "j['job']['device']") == JOB_DEVICE_CUDA ]] || fail "job.device not kept"
want="needs 4 GPU slots; 2 registered (2 free); more than the cluster has: it waits for workers to join"
[[ $(job_field on-gpus "j['job']['queue_reason']") == "$want" ]] ||
  fail "queue reason: $(job_field on-gpus "j['job'].get('queue_reason')")"
"$dstrain" status on-gpus | grep -qF "Waiting:     $want" || fail "status does not say why it waits"
"$dstrain" workers > "$out/workers.txt"
grep -q "^ga .* 2 x FakeGPU (1.0 GiB) " "$out/workers.txt" || fail "workers: no GPUs on ga"
start_worker gb 0 --fake-gpus "FakeGPU:$gib,FakeGPU:$gib" --trainer "$fake_trainer"
"$dstrain" watch on-gpus > /dev/null || fail "the cuda job did not succeed once 4 GPUs were there"
"$dstrain" status on-gpus -o json > "$out/on_gpus.json"
$py - "$out/on_gpus.json" <<'PY' || fail "the cuda job's placement"
import json, sys
events = json.load(open(sys.argv[1]))["events"]
placed = [e["message"] for e in events if e["reason"] == "GangScheduled"]
assert placed == ["attempt 1: 4 rank(s) on GPU slots of ga, gb"], placed
PY
# One rank per GPU: each worker's two ranks saw its GPUs 0 and 1.
for w in ga gb; do
  seen=$(cat "$out/work_$w"/jobs/on-gpus/attempt-1/rank-*/cuda_visible_devices.txt | sort | tr '\n' ' ')
  [[ $seen == "0 1 " ]] || fail "the ranks on $w saw CUDA_VISIBLE_DEVICES $seen"
done
"$dstrain" logs on-gpus > "$out/gpu_logs.txt"
for r in 0 1 2 3; do
  grep -qE "^\[rank $r\] rank $r device cuda CUDA_VISIBLE_DEVICES=[01]$" "$out/gpu_logs.txt" ||
    fail "rank $r did not run on its own GPU with --device cuda"
done
"$dstrain" workers -o json | $py -c "
import json, sys
w = {x['worker_id']: x for x in json.load(sys.stdin)['workers']}
assert [g['name'] for g in w['gb']['gpus']] == ['FakeGPU', 'FakeGPU'], w['gb']
assert int(w['gb']['gpus'][1]['memory_bytes']) == $gib, w['gb']
assert w['wa'].get('gpus', []) == [], w['wa']
" || fail "workers -o json: GPUs"
scrape coordinator_gpu "$coord_metrics"
scrape worker_gpu "${worker_metrics[ga]}"
grep -q '^dstrain_slots{kind="gpu",state="free"} 4' "$out/coordinator_gpu.prom" ||
  fail "dstrain_slots does not count 4 free GPU slots"
grep -q '^dstrain_slots{kind="cpu",state="free"} 4' "$out/coordinator_gpu.prom" ||
  fail "dstrain_slots does not count 4 free CPU slots"
grep -q '^dstrain_worker_gpus 2' "$out/worker_gpu.prom" || fail "dstrain_worker_gpus"
echo "PASS"
