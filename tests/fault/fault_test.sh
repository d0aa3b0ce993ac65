#!/usr/bin/env bash
# Fault tolerance with real processes (docs/service.md, "Fault tolerance"): a 2-rank ZeRO-2 job on three one-slot workers
# (one spare), checkpoints every 2 steps, max_restarts 3, job.comm_timeout 5 s. Each case injects
# one fault at a random step and checks that the job SUCCEEDS with final weights bitwise equal to
# an uninterrupted run (dstrain export of the last checkpoint, cmp), then prints the figures:
# time to detect (fault → RESTARTING event), time to resume (fault → the next attempt's
# AllRanksRunning), steps lost (last step reached − step resumed from).
#   worker-kill   kill -9 of the agent holding rank 1 (its trainer dies with it)
#   trainer-kill  kill -9 of rank 1's trainer
#   hang          SIGSTOP of rank 1's trainer: rank 0's watchdog aborts the stuck collective
#   drain         SIGTERM to the agent holding rank 1: checkpoint at the next step, move
#   coordinator   kill -9 of the coordinator mid-run (and once during a checkpoint), restart
# and max_restarts exhausted: FAILED with the reason in the status.
set -euo pipefail
out="$TEST_TMPDIR/fault"
rm -rf "$out" && mkdir -p "$out"
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/service.sh"
steps=40
extra='{"max_restarts": 3, "comm_timeout": 5, "checkpoint_every": 2}'
# Big enough that a step takes tens of milliseconds, so a fault lands mid-run.
model='{"steps_per_print": 1, "train_micro_batch_size_per_gpu": 8, "model": {"type": "gpt", "n_layer": 3, "n_head": 4, "n_embd": 128, "vocab_size": 256, "block_size": 64}, "data": {"train": "'"$text"'", "seq_len": 64}}'
RANDOM=${FAULT_SEED:-$$}

start_coordinator
for w in wa wb wc; do start_worker "$w" 1 --drain-seconds 30; done

trainer_pid() {  # job attempt rank
  pgrep -f "jobs/$1/attempt-$2/rank-$3/job.json" | head -n1
}
worker_of() {  # job rank
  job_field "$1" "j['job']['assignments'][$2]['worker_id']"
}
# Seconds since the epoch of the first event of JOB with REASON after attempt A began.
event_time() {  # job reason [nth]
  "$dstrain" status "$1" -o json | $py -c "
import json, sys, datetime
ev = [e for e in json.load(sys.stdin)['events'] if e['reason'] == '$2']
n = int('${3:-1}')
if len(ev) < n: print(''); sys.exit()
t = ev[n - 1]['time'].rstrip('Z')
main, _, frac = t.partition('.')
d = datetime.datetime.strptime(main, '%Y-%m-%dT%H:%M:%S').replace(tzinfo=datetime.timezone.utc)
print(d.timestamp() + (float('0.' + frac) if frac else 0))"
}
# "LAST RESUMED": the last step the first attempt finished (its rank 0's metrics file, in the
# work directory of whichever worker ran it: exact even when that worker's agent died before
# relaying it) and the step the second attempt resumed from (its rank 0's output).
last_and_resumed() {  # job
  "$dstrain" logs "$1" --rank 0 | $py -c "
import glob, json, re, sys
metrics = glob.glob('$out/work_*/jobs/$1/attempt-1/rank-0/metrics.jsonl')
last = max(json.loads(l)['step'] for f in metrics for l in open(f) if l.strip())
line = next(l for l in sys.stdin.read().splitlines() if 'resumed from' in l)
resumed = int(re.search(r'at step (\d+)', line).group(1))
# A step's metrics line follows its checkpoint: killed in between, the file ends one step short.
print(max(last, resumed), resumed)"
}
export_weights() {  # ckpt-dir out
  "$dstrain" export "$1" --out "$2" > /dev/null || fail "export of $1"
}

echo "== reference: an uninterrupted run"
make_job "$out/ref.json" 2 "$steps" "$out/ckpt_ref" "$extra" "$model"
"$dstrain" submit "$out/ref.json" --id ref --follow > /dev/null || fail "reference run failed"
export_weights "$out/ckpt_ref" "$out/ref.bin"

figures="$out/figures.txt"
: > "$figures"
run_case() {  # kind [n]
  local kind=$1 name="$1${2:+-$2}"
  local job="f-$name"
  make_job "$out/$name.json" 2 "$steps" "$out/ckpt_$name" "$extra" "$model"
  "$dstrain" submit "$out/$name.json" --id "$job" > /dev/null
  await_state "$job" JOB_STATE_RUNNING 30
  local at=$((4 + RANDOM % (steps - 10)))
  await_step "$job" "$at" 60
  local reached victim t0
  reached=$(job_field "$job" "int(j['job'].get('current_step', 0))")
  victim=$(worker_of "$job" 1)
  t0=$(now)
  case $kind in
    worker-kill)
      local orphan
      orphan=$(trainer_pid "$job" 1 1)
      kill -9 "${worker_pid[$victim]}"
      # Its trainer must not outlive it (no orphan keeps training or holds a port).
      for _ in $(seq 20); do kill -0 "$orphan" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$orphan" 2>/dev/null && fail "the trainer of a killed agent still runs"
      ;;
    trainer-kill) kill -9 "$(trainer_pid "$job" 1 1)" ;;
    hang) kill -STOP "$(trainer_pid "$job" 1 1)" ;;
    drain) kill -TERM "${worker_pid[$victim]}" ;;
    coordinator)
      kill -9 "$coord_pid"
      sleep 1
      start_coordinator
      # Again while a checkpoint is being committed and recorded in the catalog: the moment a
      # new checkpoint directory appears.
      local before
      before=$(ls "$out/ckpt_$name" | grep -c "^step_" || true)
      for _ in $(seq 2000); do
        [[ $(ls "$out/ckpt_$name" | grep -c "^step_" || true) -gt $before ]] && break
        sleep 0.005
      done
      kill -9 "$coord_pid"
      start_coordinator
      ;;
  esac
  "$dstrain" watch "$job" > "$out/watch_$name.txt" || fail "$name: job did not succeed"
  export_weights "$out/ckpt_$name" "$out/$name.bin"
  cmp -s "$out/ref.bin" "$out/$name.bin" || fail "$name: final weights differ from the uninterrupted run"
  local attempts last resumed detect resume
  attempts=$(job_field "$job" "j['job']['attempt']")
  if [[ $kind == coordinator ]]; then
    [[ $attempts == 1 ]] || fail "coordinator restart restarted the job (attempt $attempts)"
    [[ $("$dstrain" checkpoints "$job" -o json | $py -c "import json,sys; print(max(int(c['step']) for c in json.load(sys.stdin)['checkpoints'] if c['state'] == 'CHECKPOINT_STATE_COMMITTED'))") == "$steps" ]] ||
      fail "the catalog lost the final checkpoint across coordinator restarts"
    grep -c "started job $job attempt 1 rank" "$out"/worker_*.log | awk -F: '{s+=$2} END {exit s != 2}' ||
      fail "a rank ran twice across the coordinator restart"
    echo "| coordinator kill -9, twice (at step $reached and during a checkpoint) | — | — | 0 (trainers kept training) |" >> "$figures"
  else
    [[ $attempts == 2 ]] || fail "$name: expected one restart, got attempt $attempts"
    read -r last resumed < <(last_and_resumed "$job") ||
      fail "$name: the restarted attempt did not resume from a checkpoint"
    detect=$($py -c "print(f'{$(event_time "$job" "$(job_field "$job" "[e['reason'] for e in j['events'] if e['to_state'] == 'JOB_STATE_RESTARTING'][0]")") - $t0:.2f}')")
    resume=$($py -c "print(f'{$(event_time "$job" AllRanksRunning 2) - $t0:.2f}')")
    echo "| $name (at step ~$reached) | ${detect} s | ${resume} s | $((last - resumed)) (last step $last, resumed at $resumed) |" >> "$figures"
  fi
  # Bring a killed or drained worker back as a spare for the next case.
  if [[ $kind == worker-kill || $kind == drain ]]; then
    wait "${worker_pid[$victim]}" 2>/dev/null || true
    start_worker "$victim" 1 --drain-seconds 30
  fi
}

for c in trainer-kill "worker-kill 1" "worker-kill 2" hang drain coordinator; do
  echo "== $c"
  run_case $c
done

echo "== lease: a lone rank's agent killed, only its lapsed lease tells"
make_job "$out/solo.json" 1 "$steps" "$out/ckpt_solo" "$extra" "$model"
"$dstrain" submit "$out/solo.json" --id f-solo > /dev/null
await_state f-solo JOB_STATE_RUNNING 30
await_step f-solo 6 60
victim=$(worker_of f-solo 0)
t0=$(now)
kill -9 "${worker_pid[$victim]}"
"$dstrain" watch f-solo > /dev/null || fail "solo: job did not succeed"
detect=$($py -c "print(f'{$(event_time f-solo WorkerLost) - $t0:.2f}')")
$py -c "import sys; sys.exit(0 if $detect < 5 else 1)" || fail "solo: detected after $detect s"
read -r last resumed < <(last_and_resumed f-solo) || fail "solo: did not resume from a checkpoint"
echo "| agent kill -9 under a 1-rank job: its lease lapses (4 s, heartbeat 1 s) | ${detect} s | $($py -c "print(f'{$(event_time f-solo AllRanksRunning 2) - $t0:.2f}')") s | $((last - resumed)) (last step $last, resumed at $resumed) |" >> "$figures"
start_worker "$victim" 1 --drain-seconds 30

echo "== hang: the status names the stuck collective"
"$dstrain" status f-hang -o json | $py -c "
import json, sys
msg = [e['message'] for e in json.load(sys.stdin)['events'] if e['to_state'] == 'JOB_STATE_RESTARTING'][0]
assert 'rank' in msg and ('timed out' in msg or 'timeout' in msg or 'deadline' in msg.lower()), msg
print(msg[:300])" || fail "the hang's status does not name the operation and the rank"

echo "== drain: no steps lost"
grep -q "^| drain .* | 0 (" "$figures" || fail "drain lost steps: $(grep drain "$figures")"

echo "== max_restarts exhausted"
make_job "$out/giveup.json" 2 200 "$out/ckpt_giveup" '{"max_restarts": 1, "comm_timeout": 5}' "$model"
"$dstrain" submit "$out/giveup.json" --id giveup > /dev/null
for attempt in 1 2; do
  for _ in $(seq 300); do
    [[ $(job_field giveup "j['job']['attempt']") == "$attempt" && -n $(trainer_pid giveup "$attempt" 1) ]] && break
    sleep 0.1
  done
  await_state giveup JOB_STATE_RUNNING 30
  kill -9 "$(trainer_pid giveup "$attempt" 1)"
done
await_state giveup JOB_STATE_FAILED 30
[[ $(job_field giveup "j['job']['state_reason']") == RestartsExhausted ]] ||
  fail "giveup: reason $(job_field giveup "j['job']['state_reason']")"
job_field giveup "j['job']['state_message']" | grep -q "max_restarts is 1" ||
  fail "giveup: the message does not say why"

echo "| fault | time to detect | time to resume | steps lost |"
echo "|---|---|---|---|"
cat "$figures"
echo "PASS"
