#!/usr/bin/env bash
# The coordinator under load, against the service's latency targets, in one run:
#   (a) 1,000 simulated workers heartbeating at 1 Hz plus 50 job submissions per second against
#       one dstrain-coordinator (RocksDB on DIR): p50/p99 latency of Heartbeat and SubmitJob
#       (target p99 < 10 ms);
#   (b) submit-to-all-ranks-running of a 2-rank job on two real dstrain-worker agents spawning
#       real trainers: from the job's Submitted event to its AllRanksRunning event (every
#       trainer reported running: its process started and printed), target < 2 s, median of
#       ROUNDS.
# Usage: bench/coordinator/coordinator_bench.sh [SECONDS] [ROUNDS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
rounds=${2:-5}
dir=${3:-$(mktemp -d /tmp/coord_bench.XXXXXX)}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/coordinator:load_gen \
  //coordinator/server:dstrain-coordinator //worker/agent:dstrain-worker //client/cli:dstrain >&2
bin=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

# Plaintext (--insecure): the load generator stands in for 1000 workers, which with TLS would each
# need a certificate; the submission rate limit is lifted so it measures the service, not the
# limit. The figures are the coordinator's work without TLS handshakes.
export DSTRAIN_INSECURE=1
start_coordinator() {  # data-dir log; sets addr and coord_pid
  "$bin/coordinator/server/dstrain-coordinator" --listen 127.0.0.1:0 --data-dir "$1" \
    --metrics-listen 127.0.0.1:0 --insecure --submissions-per-minute 1000000 \
    --submission-burst 100000 > "$2" 2>&1 &
  coord_pid=$!
  pids+=("$coord_pid")
  addr=""
  for _ in $(seq 100); do
    addr=$(grep -o "listening on 127.0.0.1:[0-9]*" "$2" | awk '{print $3}') && [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || { echo "coordinator did not start:"; cat "$2"; exit 1; } >&2
}

echo "== (a) load: 1000 workers at 1 Hz + 50 submits/s for ${seconds}s" >&2
start_coordinator "$dir/load" "$dir/load.log"
"$bin/bench/coordinator/load_gen" --coordinator "$addr" --workers 1000 --hz 1 --submit-rate 50 \
  --seconds "$seconds" > "$dir/load.json"
kill "$coord_pid"

echo "== (b) submit to all ranks running, 2-rank job, ${rounds} rounds" >&2
start_coordinator "$dir/run" "$dir/run.log"
export DSTRAIN_COORDINATOR=$addr
for w in a b; do
  "$bin/worker/agent/dstrain-worker" --coordinator "$addr" --slots 1 --work-dir "$dir/work_$w" \
    --worker-id "bench-$w" --trainer "$bin/client/cli/dstrain" --metrics-listen 127.0.0.1:0 \
    --insecure --data-root "$dir" > "$dir/worker_$w.log" 2>&1 &
  pids+=("$!")
done
cp deploy/local/demo/tinyshakespeare.txt "$dir/"
/usr/bin/python3 - "$dir/job.json" "$dir/tinyshakespeare.txt" <<'PY'
import json, sys
json.dump({"train_micro_batch_size_per_gpu": 2,
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
           "zero_optimization": {"stage": 2},
           "model": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 256,
                     "block_size": 32},
           "data": {"train": sys.argv[2], "seq_len": 32},
           "job": {"name": "bench", "world_size": 2, "train_steps": 3, "eval_every": 0}},
          open(sys.argv[1], "w"))
PY
for _ in $(seq 100); do
  n=$("$bin/client/cli/dstrain" workers -o json | /usr/bin/python3 -c \
    "import json,sys; print(len(json.load(sys.stdin).get('workers', [])))")
  [[ $n == 2 ]] && break
  sleep 0.1
done
for r in $(seq "$rounds"); do
  "$bin/client/cli/dstrain" submit "$dir/job.json" --id "bench-$r" --follow > /dev/null
  "$bin/client/cli/dstrain" status "bench-$r" -o json > "$dir/status_$r.json"
done
/usr/bin/python3 - "$dir" "$rounds" <<'PY'
import datetime, json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
load = json.load(open(f"{d}/load.json"))
def ts(s):  # protobuf JSON time, "2026-11-26T03:20:01.123456789Z"
    main, _, frac = s.rstrip("Z").partition(".")
    t = datetime.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + (float("0." + frac) if frac else 0.0)
times = []
for r in range(1, rounds + 1):
    events = json.load(open(f"{d}/status_{r}.json"))["events"]
    t = {e["reason"]: ts(e["time"]) for e in events}
    times.append(t["AllRanksRunning"] - t["Submitted"])
h, s = load["heartbeat"], load["submit"]
print(f"coordinator under load ({load['workers']} workers at {load['hz']} Hz, "
      f"{load['submit_rate']} submits/s, {load['seconds']} s; errors: {h['errors']}, {s['errors']})")
print("| | p50 | p90 | p99 | max | target p99 |")
print("|---|---|---|---|---|---|")
print(f"| Heartbeat ({h['count']}) | {h['p50_ms']:.2f} ms | {h['p90_ms']:.2f} ms | "
      f"**{h['p99_ms']:.2f} ms** | {h['max_ms']:.1f} ms | 10 ms |")
print(f"| SubmitJob ({s['count']}) | {s['p50_ms']:.2f} ms | {s['p90_ms']:.2f} ms | "
      f"**{s['p99_ms']:.2f} ms** | {s['max_ms']:.1f} ms | 10 ms |")
print(f"submit to all ranks running (2-rank job, two agents, real trainers): median "
      f"**{statistics.median(times):.2f} s** over {rounds} (each: "
      + ", ".join(f"{t:.2f}" for t in times) + "); target 2 s")
# Latencies of failed calls measure nothing: a run with errors is no result.
if h["errors"] or s["errors"]:
    sys.exit(f"the load run had {h['errors']} heartbeat and {s['errors']} submit errors")
PY
